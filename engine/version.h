// Version and build description of the library (what `ssmtune --version` prints).
#pragma once

#include <string>

namespace ssmtune {

const char* version();     // "0.1.0"
std::string build_info();  // compiler, C++ standard, OpenMP, CUDA on/off and archs
// Number of threads the CPU ops use (OpenMP's max threads, 1 without OpenMP).
int cpu_threads();

}  // namespace ssmtune
