// Reducer: averages gradients over ranks in flat buckets, launching each bucket's all-reduce from
// gradient hooks while backward still runs (the DDP Reducer design, in plain LibTorch C++).
//
// Note [bucket order]: buckets are cut from parameters in REVERSE registration order (gradients
// become ready roughly back to front), the first bucket capped at first_bucket_mb so
// communication starts early (Note [small first bucket], dist_config.h), the rest at
// bucket_cap_mb, one dtype and device per bucket. After the first step the layout is rebuilt
// once in the order gradients actually became ready, using RANK 0's observed order (broadcast)
// so every rank has the same buckets. Buckets are launched strictly in index order on every rank
// (a ready bucket waits for earlier ones): the same collective sequence everywhere is what keeps
// sums right and prevents hangs.
//
// Note [gradient hooks and .grad]: hooks are tensor hooks on each trainable parameter; they fire
// once per backward with the parameter's total incoming gradient, which the hook copies into its
// bucket slot pre-divided by the world size (sum then = average). PrepareForBackward() resets
// every .grad to undefined, so autograd's own accumulation never writes into bucket memory that
// an all-reduce may be reading; FinalizeBackward() then sets each .grad to an alias of its bucket
// slot (made with set_, not an autograd view, so Optimizer::zero_grad()'s detach_() accepts it).
// Consequence: gradients are NOT accumulated across backward calls (no gradient accumulation).
//
// Note [unused and frozen parameters]: parameters with requires_grad=false are not bucketed.
// A trainable parameter whose hook did not fire in a step (unused in this rank's graph) gets a
// zero slot; its bucket is then launched from FinalizeBackward (still in index order), so a rank
// never waits for a gradient that will not come.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/dist/communicator.h"
#include "worker/dist/dist_config.h"  // ReducerConfig

namespace effnet::dist {

// Event log of the last step (instrumentation; times from NowNs()).
struct ReducerEvent {
  enum Kind { kGradReady, kBucketLaunch, kCommStart, kCommEnd, kFinalizeStart, kFinalizeEnd };
  Kind kind;
  int index;  // parameter index (kGradReady) or bucket index, -1 otherwise
  int64_t t_ns;
};
const char* ReducerEventName(ReducerEvent::Kind kind);

// Pure layout function (tested directly): cuts `order` (parameter indices) into buckets.
std::vector<std::vector<int64_t>> ComputeBuckets(const std::vector<at::Tensor>& params,
                                                 const std::vector<int64_t>& order,
                                                 int64_t first_cap_bytes, int64_t cap_bytes);

// Start-of-run check: all ranks hold the same number of tensors with the same shapes and dtypes.
// Compares a hash via all-gather; the error names the first rank that differs from rank 0.
Status VerifyAcrossRanks(Communicator& comm, const std::vector<at::Tensor>& tensors,
                         const std::vector<std::string>& names, const std::string& what);

// Overwrites `tensors` on every rank with rank 0's values (parameters and buffers at start).
Status BroadcastFromRank0(Communicator& comm, const std::vector<at::Tensor>& tensors);

class Reducer {
 public:
  // `params`: the model's parameters in registration order (frozen ones are skipped).
  Reducer(std::vector<at::Tensor> params, std::vector<std::string> names,
          std::shared_ptr<Communicator> comm, ReducerConfig config);
  ~Reducer();
  Reducer(const Reducer&) = delete;
  Reducer& operator=(const Reducer&) = delete;

  // Before backward: resets bucket state and .grad (see Note [gradient hooks and .grad]).
  void PrepareForBackward();
  // After backward: launches what is left, waits for every bucket (deadline per collective),
  // publishes averaged gradients as bucket views, rebuilds the layout after step 0.
  Status FinalizeBackward();

  // Bucket layout: indices into the constructor's `params` (trainable ones only appear).
  std::vector<std::vector<int64_t>> layout() const;
  // Parameter indices in the order their gradients became ready in step 0 (this rank).
  std::vector<int64_t> observed_order() const;
  bool rebuilt() const { return rebuilt_; }
  int64_t step() const { return step_; }
  std::vector<ReducerEvent> events() const;
  // Per bucket of the last step: ready time (last hook) relative to PrepareForBackward, seconds.
  std::vector<double> bucket_ready_s() const;
  std::vector<int64_t> bucket_bytes() const;

 private:
  struct Bucket {
    std::vector<int64_t> params;  // indices into params_
    std::vector<int64_t> offsets;
    at::Tensor flat;  // gradients, one slot per parameter
    at::Tensor wire;  // bf16 copy when compressing
    int pending = 0;
    bool launched = false;
    int64_t ready_ns = 0;
    std::shared_ptr<Work> work;
  };

  void BuildBuckets(const std::vector<int64_t>& order);
  void OnGrad(int64_t index, const at::Tensor& grad);
  void MarkReadyLocked(int64_t index);
  void LaunchReadyLocked();
  void LaunchLocked(Bucket& bucket, int b);
  void Record(ReducerEvent::Kind kind, int index);
  Status Rebuild();

  std::vector<at::Tensor> params_;
  std::vector<std::string> names_;
  std::shared_ptr<Communicator> comm_;
  ReducerConfig config_;

  std::vector<int64_t> trainable_;            // indices of params with requires_grad
  std::vector<std::pair<int, int64_t>> loc_;  // param -> (bucket, position in bucket), -1 if none
  std::vector<Bucket> buckets_;
  std::vector<unsigned> hook_handles_;
  std::vector<char> ready_;     // this step
  std::vector<int64_t> order_;  // step 0 ready order
  int next_launch_ = 0;
  bool rebuilt_ = false;
  int64_t step_ = 0;
  int64_t prepare_ns_ = 0;
  Status hook_error_;

  mutable std::mutex mu_;
  std::vector<ReducerEvent> events_;
};

}  // namespace effnet::dist
