// `ssmtune bench --device cuda`: the general CUDA kernels timed against the CPU path (see bench_cuda.cpp).
#pragma once

namespace ssmtune::tools {

// Prints, for each kernel at a few sizes: GPU time, achieved GB/s (TFLOP/s for GEMM) and its fraction of the
// device's peak, the CPU path's time on the same tensors and the speed-up. Error when no GPU is usable.
void bench_cuda_kernels(int repeats);

}  // namespace ssmtune::tools
