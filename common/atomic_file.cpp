#include "common/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace effnet {
namespace {

Status FsyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return Internal("open " + path + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Internal("fsync " + path + ": " + std::strerror(errno));
  return Status::Ok();
}

}  // namespace

std::string TempPathFor(const std::string& final_path) {
  return final_path + ".tmp." + std::to_string(::getpid());
}

Status CommitTempFile(const std::string& temp_path, const std::string& final_path) {
  EFFNET_RETURN_IF_ERROR(FsyncPath(temp_path, O_RDONLY));
  if (std::rename(temp_path.c_str(), final_path.c_str()) != 0) {
    return Internal("rename " + temp_path + " -> " + final_path + ": " + std::strerror(errno));
  }
  auto dir = std::filesystem::path(final_path).parent_path();
  if (dir.empty()) dir = ".";
  return FsyncPath(dir.string(), O_RDONLY | O_DIRECTORY);
}

Status WriteFileAtomic(const std::string& path, const std::string& contents) {
  const std::string tmp = TempPathFor(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Internal("cannot open " + tmp + " for writing: " + std::strerror(errno));
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    out.flush();
    if (!out) return Internal("write failed for " + tmp + ": " + std::strerror(errno));
  }
  return CommitTempFile(tmp, path);
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace effnet
