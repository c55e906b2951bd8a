// Reducer: see the Notes in reducer.h.
#include "worker/dist/reducer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>  // for AutoGradMode
#include <c10/util/strides.h>   // for contiguous_strides

#include <algorithm>
#include <map>
#include <sstream>

#include "common/hash.h"
#include "common/log.h"

namespace effnet::dist {

const char* ReducerEventName(ReducerEvent::Kind kind) {
  switch (kind) {
    case ReducerEvent::kGradReady:
      return "grad_ready";
    case ReducerEvent::kBucketLaunch:
      return "bucket_launch";
    case ReducerEvent::kCommStart:
      return "comm_start";
    case ReducerEvent::kCommEnd:
      return "comm_end";
    case ReducerEvent::kFinalizeStart:
      return "finalize_start";
    case ReducerEvent::kFinalizeEnd:
      return "finalize_end";
  }
  return "?";
}

namespace {

int64_t Bytes(const at::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

// A tensor aliasing `numel` elements of `flat` from `offset`, shaped like `like`, that is NOT an
// autograd view: LibTorch's Optimizer::zero_grad() calls grad.detach_(), which refuses views.
// It has `like`'s strides where `like` is dense (a channels_last weight gets a channels_last
// gradient slot, as DDP's bucket views do), so copying the gradient in is a plain copy and the
// optimiser sees the parameter's layout (Note [fused Adam] in worker/train/optim.h).
at::Tensor SlotAlias(const at::Tensor& flat, int64_t offset, const at::Tensor& like) {
  at::Tensor t = at::empty({0}, flat.options());
  t.set_(
      flat.storage(), flat.storage_offset() + offset, like.sizes(),
      like.is_non_overlapping_and_dense() ? like.strides() : c10::contiguous_strides(like.sizes()));
  return t;
}

}  // namespace

std::vector<std::vector<int64_t>> ComputeBuckets(const std::vector<at::Tensor>& params,
                                                 const std::vector<int64_t>& order,
                                                 int64_t first_cap_bytes, int64_t cap_bytes) {
  struct Open {
    std::vector<int64_t> members;
    int64_t bytes = 0;
  };
  std::map<std::string, Open> open;  // per (dtype, device)
  std::vector<std::vector<int64_t>> closed;
  for (int64_t i : order) {
    const at::Tensor& p = params[i];
    const std::string key = std::string(c10::toString(p.scalar_type())) + "@" + p.device().str();
    Open& o = open[key];
    o.members.push_back(i);
    o.bytes += Bytes(p);
    // Only the very first bucket of the layout is small (Note [bucket order]).
    const int64_t cap = closed.empty() ? first_cap_bytes : cap_bytes;
    if (o.bytes >= cap) {
      closed.push_back(std::move(o.members));
      o = Open{};
    }
  }
  for (auto& [key, o] : open) {
    if (!o.members.empty()) closed.push_back(std::move(o.members));
  }
  // Launch order = order of each bucket's first member in `order`.
  std::vector<int64_t> pos(params.size(), 0);
  for (size_t k = 0; k < order.size(); ++k) pos[order[k]] = static_cast<int64_t>(k);
  std::stable_sort(closed.begin(), closed.end(),
                   [&](const auto& a, const auto& b) { return pos[a.front()] < pos[b.front()]; });
  return closed;
}

Status VerifyAcrossRanks(Communicator& comm, const std::vector<at::Tensor>& tensors,
                         const std::vector<std::string>& names, const std::string& what) {
  uint64_t h = Fnv1a64(std::to_string(tensors.size()));
  for (size_t i = 0; i < tensors.size(); ++i) {
    std::ostringstream s;
    s << (i < names.size() ? names[i] : std::string()) << ':' << tensors[i].sizes() << ':'
      << c10::toString(tensors[i].scalar_type());
    h = Fnv1a64(s.str(), h);
  }
  const std::string mine = std::to_string(tensors.size()) + " " + std::to_string(h);
  EFFNET_ASSIGN_OR_RETURN(std::vector<std::string> all, comm.AllGather(mine));
  for (int p = 1; p < static_cast<int>(all.size()); ++p) {
    if (all[p] != all[0]) {
      auto count = [](const std::string& s) { return s.substr(0, s.find(' ')); };
      return FailedPrecondition(
          what + " differ across ranks: rank " + std::to_string(p) + " has " + count(all[p]) +
          " tensors, rank 0 has " + count(all[0]) + " (names/shapes/dtypes hash " +
          all[p].substr(all[p].find(' ') + 1) + " vs " + all[0].substr(all[0].find(' ') + 1) +
          "); all ranks must build the same model");
    }
  }
  return Status::Ok();
}

Status BroadcastFromRank0(Communicator& comm, const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  std::vector<std::shared_ptr<Work>> works;
  std::vector<std::pair<at::Tensor, at::Tensor>> staged;  // (target, contiguous copy)
  for (const at::Tensor& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    if (t.is_contiguous()) {
      works.push_back(comm.BroadcastAsync(t, 0));
    } else {
      at::Tensor c = t.contiguous();
      staged.emplace_back(t, c);
      works.push_back(comm.BroadcastAsync(c, 0));
    }
  }
  for (auto& w : works) EFFNET_RETURN_IF_ERROR(w->Wait().WithContext("broadcast from rank 0"));
  for (auto& [target, copy] : staged) target.copy_(copy);
  return Status::Ok();
}

Reducer::Reducer(std::vector<at::Tensor> params, std::vector<std::string> names,
                 std::shared_ptr<Communicator> comm, ReducerConfig config)
    : params_(std::move(params)),
      names_(std::move(names)),
      comm_(std::move(comm)),
      config_(config) {
  names_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].requires_grad()) trainable_.push_back(static_cast<int64_t>(i));
  }
  std::vector<int64_t> reverse(trainable_.rbegin(), trainable_.rend());
  BuildBuckets(reverse);
  ready_.assign(params_.size(), 0);
  hook_handles_.assign(params_.size(), 0);
  for (int64_t i : trainable_) {
    hook_handles_[i] =
        params_[i].register_hook([this, i](const at::Tensor& grad) { OnGrad(i, grad); });
  }
}

