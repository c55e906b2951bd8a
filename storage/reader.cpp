// DatasetReader over the HDF5 C API (layout: storage/layout.h).
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "storage/dataset_reader.h"
#include "storage/h5util.h"
#include "storage/layout.h"

namespace effnet::storage {

const char* SplitName(Split s) {
  switch (s) {
    case Split::kTrain:
      return "train";
    case Split::kVal:
      return "val";
    case Split::kTest:
      return "test";
  }
  return "?";
}

namespace layout {
const char* AugmentationName(Augmentation a) {
  switch (a) {
    case Augmentation::kNone:
      return "none";
    case Augmentation::kHFlip:
      return "hflip";
    case Augmentation::kVFlip:
      return "vflip";
    case Augmentation::kRot90:
      return "rot90";
  }
  return "?";
}
}  // namespace layout

std::vector<int64_t> DatasetInfo::IndicesOf(Split s) const {
  std::vector<int64_t> out;
  for (size_t i = 0; i < splits.size(); ++i) {
    if (splits[i] == s) out.push_back(static_cast<int64_t>(i));
  }
  return out;
}

namespace {

struct OpenFile {
  h5::Id file;
  h5::Id images;
};

Result<OpenFile> OpenAndCheckImages(const std::string& path, DatasetInfo* info) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return NotFound(std::string("cannot open: ") + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return InvalidArgument("not a regular file");
  info->file_bytes = static_cast<int64_t>(st.st_size);
  h5::EnsureInit();
  htri_t is = H5Fis_hdf5(path.c_str());
  if (is <= 0) {
    std::string detail = h5::LastError();
    return DataLoss("not an HDF5 file (foreign or truncated)" +
                    (detail.empty() ? std::string() : ": " + detail));
  }
  OpenFile of;
  of.file = h5::File(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!of.file.valid()) {
    std::string detail = h5::LastError();
    return DataLoss("cannot open as HDF5 (truncated or corrupt)" +
                    (detail.empty() ? std::string() : ": " + detail));
  }
  h5::Id root = h5::Id(H5Gopen2(of.file.get(), "/", H5P_DEFAULT), H5Gclose);
  auto format = h5::ReadStringAttr(root.get(), layout::kAttrFormat);
  if (!format.ok() || *format != layout::kFormatName) {
    return FailedPrecondition(std::string("not an effnet image store (root attribute '") +
                              layout::kAttrFormat + "' is not '" + layout::kFormatName +
                              "'); prepare it with effnet-prepare");
  }
  EFFNET_ASSIGN_OR_RETURN(info->schema_version,
                          h5::ReadIntAttr(root.get(), layout::kAttrSchemaVersion));
  if (info->schema_version != layout::kSchemaVersion) {
    return FailedPrecondition("schema version " + std::to_string(info->schema_version) +
                              ", but this build reads only version " +
                              std::to_string(layout::kSchemaVersion) +
                              "; re-run effnet-prepare with this build");
  }
  auto complete = h5::ReadIntAttr(root.get(), layout::kAttrComplete);
  if (!complete.ok() || *complete != 1) {
    return DataLoss("incomplete file (the writer did not finish; attribute 'complete' missing)");
  }
  EFFNET_ASSIGN_OR_RETURN(info->image_size, h5::ReadIntAttr(root.get(), layout::kAttrImageSize));
  EFFNET_ASSIGN_OR_RETURN(info->source,
                          h5::ReadStringAttr(root.get(), layout::kAttrPrepareSettings));

  if (H5Lexists(of.file.get(), layout::kImages, H5P_DEFAULT) <= 0) {
    h5::LastError();
    return DataLoss(std::string("dataset ") + layout::kImages + " is missing");
  }
  of.images = h5::Dataset(H5Dopen2(of.file.get(), layout::kImages, H5P_DEFAULT));
  if (!of.images.valid()) return h5::Error(std::string("opening ") + layout::kImages);
  h5::Id type = h5::Type(H5Dget_type(of.images.get()));
  if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_size(type.get()) != 1 ||
      H5Tget_sign(type.get()) != H5T_SGN_NONE) {
    return DataLoss(std::string(layout::kImages) + ": expected uint8");
  }
  h5::Id space = h5::Space(H5Dget_space(of.images.get()));
  hsize_t dims[4] = {0, 0, 0, 0};
  const hsize_t s = static_cast<hsize_t>(info->image_size);
  if (H5Sget_simple_extent_ndims(space.get()) != 4 ||
      H5Sget_simple_extent_dims(space.get(), dims, nullptr) != 4 || dims[1] != s || dims[2] != s ||
      dims[3] != 3) {
    return DataLoss(std::string(layout::kImages) + ": expected shape [N, " + std::to_string(s) +
                    ", " + std::to_string(s) + ", 3]");
  }
  info->num_images = static_cast<int64_t>(dims[0]);
  return of;
}

Status ReadMetadata(hid_t f, DatasetInfo* info) {
  const int64_t n = info->num_images;
  EFFNET_ASSIGN_OR_RETURN(info->class_names, h5::ReadStrings(f, layout::kClassNames, -1));
  if (info->class_names.empty()) return DataLoss(std::string(layout::kClassNames) + " is empty");
  EFFNET_RETURN_IF_ERROR(h5::ReadVector(f, layout::kLabels, H5T_NATIVE_INT32, n, &info->labels));
  std::vector<int8_t> splits;
  EFFNET_RETURN_IF_ERROR(h5::ReadVector(f, layout::kSplits, H5T_NATIVE_INT8, n, &splits));
  EFFNET_ASSIGN_OR_RETURN(info->source_paths, h5::ReadStrings(f, layout::kSourcePaths, n));
  EFFNET_RETURN_IF_ERROR(
      h5::ReadVector(f, layout::kContentHash, H5T_NATIVE_UINT64, n, &info->content_hash));
  EFFNET_RETURN_IF_ERROR(
      h5::ReadVector(f, layout::kPerceptualHash, H5T_NATIVE_UINT64, n, &info->perceptual_hash));
  EFFNET_RETURN_IF_ERROR(h5::ReadVector(f, layout::kOrigin, H5T_NATIVE_INT64, n, &info->origin));
  EFFNET_RETURN_IF_ERROR(
      h5::ReadVector(f, layout::kAugmentation, H5T_NATIVE_INT8, n, &info->augmentation));
  const int32_t c = info->num_classes();
  info->splits.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (info->labels[i] < 0 || info->labels[i] >= c) {
      return DataLoss(std::string(layout::kLabels) + "[" + std::to_string(i) +
                      "] = " + std::to_string(info->labels[i]) + " is outside the " +
                      std::to_string(c) + " classes");
    }
    if (splits[i] < 0 || splits[i] > 2) {
      return DataLoss(std::string(layout::kSplits) + "[" + std::to_string(i) +
                      "] = " + std::to_string(splits[i]) + " is not 0, 1 or 2");
    }
    info->splits[i] = static_cast<Split>(splits[i]);
    if (info->origin[i] < 0 || info->origin[i] >= n) {
      return DataLoss(std::string(layout::kOrigin) + "[" + std::to_string(i) + "] is out of range");
    }
  }
  return Status::Ok();
}

