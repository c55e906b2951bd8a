// In-process communicators: see Note [in-process collectives] (inprocess_communicator.h).
#include "worker/dist/inprocess_communicator.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>  // for NoGradGuard

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "common/text.h"

namespace effnet::dist {
namespace {

// One collective #seq of the group.
struct Slot {
  uint64_t seq = 0;
  OpType type = OpType::kBarrier;
  std::string signature;  // of the first rank that posted, e.g. "all_reduce(10 x Float, sum)"
  int first_rank = -1;
  ReduceOp reduce = ReduceOp::kSum;
  int root = 0;
  std::vector<at::Tensor> tensors;  // per rank (all-reduce, broadcast)
  std::vector<std::string> gather_in, gather_out;
  std::vector<char> posted;
  int num_posted = 0;
  bool done = false;  // guarded by Group::mu
  Status status;
  int64_t finished_ns = 0;
};

struct Group {
  int world = 1;
  CommOptions options;
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, std::shared_ptr<Slot>> open;  // posted by some ranks, not yet by all
  std::vector<uint64_t> posted;                    // per rank: collectives posted so far
  std::vector<char> gone;                          // per rank: communicator destroyed

  // "missing: rank 2 has not posted #5 (last posted #3)", for a timeout in `slot`.
  std::string DescribeMissing(const Slot& slot) const {
    std::string out;
    for (int p = 0; p < world; ++p) {
      if (slot.posted[p]) continue;
      const std::string last =
          posted[p] == 0 ? "posted no collective" : "last posted #" + std::to_string(posted[p] - 1);
      out += std::string(out.empty() ? "" : "; ") + "rank " + std::to_string(p) +
             (gone[p] ? " is gone (communicator destroyed, " + last + ")"
                      : " has not posted #" + std::to_string(slot.seq) + " (" + last + ")");
    }
    if (out.empty()) return "no rank missing: every rank posted #" + std::to_string(slot.seq);
    return "missing: " + out;
  }
};

// Runs a slot every rank has posted (the last poster's thread, without the group lock: no other
// thread touches the slot's tensors until it is done).
Status Run(Slot& slot, int world) {
  if (!slot.status.ok()) return slot.status;
  at::NoGradGuard no_grad;
  switch (slot.type) {
    case OpType::kAllReduce: {
      at::Tensor acc = slot.tensors[0].clone();
      for (int r = 1; r < world; ++r) acc.add_(slot.tensors[r].to(acc.device()));
      if (slot.reduce == ReduceOp::kAvg) acc.div_(world);
      for (int r = 0; r < world; ++r) slot.tensors[r].copy_(acc);
      break;
    }
    case OpType::kBroadcast:
      for (int r = 0; r < world; ++r) {
        if (r != slot.root) slot.tensors[r].copy_(slot.tensors[slot.root]);
      }
      break;
    case OpType::kAllGather:
      slot.gather_out = slot.gather_in;
      break;
    case OpType::kBarrier:
      break;
  }
  return Status::Ok();
}

std::string Signature(OpType type, const at::Tensor& t, const std::string& detail) {
  std::string s = OpTypeName(type);
  if (t.defined()) {
    s += "(" + std::to_string(t.numel()) + " x " + std::string(c10::toString(t.scalar_type()));
    if (!detail.empty()) s += ", " + detail;
    s += ")";
  }
  return s;
}

class InProcessWork;

class InProcessCommunicator final : public Communicator,
                                    public std::enable_shared_from_this<InProcessCommunicator> {
 public:
  InProcessCommunicator(std::shared_ptr<Group> group, int rank)
      : group_(std::move(group)), rank_(rank) {}
  ~InProcessCommunicator() override {
    std::lock_guard<std::mutex> lock(group_->mu);
    group_->gone[rank_] = 1;
  }

  int rank() const override { return rank_; }
  int world_size() const override { return group_->world; }
  std::string backend() const override { return "inprocess"; }
  uint64_t next_seq() const override { return next_seq_.load(); }

  std::shared_ptr<Work> AllReduceAsync(const at::Tensor& tensor, ReduceOp op) override {
    Status invalid;
    if (!tensor.is_contiguous()) invalid = InvalidArgument("tensor must be contiguous");
    if (op == ReduceOp::kAvg && !at::isFloatingType(tensor.scalar_type())) {
      invalid = InvalidArgument("kAvg needs a floating tensor");
    }
    return Post(OpType::kAllReduce, tensor, op == ReduceOp::kAvg ? "avg" : "sum", invalid,
                [&](Slot& s) {
                  s.tensors[rank_] = tensor;
                  s.reduce = op;
                });
  }

  std::shared_ptr<Work> BroadcastAsync(const at::Tensor& tensor, int root) override {
    Status invalid;
    if (!tensor.is_contiguous() || root < 0 || root >= group_->world) {
      invalid = InvalidArgument("needs a contiguous tensor and a valid root");
    }
    return Post(OpType::kBroadcast, tensor, "root " + std::to_string(root), invalid, [&](Slot& s) {
      s.tensors[rank_] = tensor;
      s.root = root;
    });
  }

  Status Barrier() override;
  Result<std::vector<std::string>> AllGather(const std::string& bytes) override;

  // Marks this communicator broken by `s` (the first error wins).
  void SetBroken(const Status& s) {
    std::lock_guard<std::mutex> lock(broken_mu_);
    if (broken_.ok()) broken_ = s;
  }
  Group& group() { return *group_; }

 private:
  template <typename Fill>
  std::shared_ptr<Work> Post(OpType type, const at::Tensor& tensor, const std::string& detail,
                             const Status& invalid, Fill fill);

  std::shared_ptr<Group> group_;
  const int rank_;
  std::atomic<uint64_t> next_seq_{0};
  std::mutex broken_mu_;
  Status broken_;
};

class InProcessWork final : public Work {
 public:
  InProcessWork(std::shared_ptr<InProcessCommunicator> comm, std::shared_ptr<Slot> slot,
                OpType type, uint64_t seq, std::string what, int64_t issued_ns)
      : comm_(std::move(comm)),
        slot_(std::move(slot)),
        type_(type),
        seq_(seq),
        what_(std::move(what)) {
    timing_.issued_ns = timing_.started_ns = issued_ns;
    deadline_ns_ = issued_ns + static_cast<int64_t>(comm_->group().options.timeout_s * 1e9);
  }
  // A collective that failed before it was posted.
  InProcessWork(OpType type, uint64_t seq, Status status, int64_t issued_ns)
      : type_(type), seq_(seq), result_(std::move(status)), waited_(true) {
    timing_.issued_ns = timing_.started_ns = timing_.finished_ns = issued_ns;
  }

