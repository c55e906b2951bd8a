// Storage throughput: (a) effnet-prepare on a real data set, (b) the reader's random batches from
// the page cache next to a plain mmap + memcpy of the same bytes. Writes a JSON summary.
// With --scaling N1,N2,...: only (c) the scaling series instead: effnet-synth, effnet-prepare and
// effnet-inspect on N generated 32 px images each, seconds and peak memory per stage.
#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "common/atomic_file.h"
#include "storage/dataset_reader.h"
#include "storage/splits.h"
#include "storage/writer.h"

namespace fs = std::filesystem;
using effnet::storage::DatasetReader;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double ChildCpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_CHILDREN, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// A store of `n` random-ish images of `size` px at `path` (content does not matter for reads).
void MakeStore(const std::string& path, int64_t n, int size) {
  auto w = effnet::storage::DatasetWriter::Create(path, size).ValueOrThrow();
  std::vector<uint8_t> img(w->image_bytes());
  effnet::storage::StoreMetadata m;
  m.class_names = {"a", "b"};
  effnet::SplitMix64 g(1);
  for (int64_t i = 0; i < n; ++i) {
    for (size_t k = 0; k < img.size(); k += 8) {
      const uint64_t v = g.Next();
      std::memcpy(img.data() + k, &v, std::min<size_t>(8, img.size() - k));
    }
    effnet::ThrowIfError(w->Append(img.data()));
    m.labels.push_back(static_cast<int32_t>(i % 2));
    m.splits.push_back(effnet::storage::Split::kTrain);
    m.source_paths.push_back("synthetic");
    m.content_hash.push_back(static_cast<uint64_t>(i));
    m.perceptual_hash.push_back(0);
  }
  effnet::ThrowIfError(w->Finish(m));
}

// Reads the whole file once so that it is in the page cache.
void Warm(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  std::vector<char> buf(1 << 22);
  while (::read(fd, buf.data(), buf.size()) > 0) {
  }
  ::close(fd);
}

struct StageRun {
  double seconds = 0;
  double max_rss_mib = 0;  // ru_maxrss of the child
  std::string output;      // stdout and stderr
};

// Runs argv[0] with its output to a file; wall seconds and the child's own peak RSS (wait4).
StageRun RunStage(const std::vector<std::string>& args, const std::string& log_path) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  StageRun r;
  const auto t0 = Clock::now();
  pid_t pid = 0;
  const int err = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) throw std::runtime_error(args[0] + ": cannot start: " + std::strerror(err));
  int status = 0;
  rusage u{};
  if (::wait4(pid, &status, 0, &u) != pid) throw std::runtime_error(args[0] + ": wait4 failed");
  r.seconds = Seconds(t0, Clock::now());
  r.max_rss_mib = u.ru_maxrss / 1024.0;
  std::ifstream in(log_path);
  std::stringstream ss;
  ss << in.rdbuf();
  r.output = ss.str();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error(args[0] + " failed (see " + log_path + "):\n" + r.output);
  }
  return r;
}

double FindNumber(const std::string& text, const std::string& pattern) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(pattern))) {
    throw std::runtime_error("pattern '" + pattern + "' not in:\n" + text);
  }
  return std::stod(m[1]);
}

