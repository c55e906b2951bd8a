// DatasetReader over the HDF5 C API (layout: storage/layout.h).
//
// Note [corrupt stores]: libhdf5 trusts a file's metadata; some corrupt object headers, B-trees
// or global heaps make H5Dread/H5Aread dereference wild pointers. So (1) every value we use is
// checked against layout.h before use (ranks, shapes, dtypes, attribute sizes, UTF-8, storage
// sizes against the file size), and (2) DatasetReader::Open first validates the whole store in a
// forked child (ValidateInChild): it opens the file, reads every attribute and metadata dataset
// and a sample of images, and reports through a pipe. A child killed by a signal, out of memory
// or out of time makes Open fail with DataLoss naming the object it was reading. Only after a
// clean child run does the parent open the file itself; nothing the child read is kept.
// Limits: images outside the sample (256, evenly spread) are first looked up in the parent, where
// each chunk's indexed size and address are checked before H5Dread_chunk copies it; a chunk index
// corrupt only there could still crash libhdf5. The file is read twice at open (child, parent).
// The child holds no lock and only _exit()s, so forking a Torch, CUDA or MPI process is safe.
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <new>

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

// Largest image side we accept: far above any model's input, small enough that S * S * 3 * N
// cannot overflow.
constexpr int kMaxImageSize = 8192;

// Write end of the progress pipe in a validation child; -1 in every other process.
int g_progress_fd = -1;

// Names the object about to be read, so that a crash in libhdf5 can be reported against it.
void Mark(const std::string& object) {
  if (g_progress_fd < 0) return;
  std::string line = "@" + object + "\n";
  ssize_t ignored = ::write(g_progress_fd, line.data(), line.size());
  (void)ignored;
}

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
  Mark("the superblock");
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
  Mark("the root group");
  h5::Id root = h5::Id(H5Gopen2(of.file.get(), "/", H5P_DEFAULT), H5Gclose);
  if (!root.valid()) return h5::Error("opening the root group");
  Mark(std::string("root attribute '") + layout::kAttrFormat + "'");
  auto format = h5::ReadStringAttr(root.get(), layout::kAttrFormat);
  if (!format.ok() || *format != layout::kFormatName) {
    return FailedPrecondition(std::string("not an effnet image store (root attribute '") +
                              layout::kAttrFormat + "' is not '" + layout::kFormatName +
                              "'); prepare it with effnet-prepare");
  }
  Mark(std::string("root attribute '") + layout::kAttrSchemaVersion + "'");
  EFFNET_ASSIGN_OR_RETURN(info->schema_version,
                          h5::ReadIntAttr(root.get(), layout::kAttrSchemaVersion));
  if (info->schema_version != layout::kSchemaVersion) {
    return FailedPrecondition("schema version " + std::to_string(info->schema_version) +
                              ", but this build reads only version " +
                              std::to_string(layout::kSchemaVersion) +
                              "; re-run effnet-prepare with this build");
  }
  Mark(std::string("root attribute '") + layout::kAttrComplete + "'");
  auto complete = h5::ReadIntAttr(root.get(), layout::kAttrComplete);
  if (!complete.ok() || *complete != 1) {
    return DataLoss("incomplete file (the writer did not finish; attribute 'complete' missing)");
  }
  Mark(std::string("root attribute '") + layout::kAttrImageSize + "'");
  EFFNET_ASSIGN_OR_RETURN(info->image_size, h5::ReadIntAttr(root.get(), layout::kAttrImageSize));
  if (info->image_size < 1 || info->image_size > kMaxImageSize) {
    return DataLoss(std::string("root attribute '") + layout::kAttrImageSize + "' is " +
                    std::to_string(info->image_size) + ", not in [1, " +
                    std::to_string(kMaxImageSize) + "]");
  }
  Mark(std::string("root attribute '") + layout::kAttrPrepareSettings + "'");
  EFFNET_ASSIGN_OR_RETURN(info->source,
                          h5::ReadStringAttr(root.get(), layout::kAttrPrepareSettings));

  Mark(std::string("dataset ") + layout::kImages);
  if (H5Lexists(of.file.get(), layout::kImages, H5P_DEFAULT) <= 0) {
    h5::LastError();
    return DataLoss(std::string("dataset ") + layout::kImages + " is missing");
  }
  of.images = h5::Dataset(H5Dopen2(of.file.get(), layout::kImages, H5P_DEFAULT));
  if (!of.images.valid()) return h5::Error(std::string("opening ") + layout::kImages);
  h5::Id type = h5::Type(H5Dget_type(of.images.get()));
  if (!type.valid() || H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_size(type.get()) != 1 ||
      H5Tget_sign(type.get()) != H5T_SGN_NONE) {
    return DataLoss(std::string(layout::kImages) + ": expected uint8");
  }
  h5::Id space = h5::Space(H5Dget_space(of.images.get()));
  if (!space.valid()) return h5::Error(std::string(layout::kImages) + ": cannot read its shape");
  hsize_t dims[4] = {0, 0, 0, 0};
  const hsize_t s = static_cast<hsize_t>(info->image_size);
  if (H5Sget_simple_extent_ndims(space.get()) != 4 ||
      H5Sget_simple_extent_dims(space.get(), dims, nullptr) != 4 || dims[1] != s || dims[2] != s ||
      dims[3] != 3) {
    return DataLoss(std::string(layout::kImages) + ": expected shape [N, " + std::to_string(s) +
                    ", " + std::to_string(s) + ", 3]");
  }
  // Without filters every image occupies S * S * 3 bytes of the file; with filters (h5py,
  // h5repack) the per-dataset checks in ReadMetadata bound N.
  h5::Id dcpl = h5::Plist(H5Dget_create_plist(of.images.get()));
  const int nfilters = dcpl.valid() ? H5Pget_nfilters(dcpl.get()) : -1;
  if (nfilters < 0) return h5::Error(std::string(layout::kImages) + ": cannot read its filters");
  if (dims[0] > h5::kMaxElements ||
      (nfilters == 0 && dims[0] * s * s * 3 > static_cast<hsize_t>(info->file_bytes))) {
    return DataLoss(std::string(layout::kImages) + ": " + std::to_string(dims[0]) +
                    " images do not fit in a file of " + std::to_string(info->file_bytes) +
                    " bytes (truncated or corrupt)");
  }
  info->num_images = static_cast<int64_t>(dims[0]);
  return of;
}

