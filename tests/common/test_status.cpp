#include <gtest/gtest.h>

#include <filesystem>

#include "common/atomic_file.h"
#include "common/status.h"

namespace effnet {
namespace {

Result<int> ParsePositive(int v) {
  if (v <= 0) return InvalidArgument("value " + std::to_string(v) + " must be positive");
  return v;
}

Status UseIt(int v) {
  EFFNET_ASSIGN_OR_RETURN(int x, ParsePositive(v));
  return x > 10 ? FailedPrecondition("too big") : Status::Ok();
}

TEST(Status, CarriesContext) {
  Status s = UseIt(-1).WithContext("config field epochs");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.ToString(), "InvalidArgument: config field epochs: value -1 must be positive");
  EXPECT_TRUE(UseIt(3).ok());
  EXPECT_EQ(UseIt(11).code(), StatusCode::kFailedPrecondition);
  EXPECT_THROW(ParsePositive(0).value(), StatusError);
}

TEST(AtomicFile, ReplacesWholeFileOnly) {
  auto dir = std::filesystem::temp_directory_path() / "effnet_atomic_test";
  std::filesystem::create_directories(dir);
  auto path = (dir / "state.json").string();
  ASSERT_TRUE(WriteFileAtomic(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomic(path, "second").ok());
  EXPECT_EQ(ReadFile(path).value(), "second");
  EXPECT_FALSE(std::filesystem::exists(TempPathFor(path)));
  EXPECT_EQ(ReadFile((dir / "missing").string()).status().code(), StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace effnet
