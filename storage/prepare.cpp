#include "storage/prepare.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <optional>
#include <set>
#include <thread>

#include "common/atomic_file.h"
#include "common/log.h"
#include "common/progress.h"
#include "common/signal_cleanup.h"
#include "common/utf8.h"
#include "storage/csv.h"
#include "storage/dedup.h"
#include "storage/image_header.h"
#include "storage/layout.h"
#include "storage/writer.h"

namespace effnet::storage {
namespace fs = std::filesystem;

const char* ResizeModeName(ResizeMode m) {
  switch (m) {
    case ResizeMode::kSquash:
      return "squash";
    case ResizeMode::kCenterCrop:
      return "center-crop";
    case ResizeMode::kPad:
      return "pad";
  }
  return "?";
}

Result<ResizeMode> ParseResizeMode(const std::string& s) {
  if (s == "squash") return ResizeMode::kSquash;
  if (s == "center-crop") return ResizeMode::kCenterCrop;
  if (s == "pad") return ResizeMode::kPad;
  return InvalidArgument("--resize must be squash, center-crop or pad, not '" + s + "'");
}

namespace {

// Area averaging when shrinking (no aliasing), bilinear when enlarging.
void ResizeTo(const cv::Mat& src, cv::Mat* dst, int w, int h) {
  const bool shrink = w <= src.cols && h <= src.rows;
  cv::resize(src, *dst, cv::Size(w, h), 0, 0, shrink ? cv::INTER_AREA : cv::INTER_LINEAR);
}

}  // namespace

cv::Mat ResizeForStore(const cv::Mat& rgb, int size, ResizeMode mode, int pad_value,
                       cv::Size full_size) {
  if (full_size.empty()) full_size = rgb.size();
  cv::Mat out;
  switch (mode) {
    case ResizeMode::kSquash:
      ResizeTo(rgb, &out, size, size);
      break;
    case ResizeMode::kCenterCrop: {
      const int side = std::min(rgb.cols, rgb.rows);
      cv::Rect roi((rgb.cols - side) / 2, (rgb.rows - side) / 2, side, side);
      ResizeTo(rgb(roi), &out, size, size);
      break;
    }
    case ResizeMode::kPad: {
      const double scale = static_cast<double>(size) / std::max(full_size.width, full_size.height);
      const int w = std::clamp(static_cast<int>(std::lround(full_size.width * scale)), 1, size);
      const int h = std::clamp(static_cast<int>(std::lround(full_size.height * scale)), 1, size);
      cv::Mat inner;
      ResizeTo(rgb, &inner, w, h);
      out = cv::Mat(size, size, CV_8UC3, cv::Scalar::all(pad_value));
      inner.copyTo(out(cv::Rect((size - w) / 2, (size - h) / 2, w, h)));
      break;
    }
  }
  if (!out.isContinuous()) out = out.clone();
  return out;
}

uint64_t PerceptualHash(const cv::Mat& rgb) {
  cv::Mat gray, thumb;
  cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
  cv::resize(gray, thumb, cv::Size(9, 8), 0, 0, cv::INTER_AREA);
  if (!thumb.isContinuous()) thumb = thumb.clone();
  return DHashFromThumbnail(thumb.ptr<uint8_t>());
}

int ReducedDecodeScale(int64_t width, int64_t height, int size, ResizeMode mode) {
  for (int scale : {8, 4, 2}) {
    const int64_t w = (width + scale - 1) / scale, h = (height + scale - 1) / scale;
    int64_t need = 0;
    switch (mode) {
      case ResizeMode::kSquash:
      case ResizeMode::kCenterCrop:
        need = std::min(w, h);
        break;
      case ResizeMode::kPad:
        need = std::max(w, h);
        break;
    }
    if (need >= int64_t{kReducedDecodeMinRatio} * size) return scale;
  }
  return 1;
}

Result<DecodedImage> DecodeImageFile(const std::string& path, int64_t max_pixels, int store_size,
                                     ResizeMode mode) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return NotFound(errno == ENOENT ? "file not found"
                                    : std::string("cannot stat: ") + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return InvalidArgument("not a regular file");
  if (st.st_size == 0) return DataLoss("empty file");
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return PermissionDenied(std::string("cannot read: ") + std::strerror(errno));
    const size_t got = std::fread(bytes.data(), 1, bytes.size(), f);
    const bool err = std::ferror(f) != 0;
    std::fclose(f);
    if (err || got != bytes.size()) return DataLoss("read error or file shrank while reading");
  }
  const ImageHeader header = SniffImageHeader(bytes.data(), bytes.size());
  if (header.width > 0 && header.height > 0 && header.width * header.height > max_pixels) {
    return InvalidArgument(std::to_string(header.width) + " x " + std::to_string(header.height) +
                           " = " + std::to_string(header.width * header.height) +
                           " pixels exceeds --max-pixels " + std::to_string(max_pixels) +
                           " (from the " + ImageFormatName(header.format) + " header)");
  }
  if (!header.problem.empty()) return DataLoss(header.problem);
  int scale = 1;
  if (store_size > 0 && header.format == ImageFormat::kJpeg && header.width > 0 &&
      header.height > 0) {
    scale = ReducedDecodeScale(header.width, header.height, store_size, mode);
  }
  const int flags = scale == 8   ? cv::IMREAD_REDUCED_COLOR_8
                    : scale == 4 ? cv::IMREAD_REDUCED_COLOR_4
                    : scale == 2 ? cv::IMREAD_REDUCED_COLOR_2
                                 : cv::IMREAD_COLOR;
  cv::Mat bgr;
  try {
    bgr = cv::imdecode(cv::_InputArray(bytes.data(), static_cast<int>(bytes.size())), flags);
  } catch (const cv::Exception& e) {
    return DataLoss(std::string("decoder error: ") + e.what());
  }
  if (bgr.empty()) {
    return InvalidArgument(std::string("not a decodable image (format: ") +
                           ImageFormatName(header.format) + ")");
  }
  DecodedImage out;
  out.scale = scale;
  out.full_size = bgr.size();
  if (scale > 1) {
    // EXIF orientation may have swapped the sides: match ceil(side / scale) to the header's.
    const int64_t w = header.width, h = header.height;
    const bool swapped = (w + scale - 1) / scale != bgr.cols || (h + scale - 1) / scale != bgr.rows;
    out.full_size = swapped ? cv::Size(static_cast<int>(h), static_cast<int>(w))
                            : cv::Size(static_cast<int>(w), static_cast<int>(h));
  }
  if (static_cast<int64_t>(out.full_size.width) * out.full_size.height > max_pixels) {
    return InvalidArgument(std::to_string(out.full_size.width) + " x " +
                           std::to_string(out.full_size.height) + " pixels exceeds --max-pixels " +
                           std::to_string(max_pixels));
  }
  cv::cvtColor(bgr, out.rgb, cv::COLOR_BGR2RGB);
  out.content_hash = ContentHash(out.rgb.ptr<uint8_t>(), out.rgb.rows, out.rgb.cols, 3);
  return out;
}