Status ReadMetadata(hid_t f, DatasetInfo* info) {
  const int64_t n = info->num_images;
  const auto dataset = [](const char* name) { Mark(std::string("dataset ") + name); };
  dataset(layout::kClassNames);
  EFFNET_ASSIGN_OR_RETURN(info->class_names, h5::ReadStrings(f, layout::kClassNames, -1));
  if (info->class_names.empty()) return DataLoss(std::string(layout::kClassNames) + " is empty");
  dataset(layout::kLabels);
  EFFNET_RETURN_IF_ERROR(h5::ReadVector(f, layout::kLabels, H5T_NATIVE_INT32, n, &info->labels));
  std::vector<int8_t> splits;
  dataset(layout::kSplits);
  EFFNET_RETURN_IF_ERROR(h5::ReadVector(f, layout::kSplits, H5T_NATIVE_INT8, n, &splits));
  dataset(layout::kSourcePaths);
  EFFNET_ASSIGN_OR_RETURN(info->source_paths, h5::ReadStrings(f, layout::kSourcePaths, n));
  dataset(layout::kContentHash);
  EFFNET_RETURN_IF_ERROR(
      h5::ReadVector(f, layout::kContentHash, H5T_NATIVE_UINT64, n, &info->content_hash));
  dataset(layout::kPerceptualHash);
  EFFNET_RETURN_IF_ERROR(
      h5::ReadVector(f, layout::kPerceptualHash, H5T_NATIVE_UINT64, n, &info->perceptual_hash));
  dataset(layout::kOrigin);
  EFFNET_RETURN_IF_ERROR(h5::ReadVector(f, layout::kOrigin, H5T_NATIVE_INT64, n, &info->origin));
  dataset(layout::kAugmentation);
  EFFNET_RETURN_IF_ERROR(
      h5::ReadVector(f, layout::kAugmentation, H5T_NATIVE_INT8, n, &info->augmentation));
  if (info->class_names.size() > static_cast<size_t>(INT32_MAX)) {
    return DataLoss(std::string(layout::kClassNames) + ": implausibly many classes");
  }
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
    if (info->augmentation[i] < 0 || info->augmentation[i] > 3) {
      return DataLoss(std::string(layout::kAugmentation) + "[" + std::to_string(i) +
                      "] = " + std::to_string(info->augmentation[i]) + " is not 0..3");
    }
    if (info->origin[i] < 0 || info->origin[i] >= n) {
      return DataLoss(std::string(layout::kOrigin) + "[" + std::to_string(i) + "] is out of range");
    }
  }
  return Status::Ok();
}

