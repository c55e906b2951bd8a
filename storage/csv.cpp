#include "storage/csv.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "common/utf8.h"

namespace effnet::storage {

Result<size_t> CsvTable::Column(const std::string& name) const {
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return i;
  }
  std::string have;
  for (const auto& h : header) have += (have.empty() ? "" : ", ") + h;
  return NotFound("line 1: no column '" + name + "' (columns: " + have + ")");
}

Result<CsvTable> ParseCsv(std::string_view text, const std::string& source) {
  CsvTable table;
  size_t i = 0;
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") i = 3;
  int64_t line = 1;
  const size_t n = text.size();
  bool have_header = false;
  auto err = [&](int64_t at, const std::string& what) {
    return InvalidArgument(source + ":" + std::to_string(at) + ": " + what);
  };

  while (i < n) {
    // Skip blank lines between records.
    if (text[i] == '\n' || text[i] == '\r') {
      if (text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') ++i;
      ++i;
      ++line;
      continue;
    }
    const int64_t record_line = line;
    std::vector<std::string> fields;
    bool end_of_record = false;
    while (!end_of_record) {
      std::string field;
      if (i < n && text[i] == '"') {
        const int64_t quote_line = line;
        ++i;
        bool closed = false;
        while (i < n) {
          char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field.push_back('"');
              i += 2;
              continue;
            }
            ++i;
            closed = true;
            break;
          }
          if (c == '\n') ++line;
          field.push_back(c);
          ++i;
        }
        if (!closed) {
          return err(quote_line, "unterminated quoted field (field " +
                                     std::to_string(fields.size() + 1) + " opened here)");
        }
        if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          return err(line, std::string("unexpected character '") + text[i] +
                               "' after a closing quote (field " +
                               std::to_string(fields.size() + 1) + ")");
        }
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          if (text[i] == '"') {
            return err(line, "quote inside an unquoted field (field " +
                                 std::to_string(fields.size() + 1) + ")");
          }
          field.push_back(text[i++]);
        }
      }
      fields.push_back(std::move(field));
      if (i >= n) {
        end_of_record = true;
      } else if (text[i] == ',') {
        ++i;
      } else {  // record end
        if (text[i] == '\r' && i + 1 < n && text[i + 1] == '\n') ++i;
        ++i;
        ++line;
        end_of_record = true;
      }
    }
    if (!have_header) {
      table.header = std::move(fields);
      have_header = true;
      continue;
    }
    if (fields.size() != table.header.size()) {
      return err(record_line, "record has " + std::to_string(fields.size()) +
                                  " fields, the header " + std::to_string(table.header.size()));
    }
    table.rows.push_back(std::move(fields));
    table.row_lines.push_back(record_line);
  }
  if (!have_header) return InvalidArgument(source + ": empty CSV (no header line)");
  return table;
}

Result<CsvTable> ReadCsvFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Internal(path + ": read error");
  std::string text = ss.str();
  const size_t bad = FirstInvalidUtf8(text);
  if (bad == std::string::npos) return ParseCsv(text, path);
  const int64_t line = 1 + std::count(text.begin(), text.begin() + static_cast<long>(bad), '\n');
  log::Warn(path + ":" + std::to_string(line) +
            ": not valid UTF-8; reading the file as Latin-1 (ISO-8859-1)");
  EFFNET_ASSIGN_OR_RETURN(CsvTable table, ParseCsv(Latin1ToUtf8(text), path));
  table.latin1_from_line = line;
  return table;
}

std::string CsvEscape(const std::string& field) {
  if (field.find_first_of(",\"\r\n") == std::string::npos) return field;
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string CsvRecord(const std::vector<std::string>& fields) {
  std::string out;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i) out.push_back(',');
    out += CsvEscape(fields[i]);
  }
  out.push_back('\n');
  return out;
}

std::string FirstCategory(const std::string& tree) {
  auto trim = [](std::string s) {
    const char* ws = " \t\r\n";
    size_t b = s.find_first_not_of(ws);
    if (b == std::string::npos) return std::string();
    size_t e = s.find_last_not_of(ws);
    return s.substr(b, e - b + 1);
  };
  std::string s = trim(tree);
  if (!s.empty() && s.front() == '[') s.erase(0, 1);
  if (!s.empty() && s.back() == ']') s.pop_back();
  s = trim(s);
  if (!s.empty() && (s.front() == '"' || s.front() == '\'')) s.erase(0, 1);
  size_t sep = s.find(">>");
  if (sep != std::string::npos) {
    s = s.substr(0, sep);
  } else {
    // A single category: drop the closing quote of the list element.
    s = trim(s);
    if (!s.empty() && (s.back() == '"' || s.back() == '\'')) s.pop_back();
  }
  return trim(s);
}

}  // namespace effnet::storage
