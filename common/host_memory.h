// Keeps freed host memory in the process for reuse (glibc malloc tuning for training loops).
#pragma once

#include <string>

namespace effnet {

// Note [host allocator]: LibTorch's CPU tensors come from glibc malloc. By default malloc serves
// blocks above its (dynamic) mmap threshold with fresh mmaps and trims the heap's free top, so a
// training step that frees and re-allocates the same activations every step pays a page fault per
// 4 KiB page again: 40,000 faults per study-b0 CPU step (B0, 224 px, batch 16), 12 % of its CPU
// time in the kernel. Fixing the mmap threshold at its maximum (32 MiB on 64-bit glibc) and never
// trimming keeps those blocks in the heap: bench_model_step went from 317.8 to 266.7 ms per step
// and from 934k to 212k page faults (22 steps, 2 threads, AVX512-BF16 EPYC). The process holds
// its peak heap, which a training loop reaches every step anyway; blocks above 32 MiB are still
// mmapped (GLIBC_TUNABLES=glibc.malloc.mmap_threshold=N raises that limit at exec time).
// Returns an empty string, or why the tuning was not applied (not glibc, or refused).
std::string KeepFreedHostMemory();

}  // namespace effnet