// Whether /images allows direct chunk reads: chunked one image per chunk, no filters.
Status CheckRawChunks(hid_t images, const DatasetInfo& info) {
  h5::Id dcpl = h5::Plist(H5Dget_create_plist(images));
  if (H5Pget_layout(dcpl.get()) != H5D_CHUNKED) return FailedPrecondition("not chunked");
  if (H5Pget_nfilters(dcpl.get()) != 0) return FailedPrecondition("chunks are filtered");
  hsize_t chunk[4] = {0, 0, 0, 0};
  const hsize_t s = static_cast<hsize_t>(info.image_size);
  if (H5Pget_chunk(dcpl.get(), 4, chunk) != 4 || chunk[0] != 1 || chunk[1] != s || chunk[2] != s ||
      chunk[3] != 3) {
    return FailedPrecondition("chunks are not one image each");
  }
  return Status::Ok();
}

// File offset of every image's chunk. Note: HDF5 1.10 finds a chunk's address by walking the
// chunk index, so this is O(N^2) - fine for benchmarks of a few thousand images, not for readers.
Result<std::vector<int64_t>> ChunkOffsets(hid_t images, const DatasetInfo& info) {
  EFFNET_RETURN_IF_ERROR(CheckRawChunks(images, info));
  const hsize_t s = static_cast<hsize_t>(info.image_size);
  const hsize_t bytes = s * s * 3;
  std::vector<int64_t> offsets(static_cast<size_t>(info.num_images));
  for (int64_t i = 0; i < info.num_images; ++i) {
    hsize_t coord[4] = {static_cast<hsize_t>(i), 0, 0, 0};
    unsigned mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    if (H5Dget_chunk_info_by_coord(images, coord, &mask, &addr, &size) < 0) {
      return h5::Error("chunk info of image " + std::to_string(i));
    }
    if (addr == HADDR_UNDEF) {
      return DataLoss("image " + std::to_string(i) + " was never written (no chunk)");
    }
    if (size != bytes || mask != 0) {
      return FailedPrecondition("chunk of image " + std::to_string(i) + " is not raw");
    }
    if (static_cast<int64_t>(addr + size) > info.file_bytes) {
      return DataLoss("image " + std::to_string(i) + " lies past the end of the file (truncated)");
    }
    offsets[static_cast<size_t>(i)] = static_cast<int64_t>(addr);
  }
  return offsets;
}

