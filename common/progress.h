// Progress reporting for long loops: a one-line bar with rate and ETA on a terminal, plain log
// lines (common/log.h) at a slower pace when stderr is not a TTY (CI logs, files, pipes).
//
//   ProgressOptions o; o.label = "decode"; o.unit = "img";
//   effnet::Progress p(total, o);
//   ... p.Add(1);   // from any thread
//   p.Finish();     // prints the final line; also done by the destructor
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace effnet {

struct ProgressOptions {
  std::string label;            // printed first
  std::string unit = "it";      // rate unit: "<unit>/s"
  int tty = -1;                 // -1: isatty(stderr); 0: plain lines; 1: bar
  double bar_interval_s = 0.1;  // redraw period of the bar
  double line_interval_s = 10;  // period of plain lines
  int bar_width = 30;
  bool enabled = true;  // false: print nothing at all
};

class Progress {
 public:
  // `total` <= 0: unknown (no bar, no ETA).
  explicit Progress(int64_t total, ProgressOptions options = {});
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Thread-safe.
  void Add(int64_t n = 1);
  // Prints the final line once (rate over the whole run). Idempotent.
  void Finish();
  int64_t done() const;
  double elapsed_s() const;

  // The text of one progress line, e.g.
  // "decode [###############---------------] 512/1024  50.0%  230.1 img/s  ETA 0:02".
  static std::string Format(const std::string& label, const std::string& unit, int64_t done,
                            int64_t total, double elapsed_s, int bar_width, bool with_bar);
  // "0:07", "1:02:03".
  static std::string FormatDuration(double seconds);

 private:
  void Print(bool final_line);  // requires mu_

  mutable std::mutex mu_;
  const int64_t total_;
  const ProgressOptions options_;
  const bool tty_;
  int64_t done_ = 0;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_print_;
};

}  // namespace effnet
