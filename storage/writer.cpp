#include "storage/writer.h"

#include <algorithm>

#include "common/utf8.h"
#include "storage/h5util.h"

namespace effnet::storage {

struct DatasetWriter::Handles {
  h5::Id file;
  h5::Id images;
};

DatasetWriter::~DatasetWriter() {
  std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
  h_.reset();
}

Result<std::unique_ptr<DatasetWriter>> DatasetWriter::Create(const std::string& path,
                                                             int image_size) {
  if (image_size < 1 || image_size > 8192) {
    return InvalidArgument("image size " + std::to_string(image_size) + " is out of [1, 8192]");
  }
  h5::EnsureInit();
  std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
  std::unique_ptr<DatasetWriter> w(new DatasetWriter());
  w->h_ = std::make_unique<Handles>();
  w->path_ = path;
  w->size_ = image_size;
  w->h_->file = h5::File(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
  if (!w->h_->file.valid()) return h5::Error("creating " + path);

  const hsize_t s = static_cast<hsize_t>(image_size);
  hsize_t dims[4] = {0, s, s, 3};
  hsize_t maxdims[4] = {H5S_UNLIMITED, s, s, 3};
  hsize_t chunk[4] = {1, s, s, 3};
  h5::Id space = h5::Space(H5Screate_simple(4, dims, maxdims));
  h5::Id dcpl = h5::Plist(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_chunk(dcpl.get(), 4, chunk);
  // Note [no fill]: every chunk below the final extent is written exactly once, so HDF5 never
  // needs to fill; chunks are allocated as they are written.
  H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER);
  H5Pset_alloc_time(dcpl.get(), H5D_ALLOC_TIME_INCR);
  w->h_->images = h5::Dataset(H5Dcreate2(w->h_->file.get(), layout::kImages, H5T_STD_U8LE,
                                         space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
  if (!w->h_->images.valid()) return h5::Error("creating " + std::string(layout::kImages));
  return w;
}

Status DatasetWriter::Append(const uint8_t* rgb) {
  std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
  if (!h_ || !h_->images.valid()) return FailedPrecondition(path_ + ": writer is closed");
  if (count_ == capacity_) {
    capacity_ = std::max<int64_t>(1024, capacity_ * 2);
    hsize_t dims[4] = {static_cast<hsize_t>(capacity_), static_cast<hsize_t>(size_),
                       static_cast<hsize_t>(size_), 3};
    if (H5Dset_extent(h_->images.get(), dims) < 0) return h5::Error(path_ + ": growing /images");
  }
  hsize_t offset[4] = {static_cast<hsize_t>(count_), 0, 0, 0};
  if (H5Dwrite_chunk(h_->images.get(), H5P_DEFAULT, 0, offset, image_bytes(), rgb) < 0) {
    return h5::Error(path_ + ": writing image " + std::to_string(count_));
  }
  ++count_;
  return Status::Ok();
}

Status DatasetWriter::ReadBack(int64_t index, uint8_t* dst) {
  std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
  if (!h_ || !h_->images.valid()) return FailedPrecondition(path_ + ": writer is closed");
  if (index < 0 || index >= count_) {
    return InvalidArgument(path_ + ": image " + std::to_string(index) + " not written yet");
  }
  hsize_t offset[4] = {static_cast<hsize_t>(index), 0, 0, 0};
  uint32_t filters = 0;
  if (H5Dread_chunk(h_->images.get(), H5P_DEFAULT, offset, &filters, dst) < 0) {
    return h5::Error(path_ + ": reading back image " + std::to_string(index));
  }
  return Status::Ok();
}

Status DatasetWriter::Finish(const StoreMetadata& meta) {
  std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
  if (!h_ || !h_->images.valid()) return FailedPrecondition(path_ + ": writer is closed");
  const size_t n = static_cast<size_t>(count_);
  auto check = [&](size_t got, const char* what) -> Status {
    if (got != n) {
      return InvalidArgument(path_ + ": " + what + " has " + std::to_string(got) + " entries for " +
                             std::to_string(n) + " images");
    }
    return Status::Ok();
  };
  EFFNET_RETURN_IF_ERROR(check(meta.labels.size(), "labels"));
  EFFNET_RETURN_IF_ERROR(check(meta.splits.size(), "splits"));
  EFFNET_RETURN_IF_ERROR(check(meta.source_paths.size(), "source_paths"));
  EFFNET_RETURN_IF_ERROR(check(meta.content_hash.size(), "content_hash"));
  EFFNET_RETURN_IF_ERROR(check(meta.perceptual_hash.size(), "perceptual_hash"));
  if (!meta.origin.empty()) EFFNET_RETURN_IF_ERROR(check(meta.origin.size(), "origin"));
  if (!meta.augmentation.empty()) {
    EFFNET_RETURN_IF_ERROR(check(meta.augmentation.size(), "augmentation"));
  }
  if (meta.class_names.empty()) return InvalidArgument(path_ + ": no class names");
  for (size_t i = 0; i < n; ++i) {
    if (meta.labels[i] < 0 || meta.labels[i] >= static_cast<int32_t>(meta.class_names.size())) {
      return InvalidArgument(path_ + ": image " + std::to_string(i) + " has label " +
                             std::to_string(meta.labels[i]) + " outside the " +
                             std::to_string(meta.class_names.size()) + " classes");
    }
  }

  // Note [text encoding] (common/utf8.h): readers refuse stored text that is not UTF-8.
  auto utf8 = [&](const std::vector<std::string>& v, const char* what) -> Status {
    for (size_t i = 0; i < v.size(); ++i) {
      if (!IsValidUtf8(v[i])) {
        return InvalidArgument(path_ + ": " + what + "[" + std::to_string(i) +
                               "] is not valid UTF-8");
      }
    }
    return Status::Ok();
  };
  EFFNET_RETURN_IF_ERROR(utf8(meta.class_names, "class_names"));
  EFFNET_RETURN_IF_ERROR(utf8(meta.source_paths, "source_paths"));
  EFFNET_RETURN_IF_ERROR(utf8({meta.prepare_settings_json}, "prepare_settings"));

  hsize_t dims[4] = {n, static_cast<hsize_t>(size_), static_cast<hsize_t>(size_), 3};
  if (H5Dset_extent(h_->images.get(), dims) < 0) return h5::Error(path_ + ": sizing /images");
  capacity_ = count_;

  const hid_t f = h_->file.get();
  std::vector<int8_t> splits(n);
  for (size_t i = 0; i < n; ++i) splits[i] = static_cast<int8_t>(meta.splits[i]);
  std::vector<int64_t> origin = meta.origin;
  if (origin.empty()) {
    origin.resize(n);
    for (size_t i = 0; i < n; ++i) origin[i] = static_cast<int64_t>(i);
  }
  std::vector<int8_t> aug(n, 0);
  for (size_t i = 0; i < meta.augmentation.size(); ++i) {
    aug[i] = static_cast<int8_t>(meta.augmentation[i]);
  }
  EFFNET_RETURN_IF_ERROR(
      h5::Write1D(f, layout::kLabels, H5T_STD_I32LE, H5T_NATIVE_INT32, meta.labels.data(), n));
  EFFNET_RETURN_IF_ERROR(
      h5::Write1D(f, layout::kSplits, H5T_STD_I8LE, H5T_NATIVE_INT8, splits.data(), n));
  EFFNET_RETURN_IF_ERROR(h5::Write1D(f, layout::kContentHash, H5T_STD_U64LE, H5T_NATIVE_UINT64,
                                     meta.content_hash.data(), n));
  EFFNET_RETURN_IF_ERROR(h5::Write1D(f, layout::kPerceptualHash, H5T_STD_U64LE, H5T_NATIVE_UINT64,
                                     meta.perceptual_hash.data(), n));
  EFFNET_RETURN_IF_ERROR(
      h5::Write1D(f, layout::kOrigin, H5T_STD_I64LE, H5T_NATIVE_INT64, origin.data(), n));
  EFFNET_RETURN_IF_ERROR(
      h5::Write1D(f, layout::kAugmentation, H5T_STD_I8LE, H5T_NATIVE_INT8, aug.data(), n));
  EFFNET_RETURN_IF_ERROR(h5::WriteStrings(f, layout::kClassNames, meta.class_names));
  EFFNET_RETURN_IF_ERROR(h5::WriteStrings(f, layout::kSourcePaths, meta.source_paths));

  h5::Id root = h5::Id(H5Gopen2(f, "/", H5P_DEFAULT), H5Gclose);
  EFFNET_RETURN_IF_ERROR(h5::WriteStringAttr(root.get(), layout::kAttrFormat, layout::kFormatName));
  EFFNET_RETURN_IF_ERROR(
      h5::WriteIntAttr(root.get(), layout::kAttrSchemaVersion, layout::kSchemaVersion));
  EFFNET_RETURN_IF_ERROR(h5::WriteIntAttr(root.get(), layout::kAttrImageSize, size_));
  EFFNET_RETURN_IF_ERROR(
      h5::WriteStringAttr(root.get(), layout::kAttrPrepareSettings, meta.prepare_settings_json));
  // Written last: a file without it was interrupted before its metadata was complete.
  EFFNET_RETURN_IF_ERROR(h5::WriteIntAttr(root.get(), layout::kAttrComplete, 1));
  root.Reset();

  h_->images.Reset();
  if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) return h5::Error(path_ + ": flushing");
  if (H5Fclose(h_->file.Release()) < 0) return h5::Error(path_ + ": closing");
  return Status::Ok();
}

}  // namespace effnet::storage
