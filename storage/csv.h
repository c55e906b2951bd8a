// A small RFC 4180 CSV reader and writer helpers (no dependencies).
//
// Fields are separated by ',' and records by LF or CRLF. A field that starts with '"' is quoted:
// it ends at the next lone '"', may contain ',', CR, LF, and '""' for one '"'. Anything but ',' or
// the record end right after a closing quote is an error, as is a quote that is never closed;
// both name the line. Every record must have as many fields as the header. A UTF-8 BOM at the
// start is skipped; blank lines are skipped. Text that is not valid UTF-8 is taken as Latin-1 and
// transcoded to UTF-8 (Note [text encoding] in common/utf8.h): spreadsheet exports often are.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace effnet::storage {

struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<int64_t> row_lines;  // 1-based line on which each row starts
  // Set when the input was not valid UTF-8: the line of its first bad byte (1-based); every field
  // was transcoded from Latin-1.
  int64_t latin1_from_line = 0;

  // Index of column `name`; NotFound naming the column and the columns there are.
  Result<size_t> Column(const std::string& name) const;
};

// `source` names the input in errors ("data.csv:12: unterminated quoted field").
Result<CsvTable> ParseCsv(std::string_view text, const std::string& source);
Result<CsvTable> ReadCsvFile(const std::string& path);

// Quotes a field when it contains ',', '"', CR or LF.
std::string CsvEscape(const std::string& field);
// Joins escaped fields with ',' and ends the record with '\n'.
std::string CsvRecord(const std::vector<std::string>& fields);

// The study's label: the first category of a product_category_tree value such as
// `["Home Furnishing >> Bed Linen >> ..."]` -> "Home Furnishing". Also accepts a plain
// "A >> B" or "A". Returns "" when nothing is left after trimming.
std::string FirstCategory(const std::string& tree);

}  // namespace effnet::storage
