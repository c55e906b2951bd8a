#include "storage/h5util.h"

#include <cstdlib>
#include <mutex>

#include "common/utf8.h"

namespace effnet::storage::h5 {
namespace {

herr_t WalkInnermost(unsigned n, const H5E_error2_t* err, void* client) {
  // The stack is walked from the innermost (where the error was raised) outwards; keep the
  // first message, which says what actually went wrong ("truncated file", "bad signature").
  auto* out = static_cast<std::string*>(client);
  if (n == 0 && err && err->desc) *out = err->desc;
  return 0;
}

Status CheckInteger(hid_t dset, const char* name, size_t elem_size, bool is_signed) {
  Id type = Type(H5Dget_type(dset));
  if (!type.valid()) return Error(std::string(name) + ": cannot read its type");
  if (H5Tget_class(type.get()) != H5T_INTEGER) {
    return DataLoss(std::string(name) + ": expected an integer dataset");
  }
  const bool sign = H5Tget_sign(type.get()) == H5T_SGN_2;
  if (H5Tget_order(type.get()) != H5T_ORDER_LE && H5Tget_order(type.get()) != H5T_ORDER_BE) {
    return DataLoss(std::string(name) + ": integer type has no valid byte order");
  }
  if (H5Tget_size(type.get()) != elem_size || sign != is_signed) {
    return DataLoss(std::string(name) + ": expected " + (is_signed ? "int" : "uint") +
                    std::to_string(elem_size * 8) + ", found " + (sign ? "int" : "uint") +
                    std::to_string(H5Tget_size(type.get()) * 8));
  }
  return Status::Ok();
}

Result<Id> OpenDataset(hid_t file, const char* name) {
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) {
    LastError();
    return DataLoss(std::string("dataset ") + name + " is missing");
  }
  Id d = Dataset(H5Dopen2(file, name, H5P_DEFAULT));
  if (!d.valid()) return Error(std::string("opening dataset ") + name);
  return d;
}

// An unfiltered dataset of `bytes` bytes must have that much storage in the file: a length that
// a corrupt dataspace inflated would otherwise make us allocate (and HDF5 fill) absurd memory.
Status CheckStorage(hid_t dset, const char* name, hsize_t bytes) {
  Id dcpl = Plist(H5Dget_create_plist(dset));
  if (!dcpl.valid()) return Error(std::string(name) + ": cannot read its creation properties");
  const int nfilters = H5Pget_nfilters(dcpl.get());
  if (nfilters < 0) return Error(std::string(name) + ": cannot read its filters");
  if (nfilters > 0) return Status::Ok();  // compressed: the child's memory limit guards it
  const hsize_t stored = H5Dget_storage_size(dset);
  if (stored < bytes) {
    LastError();
    return DataLoss(std::string(name) + ": " + std::to_string(bytes) + " bytes of data but " +
                    std::to_string(stored) + " stored");
  }
  return Status::Ok();
}

}  // namespace

void EnsureInit() {
  static std::once_flag once;
  std::call_once(once, [] {
    ::setenv("HDF5_USE_FILE_LOCKING", "FALSE", /*overwrite=*/0);
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  });
}

std::recursive_mutex& GlobalMutex() {
  static std::recursive_mutex mu;
  return mu;
}

std::string LastError() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, WalkInnermost, &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg;
}

Status Error(const std::string& what) {
  std::string detail = LastError();
  return Internal(detail.empty() ? what : what + ": " + detail);
}

Status WriteIntAttr(hid_t obj, const char* name, int32_t value) {
  Id space = Space(H5Screate(H5S_SCALAR));
  Id attr = Attr(H5Acreate2(obj, name, H5T_STD_I32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!attr.valid()) return Error(std::string("creating attribute ") + name);
  if (H5Awrite(attr.get(), H5T_NATIVE_INT32, &value) < 0) {
    return Error(std::string("writing attribute ") + name);
  }
  return Status::Ok();
}

Status WriteStringAttr(hid_t obj, const char* name, const std::string& value) {
  Id type = Type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  Id space = Space(H5Screate(H5S_SCALAR));
  Id attr = Attr(H5Acreate2(obj, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!attr.valid()) return Error(std::string("creating attribute ") + name);
  const char* p = value.c_str();
  if (H5Awrite(attr.get(), type.get(), &p) < 0) {
    return Error(std::string("writing attribute ") + name);
  }
  return Status::Ok();
}

namespace {

// Opens attribute `name` of `obj` and checks its type class; `kind` names the class in errors.
Result<Id> OpenTypedAttr(hid_t obj, const char* name, H5T_class_t type_class, const char* kind) {
  if (H5Aexists(obj, name) <= 0) {
    LastError();
    return DataLoss(std::string("attribute '") + name + "' is missing");
  }
  Id attr = Attr(H5Aopen(obj, name, H5P_DEFAULT));
  if (!attr.valid()) return Error(std::string("opening attribute ") + name);
  Id type = Type(H5Aget_type(attr.get()));
  if (!type.valid()) return Error(std::string("attribute '") + name + "': cannot read its type");
  if (H5Tget_class(type.get()) != type_class) {
    return DataLoss(std::string("attribute '") + name + "' is not " + kind);
  }
  // Every attribute we read holds one value; reading more into one slot would overrun it.
  Id space = Space(H5Aget_space(attr.get()));
  if (!space.valid() || H5Sget_simple_extent_npoints(space.get()) != 1) {
    LastError();
    return DataLoss(std::string("attribute '") + name + "' is not a scalar");
  }
  return attr;
}

}  // namespace

Result<int32_t> ReadIntAttr(hid_t obj, const char* name) {
  EFFNET_ASSIGN_OR_RETURN(Id attr, OpenTypedAttr(obj, name, H5T_INTEGER, "an integer"));
  Id type = Type(H5Aget_type(attr.get()));
  const size_t size = H5Tget_size(type.get());
  if (size != 1 && size != 2 && size != 4 && size != 8) {
    return DataLoss(std::string("attribute '") + name + "' has an integer size of " +
                    std::to_string(size) + " bytes");
  }
  int32_t v = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT32, &v) < 0) {
    return Error(std::string("reading attribute ") + name);
  }
  return v;
}