namespace {

struct Candidate {
  int64_t row = 0, line = 0;
  std::string path;   // as opened
  std::string label;  // class name; "" = rejected before decoding
  std::string early_rejection;
};

Result<std::vector<Candidate>> CollectCsv(const PrepareConfig& c) {
  EFFNET_ASSIGN_OR_RETURN(CsvTable table, ReadCsvFile(c.csv_path));
  auto label_col = table.Column(c.label_column);
  if (!label_col.ok()) return label_col.status().WithContext(c.csv_path + " (--label-column)");
  auto image_col = table.Column(c.image_column);
  if (!image_col.ok()) return image_col.status().WithContext(c.csv_path + " (--image-column)");
  std::vector<Candidate> out;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    Candidate cand;
    cand.row = static_cast<int64_t>(r) + 1;
    cand.line = table.row_lines[r];
    const std::string& image = table.rows[r][*image_col];
    cand.path = (fs::path(c.images_dir) / image).string();
    // A Latin-1 CSV usually names Latin-1 files: open those bytes when the UTF-8 name is absent.
    std::string latin1;
    std::error_code ec;
    if (table.latin1_from_line > 0 && !fs::exists(cand.path, ec) && Utf8ToLatin1(image, &latin1)) {
      const std::string alt = (fs::path(c.images_dir) / latin1).string();
      if (fs::exists(alt, ec)) cand.path = alt;
    }
    cand.label = FirstCategory(table.rows[r][*label_col]);
    if (image.empty()) cand.early_rejection = "empty '" + c.image_column + "' field";
    const fs::path rel = fs::path(image).lexically_normal();
    if (!c.allow_outside_images && !image.empty() &&
        (rel.is_absolute() || (!rel.empty() && *rel.begin() == ".."))) {
      cand.early_rejection = "'" + image + "' lies outside --images (pass --allow-outside-images)";
    }
    if (cand.label.empty()) cand.early_rejection = "empty label in '" + c.label_column + "'";
    out.push_back(std::move(cand));
  }
  return out;
}