// Whether /images allows direct chunk reads: chunked one image per chunk, no filters.
Status CheckRawChunks(hid_t images, const DatasetInfo& info) {
  Mark(std::string("the creation properties of ") + layout::kImages);
  h5::Id dcpl = h5::Plist(H5Dget_create_plist(images));
  if (!dcpl.valid()) return h5::Error(std::string(layout::kImages) + ": creation properties");
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

// Copies image `idx` into `dst` (S * S * 3 bytes), directly from its chunk or via a hyperslab.
Status ReadImage(hid_t images, const DatasetInfo& info, bool direct, int64_t idx, uint8_t* dst) {
  const hsize_t s = static_cast<hsize_t>(info.image_size);
  const hsize_t bytes = s * s * 3;
  if (direct) {
    // Note [direct reads]: chunks are raw (no filter) and one image each, so H5Dread_chunk
    // copies an image straight from the file into `dst`: one chunk-index lookup, no dataspace
    // selection, no chunk cache, no type conversion. It copies as many bytes as the index says
    // the chunk has, so a corrupt index entry must not reach it.
    // H5Dget_chunk_storage_size reports the nominal size of an unfiltered chunk, not the index's.
    hsize_t offset[4] = {static_cast<hsize_t>(idx), 0, 0, 0};
    unsigned mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t stored = 0;
    if (H5Dget_chunk_info_by_coord(images, offset, &mask, &addr, &stored) < 0 ||
        addr == HADDR_UNDEF || stored != bytes ||
        addr + stored > static_cast<hsize_t>(info.file_bytes)) {
      h5::LastError();
      return DataLoss("image " + std::to_string(idx) + ": its chunk holds " +
                      std::to_string(stored) + " bytes, not " + std::to_string(bytes) +
                      ", or lies outside the file");
    }
    uint32_t filters = 0;
    if (H5Dread_chunk(images, H5P_DEFAULT, offset, &filters, dst) < 0) {
      return DataLoss("reading image " + std::to_string(idx) + ": " + h5::LastError());
    }
    return Status::Ok();
  }
  // Note [hyperslab shape]: the memory space has the selection's shape [1, S, S, 3]; with a
  // 1-D memory space HDF5 falls back to element-wise gather (about 100x slower).
  hsize_t mdims[4] = {1, s, s, 3};
  h5::Id mspace = h5::Space(H5Screate_simple(4, mdims, nullptr));
  h5::Id fspace = h5::Space(H5Dget_space(images));
  hsize_t start[4] = {static_cast<hsize_t>(idx), 0, 0, 0};
  if (!mspace.valid() || !fspace.valid() ||
      H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, mdims, nullptr) < 0 ||
      H5Dread(images, H5T_NATIVE_UINT8, mspace.get(), fspace.get(), H5P_DEFAULT, dst) < 0) {
    return DataLoss("reading image " + std::to_string(idx) + ": " + h5::LastError());
  }
  return Status::Ok();
}

// Everything Open checks, plus reads of a sample of images (all of a small store). Runs in the
// validation child, so it takes no lock (Note [corrupt stores]).
constexpr int64_t kSampledImages = 256;

