// Small RAII and error helpers over the HDF5 C API, for effnet_storage and the Keras weights
// importer (worker/formats/keras.cpp), which share the one HDF5 mutex and init.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/status.h"

namespace effnet::storage::h5 {

// Note [hdf5 init]: HDF5 1.10 reads HDF5_USE_FILE_LOCKING once, when the library initialises,
// so this must run before the first H5* call. Readers on several ranks (and readers next to a
// writer on network file systems without flock) would otherwise fail to open the file. It also
// turns off HDF5's automatic error printing; errors are returned as Status with the HDF5 stack
// message instead (LastError). Idempotent and thread-safe.
void EnsureInit();

// Serialises HDF5 calls of this process: Debian's HDF5 is built without thread safety
// (Note [reader threads] in dataset_reader.h). Recursive, so a failing open may close handles.
std::recursive_mutex& GlobalMutex();

// The innermost message of the current HDF5 error stack ("" when empty), then clears it.
std::string LastError();

// Owns one hid_t and closes it with the matching H5*close.
class Id {
 public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Id() { Reset(); }
  Id(Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), closer_(o.closer_) {}
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      Reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      closer_ = o.closer_;
    }
    return *this;
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;

  hid_t get() const { return id_; }
  // Gives up ownership (the caller closes it).
  hid_t Release() { return std::exchange(id_, H5I_INVALID_HID); }
  bool valid() const { return id_ >= 0; }
  void Reset() {
    if (id_ >= 0 && closer_) closer_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

inline Id File(hid_t id) { return Id(id, H5Fclose); }
inline Id Dataset(hid_t id) { return Id(id, H5Dclose); }
inline Id Space(hid_t id) { return Id(id, H5Sclose); }
inline Id Type(hid_t id) { return Id(id, H5Tclose); }
inline Id Plist(hid_t id) { return Id(id, H5Pclose); }
inline Id Attr(hid_t id) { return Id(id, H5Aclose); }

// Bounds that no valid store reaches; larger values come from corrupt metadata (Note [corrupt
// stores] in storage/reader.cpp).
inline constexpr size_t kMaxStringBytes = size_t{64} << 20;
inline constexpr hsize_t kMaxElements = hsize_t{1} << 31;

// Error with the HDF5 stack message appended: "<what>: <hdf5 message>".
Status Error(const std::string& what);

// --- attributes on an object (the file root) ---
Status WriteIntAttr(hid_t obj, const char* name, int32_t value);
Status WriteStringAttr(hid_t obj, const char* name, const std::string& value);
Result<int32_t> ReadIntAttr(hid_t obj, const char* name);
Result<std::string> ReadStringAttr(hid_t obj, const char* name);

// --- whole 1-D datasets ---
// `mem_type` is a native HDF5 type (H5T_NATIVE_INT32, ...); the file stores the same type
// little-endian (H5T_STD_I32LE, ...).
Status Write1D(hid_t file, const char* name, hid_t file_type, hid_t mem_type, const void* data,
               hsize_t n);
Status WriteStrings(hid_t file, const char* name, const std::vector<std::string>& values);

// Reads a 1-D dataset of `expected_class` (H5T_INTEGER), size in bytes `elem_size` and sign
// `is_signed`, checking its shape is [n] (n = -1: any). Fails with the dataset name otherwise.
Status Read1D(hid_t file, const char* name, hid_t mem_type, size_t elem_size, bool is_signed,
              int64_t n, void* dst, int64_t* n_out);
// Strings must be valid UTF-8 (Note [text encoding] in common/utf8.h); DataLoss names the row.
Result<std::vector<std::string>> ReadStrings(hid_t file, const char* name, int64_t n);
// Number of elements of 1-D dataset `name` (error when absent or not 1-D).
Result<int64_t> Length1D(hid_t file, const char* name);

// Length of 1-D integer dataset `name` after Read1D's checks of type, shape and storage.
Result<int64_t> CheckedLength1D(hid_t file, const char* name, size_t elem_size, bool is_signed);

template <typename T>
Status ReadVector(hid_t file, const char* name, hid_t mem_type, int64_t n, std::vector<T>* out) {
  EFFNET_ASSIGN_OR_RETURN(int64_t len,
                          CheckedLength1D(file, name, sizeof(T), std::is_signed<T>::value));
  if (n >= 0 && len != n) {
    return DataLoss(std::string(name) + ": expected " + std::to_string(n) + " elements, found " +
                    std::to_string(len));
  }
  out->resize(static_cast<size_t>(len));
  return Read1D(file, name, mem_type, sizeof(T), std::is_signed<T>::value, len, out->data(),
                nullptr);
}

}  // namespace effnet::storage::h5