Result<std::vector<Candidate>> CollectFolders(const std::string& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return NotFound(root + ": not a directory");
  std::vector<fs::path> classes;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (e.is_directory() && e.path().filename().string()[0] != '.') classes.push_back(e.path());
  }
  if (ec) return Internal(root + ": " + ec.message());
  std::sort(classes.begin(), classes.end());
  std::vector<Candidate> out;
  for (const auto& dir : classes) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (e.path().filename().string()[0] == '.' || e.is_directory()) continue;
      files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      Candidate cand;
      cand.row = static_cast<int64_t>(out.size()) + 1;
      cand.path = f.string();
      cand.label = ToUtf8(dir.filename().string());  // Note [text encoding]
      out.push_back(std::move(cand));
    }
  }
  if (classes.empty()) return InvalidArgument(root + ": no class folders inside");
  return out;
}

Status ValidateConfig(const PrepareConfig& c) {
  const bool csv = !c.csv_path.empty(), folders = !c.folders_dir.empty();
  if (csv == folders) return InvalidArgument("give either --csv (with --images) or --folders");
  if (csv && c.images_dir.empty()) return InvalidArgument("--csv needs --images DIR");
  if (c.out_path.empty()) return InvalidArgument("--out is required");
  if (c.image_size < 8 || c.image_size > 4096) {
    return InvalidArgument("--size " + std::to_string(c.image_size) + " is outside [8, 4096]");
  }
  if (c.max_pixels < 1) return InvalidArgument("--max-pixels must be positive");
  if (c.pad_value < 0 || c.pad_value > 255)
    return InvalidArgument("--pad-value is outside [0, 255]");
  if (!(c.split.test_fraction >= 0 && c.split.test_fraction < 1 && c.split.val_fraction >= 0 &&
        c.split.val_fraction < 1)) {
    return InvalidArgument("--test-fraction and --val-fraction must lie in [0, 1)");
  }
  if (c.threads < 0) {
    return InvalidArgument("--threads " + std::to_string(c.threads) +
                           " is negative (0 = all cores)");
  }
  if (c.near_duplicate_distance > 64) {
    return InvalidArgument("--near-dup-distance " + std::to_string(c.near_duplicate_distance) +
                           " is above 64, the bits of a dHash (< 0 = off)");
  }
  return Status::Ok();
}

// effnet-prepare replaces only its own outputs: none of <out> and its side files may be an input,
// and an existing <out> must be an effnet store.
Status CheckOutputs(const PrepareConfig& c, const std::vector<Candidate>& cands) {
  std::vector<std::pair<dev_t, ino_t>> outputs;
  for (const std::string& out :
       {c.out_path, c.out_path + ".rejected.csv", c.out_path + ".duplicates.csv"}) {
    struct stat st {};
    if (::stat(out.c_str(), &st) == 0) outputs.emplace_back(st.st_dev, st.st_ino);
  }
  if (outputs.empty()) return Status::Ok();
  auto is_output = [&](const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return false;
    return std::find(outputs.begin(), outputs.end(), std::make_pair(st.st_dev, st.st_ino)) !=
           outputs.end();
  };
  if (!c.csv_path.empty() && is_output(c.csv_path)) {
    return InvalidArgument("--csv " + c.csv_path + " is one of the outputs of --out " + c.out_path +
                           "; refusing to write over an input");
  }
  for (const auto& cand : cands) {
    if (is_output(cand.path)) {
      return InvalidArgument("input image " + cand.path + " (row " + std::to_string(cand.row) +
                             ") is one of the outputs of --out " + c.out_path +
                             "; refusing to write over an input");
    }
  }
  return CheckReplaceableStore(c.out_path);
}

