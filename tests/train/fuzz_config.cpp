// Mutation fuzzer of the config parser (docs/fuzzing.md): mutated YAML of every preset through
// train::ParseTrainConfig must come back as a Status. An exception that escapes is counted and
// fails the run; a crash fails it too (the test dies).
//
//   fuzz_config [--seed S] [--mutants N]
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "common/hash.h"
#include "worker/train/config.h"

using namespace effnet;

namespace {

struct Rng {
  SplitMix64 gen;
  uint64_t Next() { return gen.Next(); }
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : Next() % n; }
};

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t end = s.find('\n', pos);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

std::string Join(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

// Tokens that stress YAML and the field table: huge, negative, non-finite, wrong kinds.
const char* const kTokens[] = {"99999999999999999999999",
                               "-1",
                               "-9223372036854775809",
                               ".nan",
                               "-.inf",
                               "1e309",
                               "0x7fffffff",
                               "~",
                               "[]",
                               "{}",
                               "[1, [2, [3]]]",
                               "{a: {b: {c: d}}}",
                               "&a x",
                               "*a",
                               "*undefined",
                               "!!binary AA",
                               "? [k]",
                               "'unterminated",
                               "\"\\xff\"",
                               "|",
                               ">-",
                               "---",
                               "...",
                               "%YAML 1.2",
                               ":",
                               "- - -",
                               "\t",
                               "\xff\xfe",
                               "\xc3",
                               "true",
                               "null",
                               "<<: *a"};

std::string Mutate(const std::string& text, Rng* rng) {
  std::vector<std::string> lines = Lines(text);
  const int edits = 1 + static_cast<int>(rng->Below(4));
  for (int e = 0; e < edits && !lines.empty(); ++e) {
    auto& line = lines[rng->Below(lines.size())];
    switch (rng->Below(8)) {
      case 0:  // flip a byte
        if (!line.empty()) line[rng->Below(line.size())] ^= static_cast<char>(1 + rng->Below(255));
        break;
      case 1:  // replace the value after ':'
      {
        const size_t colon = line.find(':');
        const std::string tok = kTokens[rng->Below(sizeof(kTokens) / sizeof(kTokens[0]))];
        line = colon == std::string::npos ? tok : line.substr(0, colon + 1) + " " + tok;
        break;
      }
      case 2:  // insert a token line
        lines.insert(lines.begin() + static_cast<long>(rng->Below(lines.size())),
                     std::string(rng->Below(6), ' ') +
                         kTokens[rng->Below(sizeof(kTokens) / sizeof(kTokens[0]))]);
        break;
      case 3:  // change the indentation
        line = std::string(rng->Below(9), rng->Below(4) == 0 ? '\t' : ' ') + line;
        break;
      case 4:  // cut the line
        line.resize(rng->Below(line.size() + 1));
        break;
      case 5:  // duplicate a line (duplicate keys)
        lines.insert(lines.begin() + static_cast<long>(rng->Below(lines.size())), line);
        break;
      case 6:  // swap two lines
        std::swap(line, lines[rng->Below(lines.size())]);
        break;
      default:  // drop a line
        lines.erase(lines.begin() + static_cast<long>(rng->Below(lines.size())));
        break;
    }
  }
  return Join(lines);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 1;
  int64_t mutants = 5000;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--seed") {
      seed = std::stoull(argv[i + 1]);
    } else if (a == "--mutants") {
      mutants = std::stoll(argv[i + 1]);
    } else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  std::vector<std::string> bases;
  for (const auto& name : train::PresetNames()) {
    auto text = train::PresetText(name);
    if (text.ok()) bases.push_back(*text);
  }
  if (bases.empty()) {
    std::fprintf(stderr, "no presets\n");
    return 2;
  }
  Rng rng{SplitMix64(seed)};
  int64_t accepted = 0, refused = 0, escaped = 0;
  for (int64_t m = 0; m < mutants; ++m) {
    const std::string text = Mutate(bases[rng.Below(bases.size())], &rng);
    std::vector<std::string> overrides;
    if (rng.Below(4) == 0) {
      overrides.push_back(std::string("optimizer.lr=") +
                          kTokens[rng.Below(sizeof(kTokens) / sizeof(kTokens[0]))]);
    }
    try {
      auto c = train::ParseTrainConfig(text, overrides);
      if (c.ok()) {
        ++accepted;
        (void)train::TrainConfigToYaml(*c);
      } else {
        ++refused;
      }
    } catch (const std::exception& e) {
      ++escaped;
      std::fprintf(stderr, "mutant %lld: exception escaped: %s\n---\n%s---\n",
                   static_cast<long long>(m), e.what(), text.c_str());
    }
  }
  std::printf(
      "fuzz_config: seed %llu, %lld mutants of %zu presets: %lld accepted, %lld refused, "
      "%lld exceptions escaped\n",
      static_cast<unsigned long long>(seed), static_cast<long long>(mutants), bases.size(),
      static_cast<long long>(accepted), static_cast<long long>(refused),
      static_cast<long long>(escaped));
  return escaped == 0 ? 0 : 1;
}
