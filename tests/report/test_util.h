// Helpers shared by the report tests: a fresh temporary directory per test and file I/O.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace effnet::report::testing {

// A new empty directory, unique to this process and test, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("effnet_report_" + std::to_string(::getpid()) + "_" + info->test_suite_name() + "_" +
             info->name());
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void Spit(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

inline int CountOf(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

// A small XML well-formedness check (tags balanced and properly nested, attributes quoted, only
// the five predefined entities or numeric references after '&'). Returns "" when well-formed,
// else what is wrong and where. Python's xml.etree check (check_report_files.py) backs it up.
inline std::string XmlProblem(const std::string& x) {
  std::vector<std::string> open;
  size_t i = 0;
  auto entity_ok = [&](size_t amp) {
    for (const char* e : {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"}) {
      if (x.compare(amp, std::char_traits<char>::length(e), e) == 0) return true;
    }
    return false;
  };
  int roots = 0;
  while (i < x.size()) {
    if (x[i] == '&' && !entity_ok(i)) return "bare '&' at byte " + std::to_string(i);
    if (x[i] != '<') {
      if (open.empty() && !std::isspace(static_cast<unsigned char>(x[i]))) {
        return "text outside the root element at byte " + std::to_string(i);
      }
      ++i;
      continue;
    }
    if (x.compare(i, 2, "<?") == 0) {
      const size_t e = x.find("?>", i);
      if (e == std::string::npos) return "unterminated <? at byte " + std::to_string(i);
      i = e + 2;
      continue;
    }
    if (x.compare(i, 4, "<!--") == 0) {
      const size_t e = x.find("-->", i);
      if (e == std::string::npos) return "unterminated comment at byte " + std::to_string(i);
      i = e + 3;
      continue;
    }
    // Find the end of the tag, skipping quoted attribute values.
    size_t j = i + 1;
    char quote = 0;
    for (; j < x.size(); ++j) {
      if (quote) {
        if (x[j] == quote)
          quote = 0;
        else if (x[j] == '<')
          return "'<' inside an attribute at byte " + std::to_string(j);
        else if (x[j] == '&' && !entity_ok(j))
          return "bare '&' at byte " + std::to_string(j);
      } else if (x[j] == '"' || x[j] == '\'') {
        quote = x[j];
      } else if (x[j] == '>') {
        break;
      } else if (x[j] == '<') {
        return "'<' inside a tag at byte " + std::to_string(j);
      }
    }
    if (j >= x.size()) return "unterminated tag at byte " + std::to_string(i);
    std::string tag = x.substr(i + 1, j - i - 1);
    if (!tag.empty() && tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (open.empty() || open.back() != name) {
        return "</" + name + "> does not close <" + (open.empty() ? "" : open.back()) +
               "> at byte " + std::to_string(i);
      }
      open.pop_back();
    } else {
      const bool self_closing = !tag.empty() && tag.back() == '/';
      const std::string name = tag.substr(0, tag.find_first_of(" \t\n/"));
      if (name.empty()) return "empty tag name at byte " + std::to_string(i);
      if (open.empty() && ++roots > 1) return "second root element at byte " + std::to_string(i);
      if (!self_closing) open.push_back(name);
    }
    i = j + 1;
  }
  if (!open.empty()) return "<" + open.back() + "> never closed";
  if (roots != 1) return "no root element";
  return "";
}

}  // namespace effnet::report::testing