std::string SettingsJson(const PrepareConfig& c, const PrepareSummary& s) {
  nlohmann::json j;
  j["tool"] = "effnet-prepare";
  if (!c.csv_path.empty()) {
    j["input"] = {{"kind", "csv"},
                  {"csv", ToUtf8(c.csv_path)},
                  {"images", ToUtf8(c.images_dir)},
                  {"label_column", c.label_column},
                  {"image_column", c.image_column}};
  } else {
    j["input"] = {{"kind", "folders"}, {"folders", ToUtf8(c.folders_dir)}};
  }
  j["image_size"] = c.image_size;
  j["resize"] = ResizeModeName(c.resize);
  j["pad_value"] = c.pad_value;
  j["seed"] = c.split.seed;
  j["test_fraction"] = c.split.test_fraction;
  j["val_fraction"] = c.split.val_fraction;
  j["augment_offline"] = c.augment_offline;
  j["max_pixels"] = c.max_pixels;
  j["near_duplicate_distance"] = c.near_duplicate_distance;
  j["candidates"] = s.candidates;
  j["stored_originals"] = s.stored_originals;
  j["stored_total"] = s.stored_total;
  j["rejected"] = s.rejections.size();
  j["exact_duplicate_groups"] = s.exact_duplicate_groups;
  j["near_duplicate_pairs_across_splits"] = s.near_duplicate_pairs;
  j["split_warnings"] = nlohmann::json::array();
  for (const auto& w : s.warnings) j["split_warnings"].push_back(ToUtf8(w));
  return j.dump();
}

// The decode result for one candidate.
struct Decoded {
  bool ok = false;
  std::string reason;
  cv::Mat stored;  // S x S x 3 RGB
  uint64_t content_hash = 0, phash = 0;
};

Decoded DecodeCandidate(const Candidate& cand, const PrepareConfig& c) {
  Decoded d;
  if (!cand.early_rejection.empty()) {
    d.reason = cand.early_rejection;
    return d;
  }
  try {
    auto img = DecodeImageFile(cand.path, c.max_pixels, c.image_size, c.resize);
    if (!img.ok()) {
      d.reason = img.status().message();
      return d;
    }
    d.stored = ResizeForStore(img->rgb, c.image_size, c.resize, c.pad_value, img->full_size);
    d.content_hash = img->content_hash;
    d.phash = PerceptualHash(img->rgb);
    d.ok = true;
  } catch (const std::exception& e) {  // cv::Exception, std::bad_alloc on a huge image
    d = Decoded{};
    d.reason = std::string("decoder error: ") + e.what();
  }
  return d;
}

// Note [ordered decode]: workers decode candidates in any order, but the writer appends them in
// input order, so the file (and the split, which depends on the order) is the same for any
// thread count. A window of slots bounds memory: a worker may run at most `window` items ahead
// of the writer.
class OrderedDecoder {
 public:
  OrderedDecoder(const std::vector<Candidate>& cands, const PrepareConfig& c, int threads)
      : cands_(cands), config_(c), window_(static_cast<size_t>(threads) * 4), slots_(window_) {
    for (int t = 0; t < threads; ++t) workers_.emplace_back([this] { Work(); });
  }
  ~OrderedDecoder() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  // Result for candidate i; call with i = 0, 1, 2, ... in order.
  Decoded Take(size_t i) {
    std::unique_lock<std::mutex> lock(mu_);
    auto& slot = slots_[i % window_];
    cv_.wait(lock, [&] { return slot.has_value(); });
    Decoded d = std::move(*slot);
    slot.reset();
    taken_ = i + 1;
    cv_.notify_all();
    return d;
  }