Result<std::string> ReadStringAttr(hid_t obj, const char* name) {
  EFFNET_ASSIGN_OR_RETURN(Id attr, OpenTypedAttr(obj, name, H5T_STRING, "a string"));
  Id ftype = Type(H5Aget_type(attr.get()));
  if (H5Tis_variable_str(ftype.get()) > 0) {
    Id mtype = Type(H5Tcopy(H5T_C_S1));
    H5Tset_size(mtype.get(), H5T_VARIABLE);
    H5Tset_cset(mtype.get(), H5Tget_cset(ftype.get()));
    char* p = nullptr;
    if (H5Aread(attr.get(), mtype.get(), &p) < 0) {
      return Error(std::string("reading attribute ") + name);
    }
    std::string s = p ? p : "";
    Id space = Space(H5Aget_space(attr.get()));
    H5Dvlen_reclaim(mtype.get(), space.get(), H5P_DEFAULT, &p);
    if (!IsValidUtf8(s)) {
      return DataLoss(std::string("attribute '") + name + "' is not valid UTF-8");
    }
    return s;
  }
  // Fixed-length string (h5py writes numpy bytes this way).
  size_t size = H5Tget_size(ftype.get());
  if (size == 0 || size > kMaxStringBytes) {
    return DataLoss(std::string("attribute '") + name + "': implausible string size " +
                    std::to_string(size));
  }
  std::string s(size, '\0');
  Id mtype = Type(H5Tcopy(H5T_C_S1));
  H5Tset_size(mtype.get(), size);
  H5Tset_cset(mtype.get(), H5Tget_cset(ftype.get()));
  if (H5Aread(attr.get(), mtype.get(), s.data()) < 0) {
    return Error(std::string("reading attribute ") + name);
  }
  s.resize(s.find('\0') == std::string::npos ? size : s.find('\0'));
  if (!IsValidUtf8(s)) {
    return DataLoss(std::string("attribute '") + name + "' is not valid UTF-8");
  }
  return s;
}