  Status Wait() override {
    std::lock_guard<std::mutex> wait_lock(wait_mu_);
    if (waited_) return result_;
    Group& g = comm_->group();
    std::unique_lock<std::mutex> lock(g.mu);
    const auto until =
        std::chrono::steady_clock::time_point(std::chrono::nanoseconds(deadline_ns_));
    if (g.cv.wait_until(lock, until, [&] { return slot_->done; })) {
      result_ = slot_->status;
      timing_.finished_ns = slot_->finished_ns;
    } else {
      result_ = DeadlineExceeded("rank " + std::to_string(comm_->rank()) + ": " + what_ +
                                 " did not complete within " + Fixed(g.options.timeout_s, 1) +
                                 " s; " + g.DescribeMissing(*slot_));
    }
    lock.unlock();
    if (!result_.ok()) comm_->SetBroken(result_);
    waited_ = true;
    return result_;
  }
  bool IsCompleted() override {
    std::lock_guard<std::mutex> wait_lock(wait_mu_);
    if (waited_) return true;
    std::lock_guard<std::mutex> lock(comm_->group().mu);
    return slot_->done;
  }
  uint64_t seq() const override { return seq_; }
  OpType op() const override { return type_; }
  WorkTiming timing() const override {
    std::lock_guard<std::mutex> wait_lock(wait_mu_);
    return timing_;
  }
  std::shared_ptr<Slot> slot() const { return slot_; }

