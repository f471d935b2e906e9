// Runtime x86 SIMD level for the dispatching CPU kernels (see cpu_isa.h).
#include "engine/cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "engine/error.h"

namespace ssmtune {

namespace {

bool cpu_has_avx2() {
#if SSMTUNE_CPU_DISPATCH
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

CpuIsa initial_isa() {
    const char* env = std::getenv("SSMTUNE_CPU_ISA");
    if (env && std::strcmp(env, "baseline") == 0) return CpuIsa::baseline;
    SSMTUNE_CHECK(!env || *env == '\0' || std::strcmp(env, "avx2") == 0,
                  "SSMTUNE_CPU_ISA=", env, " is not a CPU level; fix: set it to baseline or avx2, or unset it");
    return cpu_isa_available(CpuIsa::avx2) ? CpuIsa::avx2 : CpuIsa::baseline;
}

std::atomic<int>& current_isa() {
    static std::atomic<int> isa{static_cast<int>(initial_isa())};
    return isa;
}

}  // namespace

bool cpu_isa_available(CpuIsa isa) {
    if (isa == CpuIsa::baseline) return true;
    static const bool avx2 = cpu_has_avx2();
    return avx2;
}

CpuIsa cpu_isa() { return static_cast<CpuIsa>(current_isa().load(std::memory_order_relaxed)); }

void set_cpu_isa(CpuIsa isa) {
    SSMTUNE_CHECK(cpu_isa_available(isa), "set_cpu_isa: ", cpu_isa_name(isa), " is not available: ",
                  SSMTUNE_CPU_DISPATCH ? "this CPU lacks AVX2 or FMA"
                                       : "this build has no AVX2 copies (not x86-64 with GCC or clang, "
                                         "SSMTUNE_NATIVE=ON, or SSMTUNE_CPU_DISPATCH=OFF)",
                  "; fix: use baseline");
    current_isa().store(static_cast<int>(isa), std::memory_order_relaxed);
}

const char* cpu_isa_name(CpuIsa isa) { return isa == CpuIsa::avx2 ? "avx2" : "baseline"; }

}  // namespace ssmtune
