// Writes an effnet HDF5 image store (layout: storage/layout.h, docs/hdf5-layout.md).
//
// Images are appended one at a time (each is one uncompressed chunk, written with
// H5Dwrite_chunk); the per-image metadata is written once at the end by Finish(), which also sets
// the `complete` attribute last. A writer destroyed without Finish() leaves a file that readers
// refuse. Callers that replace an existing file write to TempPathFor(path) and commit it
// (common/atomic_file.h), as effnet-prepare does.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/dataset_reader.h"
#include "storage/layout.h"

namespace effnet::storage {

// Everything stored besides the pixels. Per-image vectors have one entry per appended image.
struct StoreMetadata {
  std::vector<std::string> class_names;
  std::vector<int32_t> labels;
  std::vector<Split> splits;
  std::vector<std::string> source_paths;
  std::vector<uint64_t> content_hash;
  std::vector<uint64_t> perceptual_hash;
  std::vector<int64_t> origin;                     // empty: every image is its own origin
  std::vector<layout::Augmentation> augmentation;  // empty: all kNone
  std::string prepare_settings_json = "{}";
};

class DatasetWriter {
 public:
  // Creates (truncates) `path` for images of `image_size` x `image_size` x 3.
  static Result<std::unique_ptr<DatasetWriter>> Create(const std::string& path, int image_size);
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  int image_size() const { return size_; }
  size_t image_bytes() const { return static_cast<size_t>(size_) * size_ * 3; }
  int64_t num_images() const { return count_; }

  // Appends one RGB image of image_bytes() bytes, HWC; its index is num_images() before the call.
  Status Append(const uint8_t* rgb);
  // Reads back image `index` (already appended) into `dst` (image_bytes()).
  Status ReadBack(int64_t index, uint8_t* dst);
  // Checks `meta` against the appended images, writes it, marks the file complete and closes it.
  Status Finish(const StoreMetadata& meta);

 private:
  DatasetWriter() = default;
  struct Handles;
  std::unique_ptr<Handles> h_;
  std::string path_;
  int size_ = 0;
  int64_t count_ = 0;
  int64_t capacity_ = 0;
};

}  // namespace effnet::storage