 private:
  std::shared_ptr<InProcessCommunicator> comm_;  // keeps the group alive until Wait()
  std::shared_ptr<Slot> slot_;
  OpType type_;
  uint64_t seq_;
  std::string what_;
  int64_t deadline_ns_ = 0;
  mutable std::mutex wait_mu_;
  WorkTiming timing_;
  Status result_;
  bool waited_ = false;
};

template <typename Fill>
std::shared_ptr<Work> InProcessCommunicator::Post(OpType type, const at::Tensor& tensor,
                                                  const std::string& detail, const Status& invalid,
                                                  Fill fill) {
  const uint64_t seq = next_seq_.fetch_add(1);
  const int64_t now = NowNs();
  const std::string what =
      std::string(OpTypeName(type)) + " #" + std::to_string(seq) +
      (tensor.defined() ? " (" + std::to_string(tensor.numel()) + " x " +
                              std::string(c10::toString(tensor.scalar_type())) + ")"
                        : "");
  if (!invalid.ok()) {
    return std::make_shared<InProcessWork>(type, seq, invalid.WithContext(what), now);
  }
  {
    std::lock_guard<std::mutex> lock(broken_mu_);
    if (!broken_.ok()) {
      return std::make_shared<InProcessWork>(
          type, seq,
          Status(broken_.code(), what + " not run: communicator broken by: " + broken_.message()),
          now);
    }
  }
  Group& g = *group_;
  const std::string signature = Signature(type, tensor, detail);
  std::shared_ptr<Slot> slot;
  bool run = false;
  {
    std::lock_guard<std::mutex> lock(g.mu);
    auto& entry = g.open[seq];
    if (!entry) {
      entry = std::make_shared<Slot>();
      entry->seq = seq;
      entry->type = type;
      entry->signature = signature;
      entry->first_rank = rank_;
      entry->tensors.resize(g.world);
      entry->gather_in.resize(g.world);
      entry->posted.assign(g.world, 0);
    }
    slot = entry;
    if (signature != slot->signature && slot->status.ok()) {
      slot->status =
          Internal("collective #" + std::to_string(seq) + " differs across ranks: rank " +
                   std::to_string(slot->first_rank) + " posted " + slot->signature + ", rank " +
                   std::to_string(rank_) + " posted " + signature +
                   " (all ranks must issue the same collectives in the same order)");
    }
    if (signature == slot->signature) fill(*slot);
    slot->posted[rank_] = 1;
    ++slot->num_posted;
    g.posted[rank_] = seq + 1;
    if (slot->num_posted == g.world) {
      g.open.erase(seq);
      run = true;
    }
  }
  if (run) {
    Status s = Run(*slot, g.world);
    {
      std::lock_guard<std::mutex> lock(g.mu);
      slot->status = std::move(s);
      slot->finished_ns = NowNs();
      slot->done = true;
    }
    g.cv.notify_all();
  }
  return std::make_shared<InProcessWork>(shared_from_this(), slot, type, seq, what, now);
}

Status InProcessCommunicator::Barrier() {
  return Post(OpType::kBarrier, at::Tensor(), "", Status::Ok(), [](Slot&) {})->Wait();
}

Result<std::vector<std::string>> InProcessCommunicator::AllGather(const std::string& bytes) {
  auto work = Post(OpType::kAllGather, at::Tensor(), "", Status::Ok(),
                   [&](Slot& s) { s.gather_in[rank_] = bytes; });
  EFFNET_RETURN_IF_ERROR(work->Wait());
  return static_cast<InProcessWork&>(*work).slot()->gather_out;
}

}  // namespace

std::vector<std::shared_ptr<Communicator>> CreateInProcessCommunicators(
    int world_size, const CommOptions& options) {
  auto group = std::make_shared<Group>();
  group->world = world_size;
  group->options = options;
  group->posted.assign(world_size, 0);
  group->gone.assign(world_size, 0);
  std::vector<std::shared_ptr<Communicator>> comms;
  for (int r = 0; r < world_size; ++r) {
    comms.push_back(std::make_shared<InProcessCommunicator>(group, r));
  }
  return comms;
}

}  // namespace effnet::dist
