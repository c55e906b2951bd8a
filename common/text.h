// Small text helpers: number formatting, host name, random ids.
#pragma once

#include <string>

namespace effnet {

// `v` with exactly `digits` digits after the decimal point: Fixed(0.91234, 4) == "0.9123".
std::string Fixed(double v, int digits);
// `v` with `digits` significant digits (iostream's default notation): Significant(1234.5, 3) ==
// "1.23e+03".
std::string Significant(double v, int digits);
// This machine's host name; "localhost" when it cannot be read.
std::string HostName();
// 2 * `bytes` lowercase hex digits from std::random_device (process and job ids).
std::string RandomHexId(int bytes = 8);

}  // namespace effnet
