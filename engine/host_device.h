// SSMTUNE_HD marks small functions that compile both as host code and, under nvcc, as device code, so a CUDA
// kernel and its CPU reference (or a CPU test of the kernel's index math) call one definition.
#pragma once

#ifdef __CUDACC__
#define SSMTUNE_HD __host__ __device__
#else
#define SSMTUNE_HD
#endif
