// Version string and build description (see version.h).
#include "engine/version.h"

#include "engine/cpu_isa.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ssmtune {

const char* version() { return SSMTUNE_VERSION; }

int cpu_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

std::string build_info() {
    std::string s = "compiler: ";
#if defined(__clang__)
    s += "clang " __clang_version__;
#elif defined(__GNUC__)
    s += "g++ " __VERSION__;
#else
    s += "unknown";
#endif
    s += ", C++" + std::to_string(__cplusplus / 100 % 100);
    s += std::string(", CPU kernels: ") + cpu_isa_name(cpu_isa()) + (SSMTUNE_CPU_DISPATCH ? " (runtime dispatch)" : "");
#ifdef _OPENMP
    s += ", OpenMP " + std::to_string(_OPENMP) + " (" + std::to_string(cpu_threads()) + " threads)";
#else
    s += ", no OpenMP";
#endif
#ifdef SSMTUNE_WITH_CUDA
    s += ", CUDA on (archs " SSMTUNE_CUDA_ARCHS ")";
#else
    s += ", CUDA off";
#endif
    return s;
}

}  // namespace ssmtune
