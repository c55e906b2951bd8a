// The effnet HDF5 image-store layout: every dataset and attribute name, in one place.
// Documented for other tools (h5py) in docs/hdf5-layout.md; keep the two in step.
//
// Note [schema version]: kSchemaVersion changes whenever a name, dtype, shape or meaning below
// changes. Readers refuse any other version instead of guessing, so an old file is re-prepared
// rather than misread.
#pragma once

#include <cstdint>

namespace effnet::storage::layout {

inline constexpr int kSchemaVersion = 1;
// Root attribute `format`: marks the file as ours (a foreign HDF5 file lacks it).
inline constexpr const char* kFormatName = "effnet-image-store";

// --- root attributes ---
inline constexpr const char* kAttrFormat = "format";                     // string
inline constexpr const char* kAttrSchemaVersion = "schema_version";      // int32 scalar
inline constexpr const char* kAttrImageSize = "image_size";              // int32 scalar S
inline constexpr const char* kAttrPrepareSettings = "prepare_settings";  // JSON string
inline constexpr const char* kAttrComplete = "complete";                 // int32 scalar, 1

// --- datasets (N = number of stored images, originals and offline-augmented copies) ---
inline constexpr const char* kImages = "/images";           // uint8 [N,S,S,3] RGB, chunk [1,S,S,3]
inline constexpr const char* kLabels = "/labels";           // int32 [N], index into class_names
inline constexpr const char* kSplits = "/splits";           // int8 [N], 0 train, 1 val, 2 test
inline constexpr const char* kClassNames = "/class_names";  // variable-length UTF-8 strings [C]
inline constexpr const char* kSourcePaths = "/source_paths";  // variable-length UTF-8 strings [N]
inline constexpr const char* kContentHash =
    "/content_hash";                                      // uint64 [N], FNV-1a of decoded pixels
inline constexpr const char* kPerceptualHash = "/phash";  // uint64 [N], 64-bit dHash
inline constexpr const char* kOrigin = "/origin";         // int64 [N], index of the original
inline constexpr const char* kAugmentation = "/augmentation";  // int8 [N], see Augmentation

// Offline augmentation codes stored in /augmentation.
enum class Augmentation : int8_t { kNone = 0, kHFlip = 1, kVFlip = 2, kRot90 = 3 };
const char* AugmentationName(Augmentation a);

}  // namespace effnet::storage::layout
