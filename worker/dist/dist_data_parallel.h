// DistDataParallel: worker/train/data_parallel.h over a Communicator + Reducer (+ optional sync
// BatchNorm). Created by CreateDataParallel (create.h); exposed for tests and benchmarks, which
// may also pass an in-process communicator (inprocess_communicator.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "worker/dist/communicator.h"
#include "worker/dist/dist_config.h"
#include "worker/dist/reducer.h"
#include "worker/train/data_parallel.h"

namespace effnet::dist {

class DistDataParallel final : public train::DataParallel {
 public:
  // `host`: a host-tensor communicator (metrics, barrier, NCCL bootstrap, heartbeat): MPI, or
  // in-process in tests.
  DistDataParallel(const DistConfig& config, std::shared_ptr<Communicator> host);
  ~DistDataParallel() override;

  int rank() const override { return host_->rank(); }
  int world_size() const override { return host_->world_size(); }
  // Picks the gradient communicator (NCCL for CUDA parameters when built and allowed, else the
  // host one), converts BatchNorm2d to sync BN when configured, checks parameter and buffer
  // layouts across ranks, broadcasts them from rank 0 and installs the Reducer.
  Status Attach(torch::nn::Module& model) override;
  Status BeforeBackward() override;
  // The error names the rank, the reducer step, the bucket, the operation and its sequence number.
  Status AfterBackward() override;
  Result<std::vector<double>> AllReduceSum(const std::vector<double>& values) override;
  Status Barrier() override;
  bool HooksBackward() const override { return true; }

  Reducer* reducer() { return reducer_.get(); }
  Communicator& grad_comm() { return *grad_comm_; }
  Communicator& host_comm() { return *host_; }

 private:
  // "rank R: <operation>: <error>".
  Status Context(const Status& s, const char* operation) const;

  DistConfig config_;
  std::shared_ptr<Communicator> host_;
  std::shared_ptr<Communicator> grad_comm_;
  std::unique_ptr<Reducer> reducer_;
};

}  // namespace effnet::dist
