// TensorBoardWriter: appends TFRecord-framed Event protos to one event file.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>

#include "common/text.h"
#include "worker/report/report.h"
#include "worker/report/tfrecord.h"

namespace effnet::report {
namespace {

double WallTimeNow() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// Note [event file flushing]: records are buffered by stdio and flushed by Flush(), by the
// destructor, and at most kAutoFlushSeconds after a write, so a crashed run still leaves a
// readable file (TensorBoard ignores a truncated last record) without an fflush per scalar.
constexpr double kAutoFlushSeconds = 5.0;

class FileTensorBoardWriter final : public TensorBoardWriter {
 public:
  FileTensorBoardWriter(std::FILE* f, std::string path) : file_(f), path_(std::move(path)) {}
  ~FileTensorBoardWriter() override {
    if (file_ != nullptr) std::fclose(file_);
  }

  Status WriteEvent(const std::string& event, const std::string& what) {
    const std::string rec = EncodeTfRecord(event);
    if (std::fwrite(rec.data(), 1, rec.size(), file_) != rec.size()) {
      return Internal(path_ + ": writing " + what + ": " + std::strerror(errno));
    }
    const double now = WallTimeNow();
    if (now - last_flush_ >= kAutoFlushSeconds) return FlushLocked(now);
    return Status::Ok();
  }

  Status AddScalar(const std::string& tag, double value, int64_t step) override {
    if (tag.empty())
      return InvalidArgument(path_ + ": empty scalar tag at step " + std::to_string(step));
    std::lock_guard<std::mutex> lock(mu_);
    return WriteEvent(EncodeScalarEvent(WallTimeNow(), step, tag, static_cast<float>(value)),
                      "scalar '" + tag + "' at step " + std::to_string(step));
  }

  Status AddImage(const std::string& tag, const std::string& png, int width, int height,
                  int64_t step, const std::string& description) override {
    if (tag.empty())
      return InvalidArgument(path_ + ": empty image tag at step " + std::to_string(step));
    std::lock_guard<std::mutex> lock(mu_);
    return WriteEvent(EncodeImageEvent(WallTimeNow(), step, tag, png, width, height, description),
                      "image '" + tag + "' at step " + std::to_string(step));
  }

  Status AddHparams(const std::vector<HParam>& hparams, const std::vector<std::string>& metric_tags,
                    bool success) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& ev : EncodeHparamsEvents(WallTimeNow(), hparams, metric_tags, success)) {
      EFFNET_RETURN_IF_ERROR(WriteEvent(ev, "hparams"));
    }
    return Status::Ok();
  }

  Status Flush() override {
    std::lock_guard<std::mutex> lock(mu_);
    return FlushLocked(WallTimeNow());
  }

  std::string path() const override { return path_; }

 private:
  Status FlushLocked(double now) {
    last_flush_ = now;
    if (std::fflush(file_) != 0) return Internal(path_ + ": flush: " + std::strerror(errno));
    return Status::Ok();
  }

  std::mutex mu_;
  std::FILE* file_;
  std::string path_;
  double last_flush_ = 0;
};

}  // namespace

Result<std::unique_ptr<TensorBoardWriter>> TensorBoardWriter::Create(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Internal("creating TensorBoard directory " + dir + ": " + ec.message());
  const double now = WallTimeNow();
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "%010lld", static_cast<long long>(now));
  const std::string base = (std::filesystem::path(dir) /
                            ("events.out.tfevents." + std::string(stamp) + "." + HostName()))
                               .string();
  // Two writers started in the same second on one host (ranks, restarts) must not share a file:
  // "x" makes the open exclusive, and a taken name gets a ".<pid>.<n>" suffix.
  std::FILE* f = nullptr;
  std::string path = base;
  for (int n = 0; n < 100 && f == nullptr; ++n) {
    if (n > 0) path = base + "." + std::to_string(::getpid()) + "." + std::to_string(n);
    f = std::fopen(path.c_str(), "wbx");
    if (f == nullptr && errno != EEXIST) {
      return Internal("creating TensorBoard event file " + path + ": " + std::strerror(errno));
    }
  }
  if (f == nullptr) return Internal("creating TensorBoard event file " + base + ": name taken");
  auto writer = std::make_unique<FileTensorBoardWriter>(f, path);
  EFFNET_RETURN_IF_ERROR(
      writer->WriteEvent(EncodeFileVersionEvent(now, "brain.Event:2"), "file_version event"));
  EFFNET_RETURN_IF_ERROR(writer->Flush());
  return std::unique_ptr<TensorBoardWriter>(std::move(writer));
}

}  // namespace effnet::report
