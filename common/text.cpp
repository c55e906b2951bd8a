#include "common/text.h"

#include <unistd.h>

#include <cstdio>
#include <iomanip>
#include <random>
#include <sstream>

namespace effnet {

std::string Fixed(double v, int digits) {
  std::ostringstream ss;
  ss << std::fixed << std::setprecision(digits) << v;
  return ss.str();
}

std::string Significant(double v, int digits) {
  std::ostringstream ss;
  ss << std::setprecision(digits) << v;
  return ss.str();
}

std::string HostName() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

std::string RandomHexId(int bytes) {
  std::random_device rd;
  std::string out;
  for (int i = 0; i < bytes; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof(hex), "%02x", static_cast<unsigned>(rd() & 0xffU));
    out += hex;
  }
  return out;
}

}  // namespace effnet
