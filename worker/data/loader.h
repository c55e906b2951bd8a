// The loader: storage::DatasetReader + BatchPrefetcher -> uint8 NHWC tensors on the training
// device. On CUDA the host batch is copied into pinned memory and moved with non_blocking=true,
// so the copy overlaps the previous step; the reader thread already overlaps the HDF5 read.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "storage/dataset_reader.h"

namespace effnet::data {

struct DeviceBatch {
  at::Tensor images;  // uint8 [n,S,S,3] on the device
  at::Tensor labels;  // int64 [n] on the device
  std::vector<int64_t> indices;
};

class Loader {
 public:
  // `batches`: index lists in the order they will be consumed. `depth`: batches read ahead.
  Loader(storage::DatasetReader& reader, std::vector<std::vector<int64_t>> batches,
         at::Device device, int depth = 2);
  // Next batch; false when all were returned. Read errors come back with the file named.
  Result<bool> Next(DeviceBatch* out);

 private:
  storage::DatasetReader& reader_;
  at::Device device_;
  std::unique_ptr<storage::BatchPrefetcher> prefetcher_;
  storage::BatchPrefetcher::Batch recycled_;
};

// Splits `indices` into consecutive batches of `batch_size` (the last may be shorter).
std::vector<std::vector<int64_t>> MakeBatches(const std::vector<int64_t>& indices, int batch_size);

}  // namespace effnet::data