// (c) The scaling series: per N, effnet-synth writes N 32 px JPEGs (7 classes), effnet-prepare
// stores them (decode, then dedup + split + metadata), effnet-inspect reads the store and runs
// the near-duplicate search. Growth per doubling: (s/img at N2 / s/img at N1)^(1 / log2(N2/N1)).
// `save` gets the points so far after each one, before its files are deleted (deleting 320k
// files took over 10 minutes on a loaded machine).
nlohmann::json RunScaling(const std::vector<int64_t>& sizes, const std::string& bin_dir,
                          const std::string& tmp_dir, int threads,
                          const std::function<void(const nlohmann::json&)>& save) {
  nlohmann::json points = nlohmann::json::array();
  std::printf("(c) scaling: effnet-prepare on generated 32 px JPEGs, %d decode threads, %u cores\n",
              threads, std::thread::hardware_concurrency());
  std::printf("%9s | %8s %8s | %8s %8s %8s %8s %8s | %8s %8s\n", "images", "synth s", "MiB",
              "prep s", "decode s", "rest s", "MiB", "us/img", "inspect", "MiB");
  for (int64_t n : sizes) {
    const std::string dir = tmp_dir + "/bench_scaling_" + std::to_string(n);
    fs::remove_all(dir);
    fs::create_directories(dir);
    const int64_t per_class = (n + 6) / 7;
    double load[3] = {0, 0, 0};  // other users of the machine skew the numbers
    ::getloadavg(load, 3);
    const StageRun synth =
        RunStage({bin_dir + "/effnet-synth", "--out", dir + "/data", "--per-class",
                  std::to_string(per_class), "--size", "32", "--seed", "1"},
                 dir + "/synth.log");
    const std::string store = dir + "/store.h5";
    const StageRun prep =
        RunStage({bin_dir + "/effnet-prepare", "--csv", dir + "/data/synth.csv", "--images",
                  dir + "/data/images", "--out", store, "--size", "32", "--threads",
                  std::to_string(threads), "--progress", "lines"},
                 dir + "/prepare.log");
    const double decode_s = FindNumber(prep.output, R"(decode [0-9.]+ img/s \(([0-9.]+) s\))");
    const double total_s = FindNumber(prep.output, R"(, total ([0-9.]+) s)");
    const StageRun insp = RunStage({bin_dir + "/effnet-inspect", store}, dir + "/inspect.log");
    const int64_t images = per_class * 7;
    const double us_per_img = prep.seconds / static_cast<double>(images) * 1e6;
    std::printf("%9lld | %8.2f %8.1f | %8.2f %8.2f %8.2f %8.1f %8.1f | %8.2f %8.1f  load %.2f\n",
                static_cast<long long>(images), synth.seconds, synth.max_rss_mib, prep.seconds,
                decode_s, total_s - decode_s, prep.max_rss_mib, us_per_img, insp.seconds,
                insp.max_rss_mib, load[0]);
    std::fflush(stdout);
    points.push_back({{"images", images},
                      {"load_average_before", std::vector<double>(load, load + 3)},
                      {"synth", {{"seconds", synth.seconds}, {"max_rss_mib", synth.max_rss_mib}}},
                      {"prepare",
                       {{"seconds", prep.seconds},
                        {"decode_seconds", decode_s},
                        {"after_decode_seconds", total_s - decode_s},
                        {"max_rss_mib", prep.max_rss_mib},
                        {"us_per_image", us_per_img}}},
                      {"inspect", {{"seconds", insp.seconds}, {"max_rss_mib", insp.max_rss_mib}}}});
    save(points);
    fs::remove_all(dir);
  }
  for (size_t k = 1; k < points.size(); ++k) {
    const auto &a = points[k - 1], &b = points[k];
    const double doublings = std::log2(b["images"].get<double>() / a["images"].get<double>());
    const double growth = std::pow(
        b["prepare"]["us_per_image"].get<double>() / a["prepare"]["us_per_image"].get<double>(),
        1.0 / doublings);
    points[k]["prepare"]["us_per_image_growth_per_doubling"] = growth;
    std::printf("    %lld -> %lld images: effnet-prepare seconds per image x %.3f per doubling\n",
                static_cast<long long>(a["images"].get<int64_t>()),
                static_cast<long long>(b["images"].get<int64_t>()), growth);
  }
  return points;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_json = "bench/results/storage.json", prepare_bin, data_dir, tmp_dir = "/tmp";
  int64_t num_images = 2048;
  int size = 224, batch = 256, rounds = 30, scaling_threads = 2;
  std::vector<int64_t> scaling;
  std::string bin_dir;
  CLI::App app{"bench_storage: effnet-prepare img/s on real data and reader img/s vs mmap+memcpy"};
  app.add_option("--out", out_json, "JSON result file")->capture_default_str();
  app.add_option("--prepare-bin", prepare_bin, "effnet-prepare to time (empty: skip part a)");
  app.add_option("--data", data_dir, "folder with the Flipkart CSV and images/ (absent: skip a)");
  app.add_option("--tmp", tmp_dir, "scratch folder")->capture_default_str();
  app.add_option("--images", num_images, "images in the synthetic store")->capture_default_str();
  app.add_option("--size", size, "image size")->capture_default_str();
  app.add_option("--batch", batch, "batch size")->capture_default_str();
  app.add_option("--rounds", rounds, "random batches per method")->capture_default_str();
  app.add_option("--scaling", scaling, "only the scaling series: image counts, e.g. 5000,20000")
      ->delimiter(',');
  app.add_option("--bin-dir", bin_dir, "folder of effnet-synth/-prepare/-inspect (--scaling)");
  app.add_option("--scaling-threads", scaling_threads, "effnet-prepare --threads in --scaling")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  nlohmann::json j;
  j["host_cores"] = std::thread::hardware_concurrency();
  if (!scaling.empty()) {
    try {
      j["scaling"] =
          RunScaling(scaling, bin_dir, tmp_dir, scaling_threads, [&](const nlohmann::json& p) {
            nlohmann::json partial = j;
            partial["scaling"] = p;
            effnet::ThrowIfError(effnet::WriteFileAtomic(out_json, partial.dump(2) + "\n"));
          });
      j["load_average_after"] = [] {
        double la[3] = {0, 0, 0};
        ::getloadavg(la, 3);
        return std::vector<double>(la, la + 3);
      }();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench_storage: %s\n", e.what());
      return 1;
    }
    effnet::ThrowIfError(effnet::WriteFileAtomic(out_json, j.dump(2) + "\n"));
    std::printf("wrote %s\n", out_json.c_str());
    return 0;
  }

  // (a) effnet-prepare on the real data.
  const std::string csv = data_dir + "/flipkart_com-ecommerce_sample_1050.csv";
  if (!prepare_bin.empty() && !data_dir.empty() && fs::exists(csv)) {
    const std::string out = tmp_dir + "/bench_storage_flipkart.h5";
    const std::string cmd = prepare_bin + " --csv " + csv + " --images " + data_dir +
                            "/images --out " + out + " --progress lines >/dev/null 2>&1";
    std::vector<double> secs, cpu;
    for (int run = 0; run < 2; ++run) {  // the first run also warms the JPEGs into the cache
      const double c0 = ChildCpuSeconds();
      const auto t0 = Clock::now();
      const int rc = std::system(cmd.c_str());
      secs.push_back(Seconds(t0, Clock::now()));
      cpu.push_back(ChildCpuSeconds() - c0);
      if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
        std::fprintf(stderr, "bench_storage: %s failed\n", cmd.c_str());
        return 1;
      }
    }
    auto r = DatasetReader::Open(out).ValueOrThrow();
    const double best = std::min(secs[0], secs[1]);
    const int64_t inputs = 1050;
    j["prepare"] = {{"images_stored", r->info().num_images},
                    {"inputs", inputs},
                    {"seconds_first_run", secs[0]},
                    {"seconds_best", best},
                    {"img_per_s", inputs / best},
                    {"cpu_seconds_last_run", cpu[1]},
                    {"img_per_cpu_s", inputs / cpu[1]},
                    {"image_size", r->info().image_size}};
    std::printf(
        "(a) effnet-prepare, real data: %lld inputs -> %lld stored at %d px in %.2f s: "
        "%.1f img/s end to end (%u cores; first run %.2f s); %.1f CPU-s = %.1f img per CPU-s\n",
        static_cast<long long>(inputs), static_cast<long long>(r->info().num_images),
        r->info().image_size, best, inputs / best, std::thread::hardware_concurrency(), secs[0],
        cpu[1], inputs / cpu[1]);
    r.reset();
    fs::remove(out);
    fs::remove(out + ".rejected.csv");
    fs::remove(out + ".duplicates.csv");
  } else {
    std::printf("(a) effnet-prepare: skipped (no --prepare-bin or %s absent)\n", csv.c_str());
    j["prepare"] = "skipped: data absent";
  }

  // (b) random batches from the page cache.
  const std::string store = tmp_dir + "/bench_storage_" + std::to_string(size) + ".h5";
  MakeStore(store, num_images, size);
  Warm(store);
  const auto offsets = effnet::storage::ImageFileOffsets(store).ValueOrThrow();
  const size_t bytes = static_cast<size_t>(size) * size * 3;
  const size_t file_size = fs::file_size(store);
  int fd = ::open(store.c_str(), O_RDONLY);
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  const auto to0 = Clock::now();
  auto direct = DatasetReader::Open(store).ValueOrThrow();
  const double open_s = Seconds(to0, Clock::now());
  effnet::storage::ReaderOptions hyper_opts;
  hyper_opts.direct_reads = false;
  auto hyper = DatasetReader::Open(store, hyper_opts).ValueOrThrow();

  std::vector<uint8_t> dst(static_cast<size_t>(batch) * bytes);
  effnet::SplitMix64 g(42);
  std::vector<double> t_direct, t_hyper, t_mmap;
  auto random_batch = [&] {
    std::vector<int64_t> idx(static_cast<size_t>(batch));
    for (auto& i : idx) i = static_cast<int64_t>(g.Below(static_cast<uint64_t>(num_images)));
    return idx;
  };
  for (int r = 0; r < rounds + 2; ++r) {  // the first 2 rounds warm up and are dropped
    const auto idx = random_batch();
    auto t0 = Clock::now();
    for (size_t k = 0; k < idx.size(); ++k) {
      std::memcpy(dst.data() + k * bytes,
                  static_cast<const uint8_t*>(map) + offsets[static_cast<size_t>(idx[k])], bytes);
    }
    auto t1 = Clock::now();
    effnet::ThrowIfError(direct->ReadImages(idx, dst.data()));
    auto t2 = Clock::now();
    effnet::ThrowIfError(hyper->ReadImages(idx, dst.data()));
    auto t3 = Clock::now();
    if (r < 2) continue;
    t_mmap.push_back(batch / Seconds(t0, t1));
    t_direct.push_back(batch / Seconds(t1, t2));
    t_hyper.push_back(batch / Seconds(t2, t3));
  }
  // Prefetcher: consumer does nothing, so this is the reader thread's rate plus hand-over.
  std::vector<std::vector<int64_t>> batches;
  for (int r = 0; r < rounds; ++r) batches.push_back(random_batch());
  auto tp0 = Clock::now();
  {
    effnet::storage::BatchPrefetcher pf(*direct, batches, 2);
    effnet::storage::BatchPrefetcher::Batch b;
    while (pf.Next(&b).value()) {
    }
  }
  const double prefetch_rate = rounds * batch / Seconds(tp0, Clock::now());
  ::munmap(map, file_size);
  ::close(fd);
  direct.reset();
  hyper.reset();
  fs::remove(store);

  const double mmap_rate = Median(t_mmap), direct_rate = Median(t_direct),
               hyper_rate = Median(t_hyper);
  j["reader"] = {{"image_size", size},
                 {"batch", batch},
                 {"store_images", num_images},
                 {"rounds", rounds},
                 {"open_seconds", open_s},
                 {"mmap_memcpy_img_per_s", mmap_rate},
                 {"reader_direct_img_per_s", direct_rate},
                 {"reader_hdf5_hyperslab_img_per_s", hyper_rate},
                 {"prefetcher_img_per_s", prefetch_rate},
                 {"ratio_direct_vs_mmap", direct_rate / mmap_rate},
                 {"ratio_hyperslab_vs_mmap", hyper_rate / mmap_rate},
                 {"target_ratio", 0.5}};
  std::printf(
      "(b) random batches of %d at %d px from the page cache (median of %d):\n"
      "    mmap+memcpy      %10.0f img/s  %6.2f GB/s\n"
      "    reader (direct)  %10.0f img/s  %6.2f GB/s  ratio %.2f (target >= 0.50)\n"
      "    reader (HDF5)    %10.0f img/s  %6.2f GB/s  ratio %.2f\n"
      "    prefetcher       %10.0f img/s\n"
      "    DatasetReader::Open of %lld images: %.3f s\n",
      batch, size, rounds, mmap_rate, mmap_rate * bytes / 1e9, direct_rate,
      direct_rate * bytes / 1e9, direct_rate / mmap_rate, hyper_rate, hyper_rate * bytes / 1e9,
      hyper_rate / mmap_rate, prefetch_rate, static_cast<long long>(num_images), open_s);
  fs::create_directories(
      fs::path(out_json).parent_path().empty() ? "." : fs::path(out_json).parent_path());
  effnet::ThrowIfError(effnet::WriteFileAtomic(out_json, j.dump(2) + "\n"));
  std::printf("wrote %s\n", out_json.c_str());
  return 0;
}
