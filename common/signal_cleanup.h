// Removes a temporary file when the process is interrupted (SIGINT, SIGTERM, SIGHUP).
#pragma once

#include <string>

namespace effnet {

// While one exists, SIGINT/SIGTERM/SIGHUP unlink `path` and then end the process the way the
// signal would have (default action, re-raised), so `kill` and Ctrl-C leave no temporary file.
// One at a time per process; the previous handlers are restored on destruction.
class RemoveOnSignal {
 public:
  explicit RemoveOnSignal(const std::string& path);
  ~RemoveOnSignal();
  RemoveOnSignal(const RemoveOnSignal&) = delete;
  RemoveOnSignal& operator=(const RemoveOnSignal&) = delete;
};

}  // namespace effnet