Reducer::~Reducer() {
  for (int64_t i : trainable_) params_[i].remove_hook(hook_handles_[i]);
  // Outstanding collectives must not write into freed buckets.
  for (auto& b : buckets_) {
    if (b.work) (void)b.work->Wait();
  }
}

void Reducer::BuildBuckets(const std::vector<int64_t>& order) {
  const auto mb = [](double v) { return static_cast<int64_t>(v * 1024.0 * 1024.0); };
  auto layout =
      ComputeBuckets(params_, order, mb(config_.first_bucket_mb), mb(config_.bucket_cap_mb));
  buckets_.clear();
  buckets_.resize(layout.size());
  loc_.assign(params_.size(), {-1, -1});
  for (size_t b = 0; b < layout.size(); ++b) {
    Bucket& bucket = buckets_[b];
    bucket.params = layout[b];
    int64_t total = 0;
    for (size_t k = 0; k < bucket.params.size(); ++k) {
      loc_[bucket.params[k]] = {static_cast<int>(b), static_cast<int64_t>(k)};
      bucket.offsets.push_back(total);
      total += params_[bucket.params[k]].numel();
    }
    const at::Tensor& first = params_[bucket.params.front()];
    bucket.flat = at::zeros({total}, first.options().requires_grad(false));
    bucket.pending = static_cast<int>(bucket.params.size());
  }
}

void Reducer::Record(ReducerEvent::Kind kind, int index) {
  if (config_.record_events) events_.push_back({kind, index, NowNs()});
}

void Reducer::PrepareForBackward() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& b : buckets_) {
    if (b.work) {
      // A step that was never finalized: drain it so no collective writes into the buckets.
      Status s = b.work->Wait();
      if (!s.ok() && hook_error_.ok()) hook_error_ = s.WithContext("unfinalized previous step");
    }
    b.work.reset();
    b.wire = at::Tensor();
    b.launched = false;
    b.ready_ns = 0;
    b.pending = static_cast<int>(b.params.size());
  }
  for (int64_t i : trainable_) params_[i].mutable_grad() = at::Tensor();
  std::fill(ready_.begin(), ready_.end(), 0);
  next_launch_ = 0;
  events_.clear();
  prepare_ns_ = NowNs();
}

void Reducer::OnGrad(int64_t index, const at::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ready_[index]) {
    if (hook_error_.ok()) {
      hook_error_ = FailedPrecondition(
          "gradient of '" + names_[index] + "' became ready twice in step " +
          std::to_string(step_) +
          " (call BeforeBackward before every backward; parameters used in two backward passes "
          "per step are not supported)");
    }
    return;
  }
  at::NoGradGuard no_grad;
  const auto [b, k] = loc_[index];
  Bucket& bucket = buckets_[b];
  at::Tensor slot = SlotAlias(bucket.flat, bucket.offsets[k], params_[index]);
  slot.copy_(grad);
  if (comm_->world_size() > 1) slot.mul_(1.0 / comm_->world_size());
  ready_[index] = 1;
  if (step_ == 0) order_.push_back(index);
  Record(ReducerEvent::kGradReady, static_cast<int>(index));
  if (--bucket.pending == 0) {
    bucket.ready_ns = NowNs();
    LaunchReadyLocked();
  }
}

void Reducer::LaunchReadyLocked() {
  // Note [bucket order]: strictly in index order.
  while (next_launch_ < static_cast<int>(buckets_.size()) && buckets_[next_launch_].pending == 0) {
    LaunchLocked(buckets_[next_launch_], next_launch_);
    ++next_launch_;
  }
}

