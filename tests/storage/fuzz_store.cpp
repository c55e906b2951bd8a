// Mutation fuzzer of the HDF5 store reader (docs/fuzzing.md).
//
// Builds a small valid store, then for each mutant flips bits, overwrites bytes or byte runs
// (anywhere; half of the mutants aim at the first 4 KiB, where the superblock, root object
// header and B-trees live) and runs the whole read path in a child process: DatasetReader::Open
// (which itself validates in a grandchild, Note [corrupt stores]), every image read, Inspect and
// both reports. The driver counts, per mutant, a clean read, a refusal (the error names the file)
// or a crash (the child died of a signal); any crash, or a refusal that does not name the file,
// fails the run and the mutant is saved for replay.
//
//   fuzz_store [--seed S] [--mutants N] [--corpus DIR] [--save-crashes DIR] [--replay FILE]...
//              [--no-child]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "common/hash.h"
#include "storage/dataset_reader.h"
#include "storage/inspect.h"
#include "storage/writer.h"

namespace fs = std::filesystem;
using namespace effnet;
using namespace effnet::storage;

namespace {

constexpr int kSize = 8;
constexpr int64_t kImages = 6;

Status BuildStore(const std::string& path) {
  EFFNET_ASSIGN_OR_RETURN(auto w, DatasetWriter::Create(path, kSize));
  StoreMetadata m;
  m.class_names = {"bird", "cat", "dög"};
  std::vector<uint8_t> px(w->image_bytes());
  for (int64_t i = 0; i < kImages; ++i) {
    for (size_t k = 0; k < px.size(); ++k) px[k] = static_cast<uint8_t>(i * 37 + k);
    EFFNET_RETURN_IF_ERROR(w->Append(px.data()));
    m.labels.push_back(static_cast<int32_t>(i % 3));
    m.splits.push_back(static_cast<Split>(i % 3));
    m.source_paths.push_back("img/" + std::to_string(i) + ".jpg");
    m.content_hash.push_back(1000 + static_cast<uint64_t>(i));
    m.perceptual_hash.push_back(static_cast<uint64_t>(i) << 7);
  }
  m.prepare_settings_json = R"({"fuzz":true,"image_size":8})";
  return w->Finish(m);
}

std::vector<char> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// SplitMix64 (common/hash.h): the same mutants on every machine for one seed.
struct Rng {
  SplitMix64 gen;
  uint64_t Next() { return gen.Next(); }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }
};

void Mutate(std::vector<char>* bytes, Rng* rng) {
  const uint64_t size = bytes->size();
  const int edits = 1 + static_cast<int>(rng->Below(4));
  for (int e = 0; e < edits; ++e) {
    // Half the edits hit the first 4 KiB: superblock, root object header, heaps, B-trees.
    const uint64_t span = rng->Below(2) == 0 ? std::min<uint64_t>(size, 4096) : size;
    const uint64_t at = rng->Below(span);
    auto& b = (*bytes)[at];
    switch (rng->Below(5)) {
      case 0:  // one bit
        b = static_cast<char>(b ^ (1 << rng->Below(8)));
        break;
      case 1:  // one byte
        b = static_cast<char>(rng->Next());
        break;
      case 2:  // a run of bits of one byte range
      {
        const uint64_t len = 1 + rng->Below(16);
        for (uint64_t k = at; k < std::min(size, at + len); ++k) {
          (*bytes)[k] = static_cast<char>((*bytes)[k] ^ static_cast<char>(rng->Next()));
        }
        break;
      }
      case 3:  // a run set to 0xFF or 0x00 (undefined addresses, zero sizes)
      {
        const uint64_t len = 1 + rng->Below(8);
        const char v = rng->Below(2) ? '\xff' : '\0';
        for (uint64_t k = at; k < std::min(size, at + len); ++k) (*bytes)[k] = v;
        break;
      }
      default:  // a little-endian 4-byte field made large
      {
        const uint32_t v = static_cast<uint32_t>(rng->Next()) | 0x10000000u;
        for (uint64_t k = 0; k < 4 && at + k < size; ++k) {
          (*bytes)[at + k] = static_cast<char>(v >> (8 * k));
        }
        break;
      }
    }
  }
}

enum Outcome { kClean = 0, kRefused = 1, kRefusedCrashInChild = 2, kBadMessage = 3 };

// The whole read path, as effnet-inspect and the trainer run it; returns an Outcome.
bool g_validate_in_child = true;
// The validation child's limit, and the driver's for one whole mutant (reading a 14 KB store
// takes milliseconds).
constexpr int kValidateSeconds = 5;
constexpr unsigned kHangSeconds = 30;

