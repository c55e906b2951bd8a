// Note [host allocator]: after KeepFreedHostMemory a block below 32 MiB comes from the heap, not
// a fresh mmap, and freeing it keeps it in the process (a new one of the same size reuses it).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "common/host_memory.h"

#if defined(__GLIBC__)
#include <malloc.h>

namespace {

TEST(HostMemory, BlocksBelow32MiBStayInTheHeapAfterFree) {
  constexpr size_t kBlock = 20u << 20;  // above glibc's default (dynamic) threshold of 128 KiB
  ASSERT_EQ(effnet::KeepFreedHostMemory(), "");
  const size_t mmapped_before = mallinfo2().hblkhd;
  void* a = std::malloc(kBlock);
  ASSERT_NE(a, nullptr);
  std::memset(a, 1, kBlock);
  EXPECT_LT(mallinfo2().hblkhd, mmapped_before + kBlock) << "the block was mmapped";
  std::free(a);
  const size_t heap_after_free = mallinfo2().arena;
  EXPECT_GE(heap_after_free, kBlock) << "the heap was trimmed: the memory went back to the OS";
  void* b = std::malloc(kBlock);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(mallinfo2().arena, heap_after_free) << "the heap grew instead of reusing the block";
  std::free(b);
}

}  // namespace
#endif
