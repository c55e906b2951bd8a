// Regression test for Note [libstdc++ before libtorch]: without the link-order fix this process
// binds std::filesystem::remove_all to libtorch_cpu.so's copy and crashes.
#include <gtest/gtest.h>
#include <torch/types.h>

#include <filesystem>
#include <fstream>

TEST(FilesystemWithTorch, RemoveAllWorks) {
  const auto base = std::filesystem::temp_directory_path() / "effnet_fs_torch_test";
  std::filesystem::create_directories(base / "a" / "b");
  std::ofstream(base / "a" / "b" / "f.txt") << "x";
  EXPECT_EQ(torch::ones({3}).sum().item<float>(), 3.0f);  // libtorch really loaded and used
  EXPECT_GE(std::filesystem::remove_all(base), 3u);
  EXPECT_FALSE(std::filesystem::exists(base));
}
