// Helpers of the tests that run the built tools (effnet-train, -prepare, -predict, ...).
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace effnet::testing {

// A tool of the build: $EFFNET_BIN_DIR/<name> (ctest sets it), else bin/<name>.
inline std::string Bin(const std::string& name) {
  const char* dir = std::getenv("EFFNET_BIN_DIR");
  return std::string(dir ? dir : "bin") + "/" + name;
}

// The whole file ("" when it cannot be read).
inline std::string Slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs `cmd` through the shell in `cwd` with stdout and stderr to `log`; returns the exit code
// (-1 when it did not exit normally).
inline int RunCmd(const std::string& cmd, const std::string& cwd, const std::string& log) {
  const std::string full = "cd '" + cwd + "' && " + cmd + " > '" + log + "' 2>&1";
  const int rc = std::system(full.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace effnet::testing
