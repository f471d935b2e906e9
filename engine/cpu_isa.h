// Runtime choice of the x86 SIMD level for the CPU kernels that carry a second, AVX2 build of their float loops
// (the selective scan and the float GEMM).
//
// A portable build targets baseline x86-64 (SSE2, 4 float lanes). Two kernels get a second copy for AVX2 (8 lanes),
// called when the CPU has AVX2 and FMA, so one binary is both portable and fast without -march=native:
//   - the selective scan's float forward and backward (SSMTUNE_AVX2_KERNEL, a function attribute): no FMA and the
//     same operations in the same order per element, so its results are bit-identical to the baseline copy (tested);
//   - the float GEMM under matmul and linear (ops/matmul_avx2.cpp, Eigen compiled with -mavx2 -mfma): FMA rounds
//     once where the baseline rounds twice, so products differ from the baseline copy in the last bits (as they
//     already do between machines with different cache sizes: Eigen's blocking follows them).
// Not here: AVX-512 copies (the scan's loops are 8 channels wide, one AVX2 register), other architectures (ARM
// builds use their own baseline), dispatch inside CUDA code.
#pragma once

namespace ssmtune {

enum class CpuIsa {
    baseline,  // what the build targets: x86-64 SSE2 by default, the host's ISA under SSMTUNE_NATIVE
    avx2,      // the AVX2 copies of the dispatching kernels (needs a CPU with AVX2 and FMA)
};

// The level the dispatching kernels use now. First call: avx2 when the build can dispatch and the CPU has AVX2,
// unless the environment variable SSMTUNE_CPU_ISA says `baseline` (`avx2` or unset: the best available).
CpuIsa cpu_isa();
// Whether the build has the AVX2 copies and this CPU can run them (always true for baseline).
bool cpu_isa_available(CpuIsa isa);
// Switches the level for later kernel calls (tests compare the two; users can pin the baseline). Throws
// ssmtune::Error when `isa` is not available, saying why.
void set_cpu_isa(CpuIsa isa);
const char* cpu_isa_name(CpuIsa isa);

}  // namespace ssmtune

// SSMTUNE_CPU_DISPATCH is 1 inside the library where the AVX2 copies are built: CMakeLists.txt defines it after a
// try-compile shows the toolchain can (x86-64, GCC or clang), unless SSMTUNE_NATIVE is on (the whole build already
// targets the host) or the CMake option SSMTUNE_CPU_DISPATCH is OFF (for toolchains that cannot).
#ifndef SSMTUNE_CPU_DISPATCH
#define SSMTUNE_CPU_DISPATCH 0
#endif
#if SSMTUNE_CPU_DISPATCH
// The AVX2 copy of a kernel: `flatten` inlines every call in its body, so the whole loop nest is compiled for
// AVX2 (callees built for the baseline may be inlined into an AVX2 function; not the other way round). No FMA, so
// every element sees the same roundings as in the baseline copy.
#define SSMTUNE_AVX2_KERNEL __attribute__((target("avx2"), flatten))
#endif
