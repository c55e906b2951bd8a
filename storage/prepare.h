// effnet-prepare as a library: decode (OpenCV, all cores), resize, deduplicate, split and write
// an effnet HDF5 image store. Part of effnet_prepare (the only storage target with OpenCV).
#pragma once

#include <array>
#include <cstdint>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/splits.h"

namespace effnet::storage {

enum class ResizeMode {
  kSquash,      // resize to S x S, ignoring the aspect ratio (Keras image_dataset_from_directory)
  kCenterCrop,  // the centred square of side min(w, h), resized to S x S
  kPad,         // longer side to S, centred on an S x S canvas of pad_value
};
const char* ResizeModeName(ResizeMode m);
Result<ResizeMode> ParseResizeMode(const std::string& s);

struct PrepareConfig {
  // Input: either a CSV (csv_path + images_dir) or one folder per class (folders_dir).
  std::string csv_path;
  std::string images_dir;
  std::string label_column = "product_category_tree";  // label = FirstCategory(value)
  std::string image_column = "image";                  // file name relative to images_dir
  std::string folders_dir;

  std::string out_path;  // the .h5; side reports go to <out>.rejected.csv, <out>.duplicates.csv
  int image_size = 256;  // stored images are S x S x 3
  ResizeMode resize = ResizeMode::kSquash;
  int pad_value = 0;  // grey level of the kPad border
  SplitConfig split;  // the study's 20 % test, then 20 % of the rest val; seed 42
  // The study's offline augmentation: a horizontal flip, a vertical flip and a 90-degree
  // (clockwise) rotation copy of every train and val image; never of test images.
  bool augment_offline = false;
  int64_t max_pixels = 200'000'000;  // larger images are rejected (header checked first)
  int near_duplicate_distance = 4;   // dHash Hamming distance reported as near-duplicate; <0 off
  // <out>.duplicates.csv lists at most this many exact groups and near pairs (Note [capped
  // report]).
  int64_t duplicates_report_limit = 10000;
  bool strict = false;  // any rejected input fails the run
  // CSV image names must stay inside images_dir (no absolute paths, no "..") unless this is set.
  bool allow_outside_images = false;
  int threads = 0;        // decode threads; 0 = all cores
  int progress_tty = -1;  // Progress tty mode (-1 auto)
};

struct Rejection {
  int64_t row = 0;   // 1-based data row (CSV) or file number (folders)
  int64_t line = 0;  // CSV line where the row starts; 0 for folders
  std::string file;
  std::string reason;
};

struct PrepareSummary {
  int64_t candidates = 0;        // rows / files considered
  int64_t stored_originals = 0;  // decoded and stored
  int64_t stored_total = 0;      // with offline-augmented copies
  std::vector<Rejection> rejections;
  std::vector<std::string> class_names;
  // counts[class][split] of stored images (split as Split's value).
  std::vector<std::array<int64_t, 3>> counts;
  int64_t exact_duplicate_groups = 0;  // groups of >= 2 identical images (all kept in one split)
  int64_t exact_duplicate_images = 0;  // images in those groups
  int64_t label_conflict_groups = 0;   // identical images with different labels
  int64_t near_duplicate_pairs = 0;    // across splits, within near_duplicate_distance
  // Splits too small for what they are used for (Note [short splits] in storage/splits.h).
  std::vector<std::string> warnings;
  double decode_seconds = 0;
  double total_seconds = 0;
  std::string rejected_csv;
  std::string duplicates_csv;
};

// Runs the whole preparation. The output appears under out_path only when everything succeeded
// (Note [atomic output] in common/atomic_file.h); with `strict`, any rejection is an error.
Result<PrepareSummary> RunPrepare(const PrepareConfig& config);

// --- building blocks, exposed for tests ---

// Decoded RGB (CV_8UC3) to the stored S x S x 3 layout. `full_size`: the image's size before a
// reduced decode (Note [reduced decoding]); kPad takes its inner width and height from it so that
// the border matches a full decode. Empty: rgb's own size.
cv::Mat ResizeForStore(const cv::Mat& rgb, int size, ResizeMode mode, int pad_value,
                       cv::Size full_size = {});
// dHash of an RGB image: grey, area-resized to 9 x 8, DHashFromThumbnail.
uint64_t PerceptualHash(const cv::Mat& rgb);

// Note [reduced decoding]: libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 of its size (scaled
// IDCT; OpenCV's IMREAD_REDUCED_COLOR_*), several times faster than a full decode of a
// multi-megapixel photo. effnet-prepare picks the largest such scale that still leaves the decoded
// image at least kReducedDecodeMinRatio times as large as `ResizeForStore` needs, then resizes as
// usual (area averaging). The ratio 2 keeps at least 2 x 2 decoded pixels behind each stored one:
// with ratio 1 (decoded just >= S) the final resize barely filters and the result differs from
// full decode + area resize about 2-3 times more (mean 2.4, max 137 on the test images, instead
// of mean 1.1, max 58), while decoding 4000 x 3000 at 1/4 instead of 1/8 costs 52 instead of
// 39 ms (full: 247 ms). tests/storage/test_reduced_decode.cpp states the tolerance; fine
// textures differ more (Flipkart photos at 64 px: mean per image 0.5 median, 6.1 worst). OpenCV
// applies the EXIF orientation after a reduced decode just as after a full one. Other formats are
// always decoded at full size (OpenCV would decode them fully and then shrink bilinearly).
inline constexpr int kReducedDecodeMinRatio = 2;

// The largest of 1, 2, 4, 8 such that a width x height image decoded at 1/scale (libjpeg rounds
// up: ceil(width / scale)) still covers kReducedDecodeMinRatio * size for `mode`: squash needs
// both sides, center-crop the shorter side, pad the longer side. Orientation does not matter.
int ReducedDecodeScale(int64_t width, int64_t height, int size, ResizeMode mode);

struct DecodedImage {
  cv::Mat rgb;  // decoded RGB, CV_8UC3, at 1/scale of the (oriented) full size
  int scale = 1;
  cv::Size full_size;         // oriented size at scale 1
  uint64_t content_hash = 0;  // of rgb as decoded (docs/hdf5-layout.md)
};
// Reads and decodes one file with the checks effnet-prepare applies: missing/unreadable files,
// recognisably broken bytes (truncation), the pixel limit (header first), non-images. The error
// message is the rejection reason. With store_size > 0, a JPEG is decoded at the reduced scale
// ReducedDecodeScale(.., store_size, mode) (Note [reduced decoding]); 0 decodes at full size.
Result<DecodedImage> DecodeImageFile(const std::string& path, int64_t max_pixels,
                                     int store_size = 0, ResizeMode mode = ResizeMode::kSquash);

}  // namespace effnet::storage
