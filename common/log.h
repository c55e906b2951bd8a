// Logging facade. spdlog stays behind this header (docs/build-notes.md trap 1: the torch wheel's
// fmt 12 headers shadow Debian's fmt 9 that spdlog was built for), so any target, including
// those that see Torch's include directories, can log.
#pragma once

#include <string>

namespace effnet::log {

enum class Level { kDebug, kInfo, kWarn, kError };

// Process-wide settings. `tag` prefixes every line (e.g. "rank 1"); level from EFFNET_LOG_LEVEL
// (debug|info|warn|error) unless set here.
void SetTag(const std::string& tag);
void SetLevel(Level level);
bool Enabled(Level level);
// The terminal (stderr) shows `level` and above only; the process level (SetLevel) still decides
// what a log file gets. Ranks other than 0 set kWarn so that mpirun shows one copy of each line.
void SetTerminalLevel(Level level);
// Every line of the process level goes to `path` too (appended; its folders are created).
// Returns false with `error` set when the file cannot be opened.
bool AlsoLogToFile(const std::string& path, std::string* error);

void Debug(const std::string& msg);
void Info(const std::string& msg);
void Warn(const std::string& msg);
void Error(const std::string& msg);

}  // namespace effnet::log
