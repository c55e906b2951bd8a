// DistDataParallel: worker/train/data_parallel.h over a Communicator + Reducer (+ optional sync
// BatchNorm). Created by CreateDataParallel (create.h); exposed for tests and benchmarks.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "worker/dist/communicator.h"
#include "worker/dist/create.h"
#include "worker/dist/reducer.h"
#include "worker/train/data_parallel.h"

namespace effnet::dist {

class DistDataParallel final : public train::DataParallel {
 public:
  // `host`: an MPI communicator (metrics, barrier, NCCL bootstrap, heartbeat).
  DistDataParallel(const DistConfig& config, std::shared_ptr<Communicator> host);
  ~DistDataParallel() override;

  int rank() const override { return host_->rank(); }
  int world_size() const override { return host_->world_size(); }
  // Picks the gradient communicator (NCCL for CUDA parameters when built and allowed, else the
  // MPI one), converts BatchNorm2d to sync BN when configured, checks parameter and buffer
  // layouts across ranks, broadcasts them from rank 0 and installs the Reducer. Throws
  // StatusError on failure.
  void Attach(torch::nn::Module& model) override;
  void BeforeBackward() override;
  // Throws StatusError naming the rank, the operation and its sequence number on failure.
  void AfterBackward() override;
  std::vector<double> AllReduceSum(const std::vector<double>& values) override;
  void Barrier() override;

  Reducer* reducer() { return reducer_.get(); }
  Communicator& grad_comm() { return *grad_comm_; }
  Communicator& host_comm() { return *host_; }

 private:
  [[noreturn]] void Fail(const Status& s) const;

  DistConfig config_;
  std::shared_ptr<Communicator> host_;
  std::shared_ptr<Communicator> grad_comm_;
  std::unique_ptr<Reducer> reducer_;
};

// CommOptions / ReducerConfig from a DistConfig.
CommOptions CommOptionsFrom(const DistConfig& config);
ReducerConfig ReducerConfigFrom(const DistConfig& config);

}  // namespace effnet::dist