 private:
  void Work() {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || next_ >= cands_.size() || next_ < taken_ + window_; });
        if (stop_ || next_ >= cands_.size()) return;
        i = next_++;
      }
      Decoded d = DecodeCandidate(cands_[i], config_);
      {
        std::lock_guard<std::mutex> lock(mu_);
        slots_[i % window_] = std::move(d);
      }
      cv_.notify_all();
    }
  }

  const std::vector<Candidate>& cands_;
  const PrepareConfig& config_;
  const size_t window_;
  std::vector<std::optional<Decoded>> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t next_ = 0, taken_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// Restores OpenCV's own thread count on scope exit; our pool already uses every core.
struct OpenCvThreadsGuard {
  int saved = cv::getNumThreads();
  OpenCvThreadsGuard() { cv::setNumThreads(1); }
  ~OpenCvThreadsGuard() { cv::setNumThreads(saved); }
};

// Removes the temporary output unless released.
struct TempFileGuard {
  std::string path;
  ~TempFileGuard() {
    if (!path.empty()) std::remove(path.c_str());
  }
};

void Augment(const cv::Mat& src, layout::Augmentation a, cv::Mat* dst) {
  switch (a) {
    case layout::Augmentation::kHFlip:
      cv::flip(src, *dst, 1);
      break;
    case layout::Augmentation::kVFlip:
      cv::flip(src, *dst, 0);
      break;
    case layout::Augmentation::kRot90:
      cv::rotate(src, *dst, cv::ROTATE_90_CLOCKWISE);
      break;
    case layout::Augmentation::kNone:
      src.copyTo(*dst);
      break;
  }
}

}  // namespace

