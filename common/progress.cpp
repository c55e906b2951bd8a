#include "common/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "common/log.h"

namespace effnet {

Progress::Progress(int64_t total, ProgressOptions options)
    : total_(total),
      options_(std::move(options)),
      tty_(options_.tty < 0 ? ::isatty(STDERR_FILENO) == 1 : options_.tty == 1),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

Progress::~Progress() { Finish(); }

void Progress::Add(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ += n;
  if (finished_ || !options_.enabled) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_print_).count();
  if (since >= (tty_ ? options_.bar_interval_s : options_.line_interval_s)) {
    last_print_ = now;
    Print(false);
  }
}

void Progress::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  if (options_.enabled) Print(true);
}

int64_t Progress::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::Print(bool final_line) {
  const std::string line =
      Format(options_.label, options_.unit, done_, total_, elapsed_s(), options_.bar_width, tty_);
  if (tty_) {
    // \r returns to the line start, ESC[K clears what a longer previous line left.
    std::fprintf(stderr, "\r%s\x1b[K%s", line.c_str(), final_line ? "\n" : "");
    std::fflush(stderr);
  } else {
    log::Info(line);
  }
}

std::string Progress::FormatDuration(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[48];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

std::string Progress::Format(const std::string& label, const std::string& unit, int64_t done,
                             int64_t total, double elapsed_s, int bar_width, bool with_bar) {
  std::string out = label;
  const bool known = total > 0;
  const double frac = known ? std::min(1.0, static_cast<double>(done) / total) : 0.0;
  if (with_bar && known && bar_width > 0) {
    const int fill = static_cast<int>(frac * bar_width);
    out += (out.empty() ? "[" : " [") + std::string(fill, '#') +
           std::string(bar_width - fill, '-') + "]";
  }
  char buf[160];
  if (known) {
    std::snprintf(buf, sizeof(buf), " %lld/%lld %5.1f%%", static_cast<long long>(done),
                  static_cast<long long>(total), 100.0 * frac);
  } else {
    std::snprintf(buf, sizeof(buf), " %lld", static_cast<long long>(done));
  }
  out += buf;
  const double rate = elapsed_s > 0 ? done / elapsed_s : 0.0;
  std::snprintf(buf, sizeof(buf), "  %.1f %s/s", rate, unit.c_str());
  out += buf;
  if (known && done < total) {
    out += "  ETA " + (rate > 0 ? FormatDuration((total - done) / rate) : std::string("?"));
  } else {
    out += "  in " + FormatDuration(elapsed_s);
  }
  return out;
}

}  // namespace effnet
