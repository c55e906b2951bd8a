#include "worker/data/loader.h"

#include <algorithm>
#include <cstring>

namespace effnet::data {

Loader::Loader(storage::DatasetReader& reader, std::vector<std::vector<int64_t>> batches,
               at::Device device, int depth)
    : reader_(reader),
      device_(device),
      prefetcher_(std::make_unique<storage::BatchPrefetcher>(reader, std::move(batches),
                                                             std::max(1, depth))) {}

Result<bool> Loader::Next(DeviceBatch* out) {
  // The prefetcher recycles the buffers of the batch passed in (no fresh ~40 MB allocation and its
  // page faults per batch), so `b` lives as long as the loader.
  storage::BatchPrefetcher::Batch& b = recycled_;
  auto more = prefetcher_->Next(&b);
  if (!more.ok()) return more.status().WithContext("loading batch from " + reader_.path());
  if (!*more) return false;
  const int64_t n = static_cast<int64_t>(b.indices.size());
  const int64_t s = reader_.info().image_size;
  if (static_cast<int64_t>(b.pixels.size()) != n * s * s * 3) {
    return Internal("loader: batch of " + std::to_string(n) + " images holds " +
                    std::to_string(b.pixels.size()) + " bytes, expected " +
                    std::to_string(n * s * s * 3));
  }
  const bool cuda = device_.is_cuda();
  auto host_opts = at::TensorOptions().dtype(at::kByte).pinned_memory(cuda);
  auto images = at::empty({n, s, s, 3}, host_opts);
  std::memcpy(images.data_ptr(), b.pixels.data(), b.pixels.size());
  auto labels = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(cuda));
  auto* lp = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) lp[i] = b.labels[i];
  out->images = cuda ? images.to(device_, /*non_blocking=*/true) : images;
  out->labels = cuda ? labels.to(device_, /*non_blocking=*/true) : labels;
  out->indices = std::move(b.indices);
  return true;
}

std::vector<std::vector<int64_t>> MakeBatches(const std::vector<int64_t>& indices, int batch_size) {
  std::vector<std::vector<int64_t>> out;
  const size_t b = static_cast<size_t>(std::max(1, batch_size));
  for (size_t i = 0; i < indices.size(); i += b) {
    out.emplace_back(indices.begin() + i, indices.begin() + std::min(indices.size(), i + b));
  }
  return out;
}

}  // namespace effnet::data