void Reducer::LaunchLocked(Bucket& bucket, int b) {
  Record(ReducerEvent::kBucketLaunch, b);
  bucket.launched = true;
  if (config_.compress_bf16 && bucket.flat.scalar_type() == at::kFloat) {
    bucket.wire = bucket.flat.to(at::kBFloat16);
    bucket.work = comm_->AllReduceAsync(bucket.wire, ReduceOp::kSum);
  } else {
    bucket.work = comm_->AllReduceAsync(bucket.flat, ReduceOp::kSum);
  }
}

Status Reducer::FinalizeBackward() {
  std::unique_lock<std::mutex> lock(mu_);
  Record(ReducerEvent::kFinalizeStart, -1);
  if (!hook_error_.ok()) {
    Status s = hook_error_;
    hook_error_ = Status::Ok();
    return s;
  }
  at::NoGradGuard no_grad;
  // Note [unused and frozen parameters]: zero the slots whose hook did not fire.
  for (size_t b = static_cast<size_t>(next_launch_); b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    for (size_t k = 0; k < bucket.params.size(); ++k) {
      const int64_t i = bucket.params[k];
      if (ready_[i]) continue;
      bucket.flat.narrow(0, bucket.offsets[k], params_[i].numel()).zero_();
      ready_[i] = 1;
    }
    if (bucket.pending != 0) bucket.ready_ns = NowNs();
    bucket.pending = 0;
  }
  LaunchReadyLocked();
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    Status s = bucket.work->Wait();
    if (!s.ok()) {
      return s.WithContext("reducer step " + std::to_string(step_) + ", bucket " +
                           std::to_string(b) + " of " + std::to_string(buckets_.size()) + " (" +
                           std::to_string(bucket.params.size()) + " tensors, " +
                           std::to_string(Bytes(bucket.flat)) + " bytes)");
    }
    const WorkTiming t = bucket.work->timing();
    if (config_.record_events) {
      events_.push_back({ReducerEvent::kCommStart, static_cast<int>(b), t.started_ns});
      events_.push_back({ReducerEvent::kCommEnd, static_cast<int>(b), t.finished_ns});
    }
    if (bucket.wire.defined()) bucket.flat.copy_(bucket.wire);
    bucket.work.reset();
    for (size_t k = 0; k < bucket.params.size(); ++k) {
      const int64_t i = bucket.params[k];
      params_[i].mutable_grad() = SlotAlias(bucket.flat, bucket.offsets[k], params_[i]);
    }
  }
  Record(ReducerEvent::kFinalizeEnd, -1);
  if (step_ == 0 && config_.rebuild_buckets && !rebuilt_) {
    EFFNET_RETURN_IF_ERROR(Rebuild().WithContext("rebuilding buckets after step 0"));
  }
  ++step_;
  return Status::Ok();
}

Status Reducer::Rebuild() {
  // This rank's observed order, then trainable params whose hook never fired (reverse order).
  std::vector<int64_t> order = order_;
  std::vector<char> seen(params_.size(), 0);
  for (int64_t i : order) seen[i] = 1;
  for (auto it = trainable_.rbegin(); it != trainable_.rend(); ++it) {
    if (!seen[*it]) order.push_back(*it);
  }
  // Note [bucket order]: rank 0's order for everyone.
  at::Tensor t = at::tensor(order, at::TensorOptions().dtype(at::kLong));
  EFFNET_RETURN_IF_ERROR(comm_->Broadcast(t, 0).WithContext("broadcasting rank 0's ready order"));
  std::vector<int64_t> rank0(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  std::vector<int64_t> sorted = rank0, expect = trainable_;
  std::sort(sorted.begin(), sorted.end());
  if (sorted != expect) {
    return Internal("rank 0's ready order is not a permutation of this rank's trainable params");
  }
  std::vector<at::Tensor> grads(params_.size());
  for (int64_t i : trainable_) grads[i] = params_[i].grad();
  BuildBuckets(rank0);
  for (int64_t i : trainable_) {
    const auto [b, k] = loc_[i];
    at::Tensor view = SlotAlias(buckets_[b].flat, buckets_[b].offsets[k], params_[i]);
    if (grads[i].defined()) view.copy_(grads[i]);
    params_[i].mutable_grad() = view;
  }
  rebuilt_ = true;
  log::Debug("reducer: rebuilt " + std::to_string(buckets_.size()) +
             " buckets in rank 0's gradient-ready order");
  return Status::Ok();
}

std::vector<std::vector<int64_t>> Reducer::layout() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::vector<int64_t>> out;
  for (const auto& b : buckets_) out.push_back(b.params);
  return out;
}

std::vector<int64_t> Reducer::observed_order() const {
  std::lock_guard<std::mutex> lock(mu_);
  return order_;
}

std::vector<ReducerEvent> Reducer::events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

std::vector<double> Reducer::bucket_ready_s() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<double> out;
  for (const auto& b : buckets_)
    out.push_back(static_cast<double>(b.ready_ns - prepare_ns_) * 1e-9);
  return out;
}

std::vector<int64_t> Reducer::bucket_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int64_t> out;
  for (const auto& b : buckets_) out.push_back(Bytes(b.flat));
  return out;
}

}  // namespace effnet::dist