Status ValidateStore(const std::string& path, bool direct_reads) {
  DatasetInfo info;
  auto of = OpenAndCheckImages(path, &info);
  if (!of.ok()) return of.status();
  EFFNET_RETURN_IF_ERROR(ReadMetadata(of->file.get(), &info));
  const bool direct = direct_reads && CheckRawChunks(of->images.get(), info).ok();
  h5::LastError();
  const int64_t n = info.num_images;
  std::vector<uint8_t> pixels(static_cast<size_t>(info.image_size) * info.image_size * 3);
  const int64_t count = std::min(n, kSampledImages);
  for (int64_t k = 0; k < count; ++k) {
    const int64_t idx = count == n ? k : k * (n - 1) / (count - 1);
    Mark("image " + std::to_string(idx) + " of " + layout::kImages);
    EFFNET_RETURN_IF_ERROR(ReadImage(of->images.get(), info, direct, idx, pixels.data()));
  }
  return Status::Ok();
}

// Memory a validation child may add to what the process already maps.
constexpr rlim_t kChildExtraMemory = rlim_t{16} << 30;

// Bytes of address space this process maps (/proc/self/statm); 0 when unknown.
rlim_t MappedBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long pages = 0;
  const int got = std::fscanf(f, "%lu", &pages);
  std::fclose(f);
  return got == 1 ? static_cast<rlim_t>(pages) * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE)) : 0;
}

[[noreturn]] void RunChild(const std::function<Status()>& work, int fd) {
  g_progress_fd = fd;
  const rlim_t mapped = MappedBytes();
  if (mapped > 0) {
    rlimit lim{mapped + kChildExtraMemory, mapped + kChildExtraMemory};
    ::setrlimit(RLIMIT_AS, &lim);
  }
  Status st;
  try {
    st = work();
  } catch (const std::bad_alloc&) {
    st = DataLoss("implausible sizes: reading it needs more than " +
                  std::to_string(kChildExtraMemory >> 30) + " GiB");
  } catch (const std::exception& e) {
    st = DataLoss(std::string("reading it failed: ") + e.what());
  }
  // A heap overrun inside libhdf5 may not crash at once; consolidating every arena runs glibc's
  // chunk checks, so it aborts here, in the child, rather than later in the parent.
  ::malloc_trim(0);
  std::string line = "=" + std::to_string(static_cast<int>(st.code())) + "\t" + st.message();
  for (size_t off = 0; off < line.size();) {
    ssize_t w = ::write(fd, line.data() + off, line.size() - off);
    if (w <= 0) break;
    off += static_cast<size_t>(w);
  }
  ::_exit(0);  // no atexit handlers, no HDF5 shutdown: the parent owns the library state
}

// Runs `work` (HDF5 reads of one file) in a forked child (Note [corrupt stores]). The message
// names no path (the caller adds it).
Status RunInChild(const std::function<Status()>& work, int timeout_s) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return Unavailable(std::string("pipe for the validation process: ") + std::strerror(errno));
  }
  pid_t pid;
  {
    // No other thread may be inside libhdf5 while its state is copied into the child.
    std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
    h5::EnsureInit();
    pid = ::fork();
  }
  if (pid < 0) {
    const int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return Unavailable(std::string("fork for the validation process: ") + std::strerror(err));
  }
  if (pid == 0) {
    ::close(fds[0]);
    RunChild(work, fds[1]);
  }
  ::close(fds[1]);
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  bool timed_out = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    const int r = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char buf[4096];
    const ssize_t got = ::read(fds[0], buf, sizeof(buf));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    out.append(buf, static_cast<size_t>(got));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  // The last "@object" line names what the child was reading when it stopped.
  std::string object = "the file";
  std::string result;
  bool have_result = false;
  size_t pos = 0;
  while (pos < out.size()) {
    size_t end = out.find('\n', pos);
    if (out[pos] == '=') {
      result = out.substr(pos + 1);
      have_result = true;
      break;
    }
    if (end == std::string::npos) end = out.size();
    if (out[pos] == '@') object = out.substr(pos + 1, end - pos - 1);
    pos = end + 1;
  }
  if (timed_out) {
    return DataLoss("the file is corrupt (libhdf5 did not finish reading " + object + " in " +
                    std::to_string(timeout_s) + " s)");
  }
  if (WIFSIGNALED(wstatus)) {
    return DataLoss("the file is corrupt (libhdf5 crashed reading " + object + ": " +
                    strsignal(WTERMSIG(wstatus)) + ")");
  }
  if (!have_result) {
    return DataLoss("the file is corrupt (the validation process stopped reading " + object +
                    ", exit code " + std::to_string(WEXITSTATUS(wstatus)) + ")");
  }
  const size_t tab = result.find('\t');
  const int code = std::atoi(result.substr(0, tab).c_str());
  if (code == 0) return Status::Ok();
  return Status(static_cast<StatusCode>(code),
                tab == std::string::npos ? std::string() : result.substr(tab + 1));
}

