// Atomic file output: write to "<path>.tmp.<pid>", fsync, rename over <path>.
//
// Note [atomic output]: a reader never sees a half-written file under the final name. An
// interrupted writer leaves only the temporary, which nothing reads, and the previous complete
// file (if any) stays intact.
#pragma once

#include <string>

#include "common/status.h"

namespace effnet {

// Temporary name used for `final_path` by this process.
std::string TempPathFor(const std::string& final_path);

// fsync the file, then rename it over `final_path` and fsync the directory.
Status CommitTempFile(const std::string& temp_path, const std::string& final_path);

// Writes `contents` atomically to `path`.
Status WriteFileAtomic(const std::string& path, const std::string& contents);

Result<std::string> ReadFile(const std::string& path);

}  // namespace effnet
