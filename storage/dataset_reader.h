// Random-access reader of an effnet HDF5 data set (layout: docs/hdf5-layout.md).
// No Torch and no HDF5 in this header: the worker wraps batches into tensors itself.
//
// Note [reader threads]: the HDF5 library in Debian is built without thread safety, so one
// DatasetReader serialises all HDF5 calls behind one mutex; the prefetcher overlaps the read of
// batch k+1 with the training step of batch k. Several ranks (processes) may each open the file
// read-only and read disjoint shards.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace effnet::storage {

enum class Split : int8_t { kTrain = 0, kVal = 1, kTest = 2 };
const char* SplitName(Split s);

struct DatasetInfo {
  int schema_version = 0;
  int64_t num_images = 0;
  int image_size = 0;  // stored images are [image_size, image_size, 3] uint8 RGB
  std::vector<std::string> class_names;
  std::vector<int32_t> labels;  // [num_images]
  std::vector<Split> splits;    // [num_images]
  std::string source;           // preparation settings (JSON) as stored in the file

  // Per-image provenance (docs/hdf5-layout.md), [num_images] each.
  std::vector<std::string> source_paths;
  std::vector<uint64_t> content_hash;     // FNV-1a 64 of the decoded source pixels
  std::vector<uint64_t> perceptual_hash;  // 64-bit dHash
  std::vector<int64_t> origin;            // index of the original image (itself for originals)
  std::vector<int8_t> augmentation;       // layout::Augmentation code (0 = original)
  int64_t file_bytes = 0;                 // size of the file on disk

  int num_classes() const { return static_cast<int>(class_names.size()); }
  // Indices of all samples of one split, ascending.
  std::vector<int64_t> IndicesOf(Split s) const;
};

struct ReaderOptions {
  // Read each image with H5Dread_chunk (the file's chunks are uncompressed, one image each);
  // false, or a file that does not allow it, reads through HDF5 hyperslabs instead. Both return
  // the same bytes.
  bool direct_reads = true;
  // Validate the whole store in a forked child first, so that corrupt metadata that crashes
  // libhdf5 becomes a DataLoss error (Note [corrupt stores] in storage/reader.cpp).
  bool validate_in_child = true;
  // The child is killed, and the file refused, after this long.
  int validate_timeout_s = 300;
};

class DatasetReader {
 public:
  // Opens read-only and validates the schema (version, dataset names, shapes, dtypes, UTF-8
  // strings) and, in a child process, that the metadata and a sample of images read without
  // crashing libhdf5. A foreign, other-version, truncated or corrupt file is refused with a
  // message naming the file and what is wrong.
  static Result<std::unique_ptr<DatasetReader>> Open(const std::string& path);
  static Result<std::unique_ptr<DatasetReader>> Open(const std::string& path,
                                                     const ReaderOptions& options);
  virtual ~DatasetReader() = default;

  virtual const DatasetInfo& info() const = 0;
  virtual const std::string& path() const = 0;
  // Copies images `indices` (any order, duplicates allowed) into `dst`, which must hold
  // indices.size() * S * S * 3 bytes, in the order given.
  virtual Status ReadImages(const std::vector<int64_t>& indices, uint8_t* dst) = 0;

  size_t image_bytes() const {
    return static_cast<size_t>(info().image_size) * info().image_size * 3;
  }
};

// File offsets of each image's chunk in an uncompressed effnet store; an error when the chunks
// are not raw, one image each. For benchmarks and tools: O(N^2) in HDF5 1.10 (each lookup walks
// the chunk index), about 0.05 s for 2,000 images but 5 s for 20,000.
Result<std::vector<int64_t>> ImageFileOffsets(const std::string& path);

// Ok when `path` does not exist or is an effnet store (HDF5 signature, root attribute `format`,
// an integer `schema_version` of any version), read in a child process; FailedPrecondition naming
// the file otherwise. Tools check it before replacing an output: anything else is not theirs.
Status CheckReplaceableStore(const std::string& path);

// Reads batches on a background thread, one ahead of the consumer.
class BatchPrefetcher {
 public:
  struct Batch {
    std::vector<int64_t> indices;
    std::vector<uint8_t> pixels;  // [n, S, S, 3]
    std::vector<int32_t> labels;  // [n]
  };
  // `batches` is the list of index lists to read, in order. `depth` batches are kept in flight.
  BatchPrefetcher(DatasetReader& reader, std::vector<std::vector<int64_t>> batches, int depth = 2);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;
  // Next batch in order; false when all were returned. A read error is returned as a status.
  // The buffers of the batch `out` held before are recycled for a later read.
  Result<bool> Next(Batch* out);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace effnet::storage