class Hdf5DatasetReader final : public DatasetReader {
 public:
  ~Hdf5DatasetReader() override {
    std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
    file_.images.Reset();
    file_.file.Reset();
  }

  static Result<std::unique_ptr<DatasetReader>> Make(const std::string& path,
                                                     const ReaderOptions& options) {
    std::unique_ptr<Hdf5DatasetReader> r(new Hdf5DatasetReader());
    r->path_ = path;
    std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
    auto of = OpenAndCheckImages(path, &r->info_);
    if (!of.ok()) return of.status().WithContext(path);
    r->file_ = std::move(of).value();
    Status st = ReadMetadata(r->file_.file.get(), &r->info_);
    if (!st.ok()) return st.WithContext(path);
    r->direct_ = options.direct_reads && CheckRawChunks(r->file_.images.get(), r->info_).ok();
    return std::unique_ptr<DatasetReader>(std::move(r));
  }

  const DatasetInfo& info() const override { return info_; }
  const std::string& path() const override { return path_; }

  Status ReadImages(const std::vector<int64_t>& indices, uint8_t* dst) override {
    const size_t bytes = image_bytes();
    for (int64_t idx : indices) {
      if (idx < 0 || idx >= info_.num_images) {
        return InvalidArgument(path_ + ": image index " + std::to_string(idx) + " is outside [0, " +
                               std::to_string(info_.num_images) + ")");
      }
    }
    std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
    if (direct_) {
      // Note [direct reads]: chunks are raw (no filter) and one image each, so H5Dread_chunk
      // copies an image straight from the file into `dst`: one chunk-index lookup, no dataspace
      // selection, no chunk cache, no type conversion.
      for (size_t k = 0; k < indices.size(); ++k) {
        hsize_t offset[4] = {static_cast<hsize_t>(indices[k]), 0, 0, 0};
        uint32_t filters = 0;
        if (H5Dread_chunk(file_.images.get(), H5P_DEFAULT, offset, &filters, dst + k * bytes) < 0) {
          return DataLoss(path_ + ": reading image " + std::to_string(indices[k]) + ": " +
                          h5::LastError());
        }
      }
      return Status::Ok();
    }
    const hsize_t s = static_cast<hsize_t>(info_.image_size);
    // Note [hyperslab shape]: the memory space has the selection's shape [1, S, S, 3]; with a
    // 1-D memory space HDF5 falls back to element-wise gather (about 100x slower).
    hsize_t mdims[4] = {1, s, s, 3};
    h5::Id mspace = h5::Space(H5Screate_simple(4, mdims, nullptr));
    h5::Id fspace = h5::Space(H5Dget_space(file_.images.get()));
    for (size_t k = 0; k < indices.size(); ++k) {
      hsize_t start[4] = {static_cast<hsize_t>(indices[k]), 0, 0, 0};
      hsize_t count[4] = {1, s, s, 3};
      H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
      if (H5Dread(file_.images.get(), H5T_NATIVE_UINT8, mspace.get(), fspace.get(), H5P_DEFAULT,
                  dst + k * bytes) < 0) {
        return h5::Error(path_ + ": reading image " + std::to_string(indices[k]));
      }
    }
    return Status::Ok();
  }

 private:
  Hdf5DatasetReader() = default;
  std::string path_;
  DatasetInfo info_;
  OpenFile file_;
  bool direct_ = false;
};

}  // namespace

Result<std::unique_ptr<DatasetReader>> DatasetReader::Open(const std::string& path) {
  return Open(path, ReaderOptions{});
}

Result<std::unique_ptr<DatasetReader>> DatasetReader::Open(const std::string& path,
                                                           const ReaderOptions& options) {
  return Hdf5DatasetReader::Make(path, options);
}

Result<std::vector<int64_t>> ImageFileOffsets(const std::string& path) {
  std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
  DatasetInfo info;
  auto of = OpenAndCheckImages(path, &info);
  if (!of.ok()) return of.status().WithContext(path);
  auto offsets = ChunkOffsets(of->images.get(), info);
  if (!offsets.ok()) return offsets.status().WithContext(path);
  return offsets;
}

}  // namespace effnet::storage