Status ValidateInChild(const std::string& path, const ReaderOptions& options) {
  return RunInChild([&] { return ValidateStore(path, options.direct_reads); },
                    options.validate_timeout_s);
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
    if (options.validate_in_child) {
      Status st = ValidateInChild(path, options);
      if (!st.ok()) return st.WithContext(path);
    }
    std::unique_ptr<Hdf5DatasetReader> r(new Hdf5DatasetReader());
    r->path_ = path;
    std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
    auto of = OpenAndCheckImages(path, &r->info_);
    if (!of.ok()) return of.status().WithContext(path);
    r->file_ = std::move(of).value();
    Status st = ReadMetadata(r->file_.file.get(), &r->info_);
    if (!st.ok()) return st.WithContext(path);
    r->direct_ = options.direct_reads && CheckRawChunks(r->file_.images.get(), r->info_).ok();
    h5::LastError();
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
    for (size_t k = 0; k < indices.size(); ++k) {
      Status st = ReadImage(file_.images.get(), info_, direct_, indices[k], dst + k * bytes);
      if (!st.ok()) return st.WithContext(path_);
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
  Status valid = ValidateInChild(path, ReaderOptions{});
  if (!valid.ok()) return valid.WithContext(path);
  std::lock_guard<std::recursive_mutex> lock(h5::GlobalMutex());
  DatasetInfo info;
  auto of = OpenAndCheckImages(path, &info);
  if (!of.ok()) return of.status().WithContext(path);
  auto offsets = ChunkOffsets(of->images.get(), info);
  if (!offsets.ok()) return offsets.status().WithContext(path);
  return offsets;
}

Status CheckReplaceableStore(const std::string& path) {
  const auto refuse = [&](const std::string& why) {
    return FailedPrecondition(path + " exists and is not an effnet store (" + why +
                              "); refusing to replace it: remove it or choose another output");
  };
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Unavailable(path + ": cannot stat: " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return refuse("not a regular file");
  Status st2 = RunInChild(
      [&]() -> Status {
        h5::EnsureInit();
        if (H5Fis_hdf5(path.c_str()) <= 0) return DataLoss("no HDF5 signature");
        h5::Id file = h5::File(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
        if (!file.valid()) return DataLoss("cannot open as HDF5");
        h5::Id root = h5::Id(H5Gopen2(file.get(), "/", H5P_DEFAULT), H5Gclose);
        if (!root.valid()) return DataLoss("no root group");
        auto format = h5::ReadStringAttr(root.get(), layout::kAttrFormat);
        if (!format.ok() || *format != layout::kFormatName) {
          return DataLoss(std::string("root attribute '") + layout::kAttrFormat + "' is not '" +
                          layout::kFormatName + "'");
        }
        auto version = h5::ReadIntAttr(root.get(), layout::kAttrSchemaVersion);
        if (!version.ok()) return version.status();
        return Status::Ok();
      },
      /*timeout_s=*/60);
  if (!st2.ok()) return refuse(st2.message());
  return Status::Ok();
}

}  // namespace effnet::storage
