// The only translation unit that includes spdlog; compiled without Torch's include directories.
#include "common/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

namespace effnet::log {
namespace {

std::shared_ptr<spdlog::logger> Logger() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::stderr_color_mt("effnet");
    l->set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
    const char* env = std::getenv("EFFNET_LOG_LEVEL");
    std::string lv = env ? env : "info";
    l->set_level(lv == "debug"   ? spdlog::level::debug
                 : lv == "warn"  ? spdlog::level::warn
                 : lv == "error" ? spdlog::level::err
                                 : spdlog::level::info);
    return l;
  }();
  return logger;
}

std::mutex g_tag_mu;
std::string g_tag;

std::string Tagged(const std::string& msg) {
  std::lock_guard<std::mutex> lock(g_tag_mu);
  return g_tag.empty() ? msg : "[" + g_tag + "] " + msg;
}

spdlog::level::level_enum ToSpd(Level level) {
  switch (level) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

void SetTag(const std::string& tag) {
  std::lock_guard<std::mutex> lock(g_tag_mu);
  g_tag = tag;
}
void SetLevel(Level level) { Logger()->set_level(ToSpd(level)); }
void SetTerminalLevel(Level level) { Logger()->sinks().front()->set_level(ToSpd(level)); }

bool AlsoLogToFile(const std::string& path, std::string* error) {
  try {
    const auto dir = std::filesystem::path(path).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir);
    auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
    sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
    Logger()->sinks().push_back(std::move(sink));
    return true;
  } catch (const std::exception& e) {
    if (error) *error = path + ": " + e.what();
    return false;
  }
}
bool Enabled(Level level) { return Logger()->should_log(ToSpd(level)); }

void Debug(const std::string& msg) { Logger()->debug("{}", Tagged(msg)); }
void Info(const std::string& msg) { Logger()->info("{}", Tagged(msg)); }
void Warn(const std::string& msg) { Logger()->warn("{}", Tagged(msg)); }
void Error(const std::string& msg) { Logger()->error("{}", Tagged(msg)); }

}  // namespace effnet::log