Result<PrepareSummary> RunPrepare(const PrepareConfig& c) {
  EFFNET_RETURN_IF_ERROR(ValidateConfig(c));
  const auto t0 = std::chrono::steady_clock::now();
  PrepareSummary summary;
  std::vector<Candidate> cands;
  if (!c.csv_path.empty()) {
    EFFNET_ASSIGN_OR_RETURN(cands, CollectCsv(c));
  } else {
    EFFNET_ASSIGN_OR_RETURN(cands, CollectFolders(c.folders_dir));
  }
  if (cands.empty()) return InvalidArgument("no input images (empty CSV or folders)");
  summary.candidates = static_cast<int64_t>(cands.size());
  EFFNET_RETURN_IF_ERROR(CheckOutputs(c, cands));

  const std::string tmp = TempPathFor(c.out_path);
  TempFileGuard guard{tmp};
  RemoveOnSignal remove_on_signal(tmp);  // Ctrl-C and kill leave no temporary file either
  EFFNET_ASSIGN_OR_RETURN(auto writer, DatasetWriter::Create(tmp, c.image_size));

  // Per stored image, in append order.
  std::vector<std::string> label_names, paths;
  std::vector<uint64_t> hashes, phashes;
  {
    const int threads =
        c.threads > 0 ? c.threads : std::max(1u, std::thread::hardware_concurrency());
    log::Info("decoding " + std::to_string(cands.size()) + " images on " + std::to_string(threads) +
              " threads to " + std::to_string(c.image_size) + " px (" + ResizeModeName(c.resize) +
              ")");
    OpenCvThreadsGuard cv_threads;
    ProgressOptions po;
    po.label = "decode";
    po.unit = "img";
    po.tty = c.progress_tty;
    Progress progress(static_cast<int64_t>(cands.size()), po);
    OrderedDecoder decoder(cands, c, threads);
    for (size_t i = 0; i < cands.size(); ++i) {
      Decoded d = decoder.Take(i);
      progress.Add(1);
      if (!d.ok) {
        const Candidate& cand = cands[i];
        log::Warn("rejected row " + std::to_string(cand.row) +
                  (cand.line ? " (line " + std::to_string(cand.line) + ")" : std::string()) + ", " +
                  cand.path + ": " + d.reason);
        summary.rejections.push_back({cand.row, cand.line, cand.path, d.reason});
        continue;
      }
      Status st = writer->Append(d.stored.ptr<uint8_t>());
      if (!st.ok()) return st.WithContext("writing " + tmp);
      label_names.push_back(cands[i].label);
      paths.push_back(cands[i].path);
      hashes.push_back(d.content_hash);
      phashes.push_back(d.phash);
    }
    progress.Finish();
    summary.decode_seconds = progress.elapsed_s();
  }
  const int64_t n = writer->num_images();
  summary.stored_originals = n;

  // Rejection list: written whatever happens next, so a --strict failure can be inspected.
  summary.rejected_csv = c.out_path + ".rejected.csv";
  {
    std::string text = CsvRecord({"row", "line", "file", "reason"});
    for (const auto& r : summary.rejections) {
      text += CsvRecord({std::to_string(r.row), std::to_string(r.line), r.file, r.reason});
    }
    EFFNET_RETURN_IF_ERROR(WriteFileAtomic(summary.rejected_csv, text));
  }
  if (!summary.rejections.empty()) {
    log::Warn(std::to_string(summary.rejections.size()) + " of " + std::to_string(cands.size()) +
              " inputs rejected; listed in " + summary.rejected_csv);
    if (c.strict) {
      return FailedPrecondition("--strict: " + std::to_string(summary.rejections.size()) +
                                " inputs rejected (see " + summary.rejected_csv +
                                "); no output written");
    }
  }
  if (n == 0) return InvalidArgument("no image could be decoded; no output written");

  // Classes: sorted names of the stored images.
  std::set<std::string> name_set(label_names.begin(), label_names.end());
  summary.class_names.assign(name_set.begin(), name_set.end());
  std::map<std::string, int32_t> class_index;
  for (size_t k = 0; k < summary.class_names.size(); ++k) {
    class_index[summary.class_names[k]] = static_cast<int32_t>(k);
  }
  std::vector<int32_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[i] = class_index[label_names[i]];

  // Exact duplicates are grouped before splitting (Note [duplicate leak]).
  const std::vector<int64_t> groups = GroupByHash(hashes);
  EFFNET_ASSIGN_OR_RETURN(std::vector<Split> splits, StratifiedSplit(labels, groups, c.split));
  const auto dup_groups = ExactDuplicateGroups(hashes);
  summary.exact_duplicate_groups = static_cast<int64_t>(dup_groups.size());
  // Note [capped report]: at most duplicates_report_limit exact groups and as many near pairs
  // (the closest first) go to <out>.duplicates.csv, then one "exact-omitted" / "near-omitted" row
  // with the number left out, so the file stays small for any data set; the log names 20 of each.
  const size_t max_groups = static_cast<size_t>(std::max<int64_t>(0, c.duplicates_report_limit));
  const size_t max_pairs = max_groups, max_logged = 20;
  std::string dup_text =
      CsvRecord({"kind", "group", "index", "split", "label", "file", "distance"});
  for (size_t g = 0; g < dup_groups.size(); ++g) {
    std::string names;
    bool conflict = false;
    for (int64_t m : dup_groups[g].members) {
      names += (names.empty() ? "" : ", ") + paths[m];
      conflict |= labels[m] != labels[dup_groups[g].members.front()];
      if (g < max_groups) {
        dup_text += CsvRecord({"exact", std::to_string(g), std::to_string(m), SplitName(splits[m]),
                               label_names[m], paths[m], "0"});
      }
    }
    summary.exact_duplicate_images += static_cast<int64_t>(dup_groups[g].members.size());
    summary.label_conflict_groups += conflict ? 1 : 0;
    if (g < max_logged || conflict) {
      log::Warn("identical images (kept in split " +
                std::string(SplitName(splits[dup_groups[g].members.front()])) + ")" +
                (conflict ? " WITH DIFFERENT LABELS" : "") + ": " + names);
    }
  }
  if (dup_groups.size() > max_groups) {
    dup_text += CsvRecord(
        {"exact-omitted", std::to_string(dup_groups.size() - max_groups), "", "", "", "", ""});
  }
  auto near = NearDuplicatesAcrossSplits(phashes, hashes, splits, c.near_duplicate_distance);
  summary.near_duplicate_pairs = static_cast<int64_t>(near.size());
  std::stable_sort(near.begin(), near.end(), [](const auto& p, const auto& q) {
    return p.distance < q.distance;  // closest first; (a, b) order within a distance
  });
  for (size_t k = 0; k < near.size() && k < max_pairs; ++k) {
    const auto& p = near[k];
    for (int64_t m : {p.a, p.b}) {
      dup_text += CsvRecord({"near", std::to_string(k), std::to_string(m), SplitName(splits[m]),
                             label_names[m], paths[m], std::to_string(p.distance)});
    }
    if (k < max_logged) {
      log::Warn("near-duplicates across splits (dHash distance " + std::to_string(p.distance) +
                "): " + paths[p.a] + " [" + SplitName(splits[p.a]) + "] ~ " + paths[p.b] + " [" +
                SplitName(splits[p.b]) + "]");
    }
  }
  if (near.size() > max_pairs) {
    dup_text +=
        CsvRecord({"near-omitted", std::to_string(near.size() - max_pairs), "", "", "", "", ""});
  }
  if (dup_groups.size() > max_logged || near.size() > max_logged) {
    log::Warn(std::to_string(dup_groups.size()) + " groups of identical images and " +
              std::to_string(near.size()) + " near-duplicate pairs across splits in all; " +
              "the log names at most " + std::to_string(max_logged) + " of each");
  }
  summary.duplicates_csv = c.out_path + ".duplicates.csv";
  EFFNET_RETURN_IF_ERROR(WriteFileAtomic(summary.duplicates_csv, dup_text));

  StoreMetadata meta;
  meta.class_names = summary.class_names;
  meta.labels = labels;
  meta.splits = splits;
  for (auto& p : paths) p = ToUtf8(p);  // Note [text encoding]: stored text is UTF-8
  meta.source_paths = paths;
  meta.content_hash = hashes;
  meta.perceptual_hash = phashes;
  meta.origin.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) meta.origin[i] = i;
  meta.augmentation.assign(static_cast<size_t>(n), layout::Augmentation::kNone);

  if (c.augment_offline) {
    // Copies of train and val images only; a copy shares its original's split, label and hashes,
    // so it can never leak into test.
    cv::Mat src(c.image_size, c.image_size, CV_8UC3), dst;
    for (int64_t i = 0; i < n; ++i) {
      if (splits[i] == Split::kTest) continue;
      EFFNET_RETURN_IF_ERROR(writer->ReadBack(i, src.ptr<uint8_t>()));
      for (auto a : {layout::Augmentation::kHFlip, layout::Augmentation::kVFlip,
                     layout::Augmentation::kRot90}) {
        Augment(src, a, &dst);
        if (!dst.isContinuous()) dst = dst.clone();
        EFFNET_RETURN_IF_ERROR(writer->Append(dst.ptr<uint8_t>()));
        meta.labels.push_back(labels[i]);
        meta.splits.push_back(splits[i]);
        meta.source_paths.push_back(paths[i]);
        meta.content_hash.push_back(hashes[i]);
        meta.perceptual_hash.push_back(phashes[i]);
        meta.origin.push_back(i);
        meta.augmentation.push_back(a);
      }
    }
  }
  summary.stored_total = writer->num_images();
  summary.counts.assign(summary.class_names.size(), {0, 0, 0});
  for (size_t i = 0; i < meta.labels.size(); ++i) {
    summary.counts[meta.labels[i]][static_cast<int>(meta.splits[i])] += 1;
  }
  // Note [short splits] in storage/splits.h: said here, once, with the consequence.
  summary.warnings = SplitWarnings(summary.class_names, summary.counts, c.split);
  for (const auto& w : summary.warnings) log::Warn(w);
  meta.prepare_settings_json = SettingsJson(c, summary);
  EFFNET_RETURN_IF_ERROR(writer->Finish(meta).WithContext("finishing " + tmp));
  writer.reset();
  EFFNET_RETURN_IF_ERROR(CommitTempFile(tmp, c.out_path));
  guard.path.clear();
  summary.total_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return summary;
}

}  // namespace effnet::storage
