// `ssmtune bench --device cuda`: the CUDA kernels timed against the CPU path (see bench_cuda.cpp).
#pragma once

#include <cstdint>
#include <vector>

namespace ssmtune::tools {

// Prints, for each kernel at a few sizes: GPU time, achieved GB/s (TFLOP/s for GEMM) and its fraction of the
// device's peak, the CPU path's time on the same tensors and the speed-up. Error when no GPU is usable.
void bench_cuda_kernels(int repeats);
// The selective scan on the GPU (z gate, softplus, as the CPU bench): forward and backward time, GB/s and the
// fraction of peak bandwidth, the naive one-thread-per-channel kernel's forward time, and the CPU op's (L <= 2048);
// then the Longhorn scan on the same tensors (x = u, dt = Δ, k = B, q = C) with its forward/backward figures.
void bench_cuda_scan(int64_t B, int64_t E, int64_t N, const std::vector<int64_t>& lengths, int repeats);
// One Mamba-130M layer's forward + backward on the GPU and the CPU, then a Mamba-130M-shaped training step (D=768,
// 24 layers, E=1536, N=16, vocab 50280, AdamW) on the GPU: tokens/s.
void bench_cuda_mamba(int64_t B, int64_t L, int steps);

}  // namespace ssmtune::tools