Status Write1D(hid_t file, const char* name, hid_t file_type, hid_t mem_type, const void* data,
               hsize_t n) {
  Id space = Space(H5Screate_simple(1, &n, nullptr));
  Id dset = Dataset(
      H5Dcreate2(file, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!dset.valid()) return Error(std::string("creating dataset ") + name);
  if (n > 0 && H5Dwrite(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
    return Error(std::string("writing dataset ") + name);
  }
  return Status::Ok();
}

Status WriteStrings(hid_t file, const char* name, const std::vector<std::string>& values) {
  Id type = Type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  std::vector<const char*> ptrs;
  ptrs.reserve(values.size());
  for (const auto& v : values) ptrs.push_back(v.c_str());
  return Write1D(file, name, type.get(), type.get(), ptrs.data(), values.size());
}

Result<int64_t> Length1D(hid_t file, const char* name) {
  EFFNET_ASSIGN_OR_RETURN(Id dset, OpenDataset(file, name));
  Id space = Space(H5Dget_space(dset.get()));
  if (H5Sget_simple_extent_ndims(space.get()) != 1) {
    return DataLoss(std::string(name) + ": expected a 1-D dataset");
  }
  hsize_t n = 0;
  if (H5Sget_simple_extent_dims(space.get(), &n, nullptr) != 1 || n > kMaxElements) {
    LastError();
    return DataLoss(std::string(name) + ": implausible length " + std::to_string(n));
  }
  return static_cast<int64_t>(n);
}

namespace {

// Length of the 1-D dataset `dset`; DataLoss when it is not 1-D or (n >= 0) not n long.
Result<hsize_t> Length1D(hid_t dset, const char* name, int64_t n) {
  Id space = Space(H5Dget_space(dset));
  if (H5Sget_simple_extent_ndims(space.get()) != 1) {
    return DataLoss(std::string(name) + ": expected a 1-D dataset");
  }
  hsize_t len = 0;
  if (H5Sget_simple_extent_dims(space.get(), &len, nullptr) != 1 || len > kMaxElements) {
    LastError();
    return DataLoss(std::string(name) + ": implausible length " + std::to_string(len));
  }
  if (n >= 0 && static_cast<int64_t>(len) != n) {
    return DataLoss(std::string(name) + ": expected " + std::to_string(n) + " elements, found " +
                    std::to_string(len));
  }
  return len;
}

}  // namespace

Status Read1D(hid_t file, const char* name, hid_t mem_type, size_t elem_size, bool is_signed,
              int64_t n, void* dst, int64_t* n_out) {
  EFFNET_ASSIGN_OR_RETURN(Id dset, OpenDataset(file, name));
  EFFNET_RETURN_IF_ERROR(CheckInteger(dset.get(), name, elem_size, is_signed));
  EFFNET_ASSIGN_OR_RETURN(hsize_t len, Length1D(dset.get(), name, n));
  EFFNET_RETURN_IF_ERROR(CheckStorage(dset.get(), name, len * elem_size));
  if (n_out) *n_out = static_cast<int64_t>(len);
  if (len > 0 && H5Dread(dset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
    return Error(std::string("reading dataset ") + name);
  }
  return Status::Ok();
}

Result<int64_t> CheckedLength1D(hid_t file, const char* name, size_t elem_size, bool is_signed) {
  EFFNET_ASSIGN_OR_RETURN(Id dset, OpenDataset(file, name));
  EFFNET_RETURN_IF_ERROR(CheckInteger(dset.get(), name, elem_size, is_signed));
  EFFNET_ASSIGN_OR_RETURN(hsize_t len, Length1D(dset.get(), name, -1));
  EFFNET_RETURN_IF_ERROR(CheckStorage(dset.get(), name, len * elem_size));
  return static_cast<int64_t>(len);
}

Result<std::vector<std::string>> ReadStrings(hid_t file, const char* name, int64_t n) {
  EFFNET_ASSIGN_OR_RETURN(Id dset, OpenDataset(file, name));
  Id ftype = Type(H5Dget_type(dset.get()));
  if (H5Tget_class(ftype.get()) != H5T_STRING) {
    return DataLoss(std::string(name) + ": expected a string dataset");
  }
  EFFNET_ASSIGN_OR_RETURN(hsize_t len, Length1D(dset.get(), name, n));
  const size_t ftype_size = H5Tget_size(ftype.get());
  if (ftype_size == 0 || ftype_size > kMaxStringBytes) {
    return DataLoss(std::string(name) + ": implausible string size " + std::to_string(ftype_size));
  }
  EFFNET_RETURN_IF_ERROR(CheckStorage(dset.get(), name, len * ftype_size));
  std::vector<std::string> out(len);
  if (len == 0) return out;
  if (H5Tis_variable_str(ftype.get()) > 0) {
    Id mtype = Type(H5Tcopy(H5T_C_S1));
    H5Tset_size(mtype.get(), H5T_VARIABLE);
    H5Tset_cset(mtype.get(), H5Tget_cset(ftype.get()));
    std::vector<char*> ptrs(len, nullptr);
    if (H5Dread(dset.get(), mtype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()) < 0) {
      return Error(std::string("reading dataset ") + name);
    }
    for (hsize_t i = 0; i < len; ++i) out[i] = ptrs[i] ? ptrs[i] : "";
    Id space = Space(H5Dget_space(dset.get()));
    H5Dvlen_reclaim(mtype.get(), space.get(), H5P_DEFAULT, ptrs.data());
  } else {
    size_t size = H5Tget_size(ftype.get());
    Id mtype = Type(H5Tcopy(H5T_C_S1));
    H5Tset_size(mtype.get(), size);
    H5Tset_cset(mtype.get(), H5Tget_cset(ftype.get()));
    std::vector<char> buf(size * len);
    if (H5Dread(dset.get(), mtype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0) {
      return Error(std::string("reading dataset ") + name);
    }
    for (hsize_t i = 0; i < len; ++i) {
      std::string s(buf.data() + i * size, size);
      auto z = s.find('\0');
      if (z != std::string::npos) s.resize(z);
      out[i] = std::move(s);
    }
  }
  for (hsize_t i = 0; i < len; ++i) {
    if (!IsValidUtf8(out[i])) {
      return DataLoss(std::string(name) + "[" + std::to_string(i) +
                      "] is not valid UTF-8 (Note [text encoding]); re-run effnet-prepare");
    }
  }
  return out;
}

}  // namespace effnet::storage::h5