int ReadPath(const std::string& path) {
  ReaderOptions options;
  options.validate_timeout_s = kValidateSeconds;
  options.validate_in_child = g_validate_in_child;
  auto r = DatasetReader::Open(path, options);
  if (!r.ok()) {
    const std::string& m = r.status().message();
    if (m.find(path) == std::string::npos) {
      std::fprintf(stderr, "refusal does not name the file: %s\n", m.c_str());
      return kBadMessage;
    }
    const bool child = m.find("libhdf5 crashed") != std::string::npos ||
                       m.find("libhdf5 did not finish") != std::string::npos;
    return child ? kRefusedCrashInChild : kRefused;
  }
  DatasetReader& reader = **r;
  std::vector<int64_t> all;
  for (int64_t i = 0; i < reader.info().num_images; ++i) all.push_back(i);
  std::vector<uint8_t> px(all.size() * reader.image_bytes());
  if (!reader.ReadImages(all, px.data()).ok()) return kRefused;
  auto report = Inspect(reader, 4);
  if (!report.ok()) return kRefused;
  std::string json = ToJson(*report) + ToText(*report);
  return json.empty() ? kBadMessage : kClean;
}

// Runs ReadPath in a child; -1 when it crashed (signal) or hung, else the outcome.
int RunIsolated(const std::string& path) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(kHangSeconds);  // a hang counts as a crash (SIGALRM)
    ::_exit(ReadPath(path));
  }
  int ws = 0;
  ::waitpid(pid, &ws, 0);
  if (WIFSIGNALED(ws)) return -1;
  return WEXITSTATUS(ws);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 1;
  int64_t mutants = 1000;
  std::string corpus, save_dir;
  std::vector<std::string> replay;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seed") {
      seed = std::stoull(next());
    } else if (a == "--mutants") {
      mutants = std::stoll(next());
    } else if (a == "--corpus") {
      corpus = next();
    } else if (a == "--save-crashes") {
      save_dir = next();
    } else if (a == "--no-child") {  // shows what the validation child prevents
      g_validate_in_child = false;
    } else if (a == "--replay") {
      replay.push_back(next());
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  char tmpl[] = "/tmp/effnet-fuzz-XXXXXX";
  if (!::mkdtemp(tmpl)) return 2;
  const fs::path dir = tmpl;
  const std::string base = (dir / "base.h5").string();
  Status st = BuildStore(base);
  if (!st.ok()) {
    std::fprintf(stderr, "building the store: %s\n", st.ToString().c_str());
    return 2;
  }
  int64_t counts[4] = {0, 0, 0, 0}, crashes = 0, tried = 0;
  auto run_one = [&](const std::string& file, const std::string& name) {
    ++tried;
    const int out = RunIsolated(file);
    if (out < 0 || out == kBadMessage) {
      if (out < 0)
        ++crashes;
      else
        ++counts[kBadMessage];
      std::fprintf(stderr, "%s: %s\n", out < 0 ? "CRASH" : "BAD MESSAGE", name.c_str());
      if (!save_dir.empty()) {
        fs::create_directories(save_dir);
        fs::copy_file(file, fs::path(save_dir) / (name + ".h5"),
                      fs::copy_options::overwrite_existing);
      }
      return;
    }
    ++counts[out];
  };

  // The unmutated store must read cleanly.
  if (RunIsolated(base) != kClean) {
    std::fprintf(stderr, "the valid store does not read cleanly\n");
    return 1;
  }
  std::vector<std::string> fixed = replay;
  if (!corpus.empty() && fs::is_directory(corpus)) {
    for (const auto& e : fs::directory_iterator(corpus)) {
      if (e.path().extension() == ".h5") fixed.push_back(e.path().string());
    }
  }
  for (const auto& f : fixed) {
    const std::string copy = (dir / "corpus.h5").string();
    fs::copy_file(f, copy, fs::copy_options::overwrite_existing);
    run_one(copy, fs::path(f).stem().string());
  }
  const std::vector<char> original = ReadAll(base);
  Rng rng{SplitMix64(seed)};
  const std::string mutant = (dir / "mutant.h5").string();
  for (int64_t m = 0; m < mutants; ++m) {
    std::vector<char> bytes = original;
    Mutate(&bytes, &rng);
    WriteAll(mutant, bytes);
    run_one(mutant, "seed" + std::to_string(seed) + "-mutant" + std::to_string(m));
  }
  std::printf(
      "fuzz_store: seed %llu, %lld inputs (%zu corpus + %lld mutants of a %zu-byte store): "
      "%lld crashes or hangs, %lld refused (%lld of them libhdf5 crashes or hangs caught in the "
      "validation child), "
      "%lld clean reads, %lld refusals without the file name\n",
      static_cast<unsigned long long>(seed), static_cast<long long>(tried), fixed.size(),
      static_cast<long long>(mutants), original.size(), static_cast<long long>(crashes),
      static_cast<long long>(counts[kRefused] + counts[kRefusedCrashInChild]),
      static_cast<long long>(counts[kRefusedCrashInChild]), static_cast<long long>(counts[kClean]),
      static_cast<long long>(counts[kBadMessage]));
  std::error_code ec;
  fs::remove_all(dir, ec);
  return crashes == 0 && counts[kBadMessage] == 0 ? 0 : 1;
}
