// The GPU test executable: exits 77 (ctest: skipped) when no usable GPU is present, else runs every GPU test
// case of tests/cuda/. Each GPU result is compared with the CPU reference (see gpu_compare.h).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "cuda/runtime.h"

int main(int argc, char** argv) {
    if (!ssmtune::cuda::available()) {
        std::printf("no CUDA GPU available: GPU suite skipped\n");
        return 77;
    }
    std::printf("GPU: %s\n", ssmtune::cuda::device_name(0).c_str());
    doctest::Context context(argc, argv);
    return context.run();
}
