#include "common/signal_cleanup.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

namespace effnet {
namespace {

// Note [signal-safe cleanup]: the handler may only use async-signal-safe calls (unlink, signal,
// raise), so the path lives in a fixed buffer written before the handler is installed.
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
char g_path[4096];
std::atomic<bool> g_armed{false};
struct sigaction g_previous[3];

void OnSignal(int sig) {
  if (g_armed.exchange(false)) ::unlink(g_path);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

RemoveOnSignal::RemoveOnSignal(const std::string& path) {
  g_armed = false;  // the handler must not see a half-copied path
  const size_t n = std::min(path.size(), sizeof(g_path) - 1);
  std::memcpy(g_path, path.data(), n);
  g_path[n] = '\0';
  g_armed = path.size() < sizeof(g_path);
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &sa, &g_previous[i]);
}

RemoveOnSignal::~RemoveOnSignal() {
  g_armed = false;
  for (int i = 0; i < 3; ++i) ::sigaction(kSignals[i], &g_previous[i], nullptr);
}

}  // namespace effnet
