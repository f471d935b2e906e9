// `ssmtune bench --device cuda`: figures for the general CUDA kernels (printed, never asserted).
//
// Each row runs one op on tensors already on the GPU, synchronised before and after, best of `repeats` after one
// warm-up; bytes are what the op must read and write once (so GB/s is a lower bound on the traffic), GEMM counts
// 2·M·N·K flops. The CPU column runs the same op on CPU copies. Not here: the SSM kernels (CUDA SSM issue).
#include "tools/bench_cuda.h"

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

#include "autograd/optim.h"
#include "cuda/runtime.h"
#include "ops/ops.h"

namespace ssmtune::tools {

namespace {

double best_seconds_synced(int repeats, const std::function<void()>& f, bool gpu) {
    f();  // warm-up: cuBLAS handle, allocator cache
    if (gpu) cuda::synchronize();
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        f();
        if (gpu) cuda::synchronize();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
}

// One row: op(inputs on device) timed on the GPU and on the CPU; `work` is bytes (or flops when flops is true).
void row(const std::string& name, const std::string& size, double work, bool flops, int repeats, double peak_gbs,
         const std::function<void(const Device&)>& op) {
    const double g = best_seconds_synced(repeats, [&] { op(Device::cuda()); }, true);
    const double c = best_seconds_synced(std::min(repeats, 3), [&] { op(Device::cpu()); }, false);
    if (flops)
        std::printf("  %-22s %-22s GPU %9.3f ms  %8.2f TFLOP/s              CPU %10.2f ms  GPU %7.1fx\n", name.c_str(),
                    size.c_str(), g * 1e3, work / g / 1e12, c * 1e3, c / g);
    else
        std::printf("  %-22s %-22s GPU %9.3f ms  %8.1f GB/s (%5.1f%% of peak)  CPU %10.2f ms  GPU %7.1fx\n",
                    name.c_str(), size.c_str(), g * 1e3, work / g / 1e9, 100.0 * work / g / 1e9 / peak_gbs, c * 1e3,
                    c / g);
    std::fflush(stdout);
}

}  // namespace

void bench_cuda_kernels(int repeats) {
    SSMTUNE_CHECK(cuda::available(), "bench --device cuda: no usable CUDA GPU in this build or on this machine; fix: "
                                     "run on a machine with an NVIDIA GPU and a CUDA build, or use --device cpu");
    const double peak = cuda::peak_bandwidth_gbs();
    std::printf("CUDA kernels on %s (peak memory bandwidth %.0f GB/s), float32, best of %d\n",
                cuda::device_name().c_str(), peak, repeats);
    for (int64_t n : {int64_t(1) << 20, int64_t(1) << 24}) {
        const Tensor x_cpu = Tensor::randn({n}, 1), y_cpu = Tensor::randn({n}, 2);
        const Tensor x_gpu = x_cpu.to(Device::cuda()), y_gpu = y_cpu.to(Device::cuda());
        auto pick = [&](const Device& d, const Tensor& c, const Tensor& g) { return d.is_cuda() ? g : c; };
        const std::string size = "n=" + std::to_string(n);
        row("gelu forward", size, 8.0 * double(n), false, repeats, peak,
            [&](const Device& d) { ops::gelu(pick(d, x_cpu, x_gpu)); });
        row("add", size, 12.0 * double(n), false, repeats, peak,
            [&](const Device& d) { ops::add(pick(d, x_cpu, x_gpu), pick(d, y_cpu, y_gpu)); });
        row("sum (all)", size, 4.0 * double(n), false, repeats, peak,
            [&](const Device& d) { ops::sum(pick(d, x_cpu, x_gpu)); });
    }
    {
        const int64_t rows = 4096, cols = 4096;
        const Tensor x_cpu = Tensor::randn({rows, cols}, 3), x_gpu = x_cpu.to(Device::cuda());
        auto pick = [&](const Device& d) { return d.is_cuda() ? x_gpu : x_cpu; };
        const std::string size = "[4096, 4096]";
        const double bytes = 8.0 * double(rows * cols);
        row("transpose+contiguous", size, bytes, false, repeats, peak,
            [&](const Device& d) { pick(d).transpose(0, 1).contiguous(); });
        row("sum over dim 1", size, bytes / 2, false, repeats, peak, [&](const Device& d) { ops::sum(pick(d), {1}); });
        row("softmax dim 1", size, bytes, false, repeats, peak, [&](const Device& d) { ops::softmax(pick(d), 1); });
        const Tensor t_cpu = Tensor::from_vector(std::vector<int64_t>(size_t(rows), 7), {rows});
        const Tensor t_gpu = t_cpu.to(Device::cuda());
        row("cross_entropy fwd", size, bytes, false, repeats, peak,
            [&](const Device& d) { ops::cross_entropy(pick(d), d.is_cuda() ? t_gpu : t_cpu); });
    }
    for (int64_t m : {int64_t(1024), int64_t(4096)}) {
        const Tensor a_cpu = Tensor::randn({m, m}, 4), b_cpu = Tensor::randn({m, m}, 5);
        const Tensor a_gpu = a_cpu.to(Device::cuda()), b_gpu = b_cpu.to(Device::cuda());
        row("matmul (cuBLAS)", "[" + std::to_string(m) + "]^2", 2.0 * double(m) * double(m) * double(m), true, repeats,
            peak, [&](const Device& d) { ops::matmul(d.is_cuda() ? a_gpu : a_cpu, d.is_cuda() ? b_gpu : b_cpu); });
    }
    {
        const int64_t n = int64_t(1) << 24;
        Tensor p_cpu = Tensor::randn({n}, 6), p_gpu = p_cpu.to(Device::cuda());
        p_cpu.set_requires_grad(true);
        p_gpu.set_requires_grad(true);
        p_cpu.set_grad(Tensor::randn({n}, 7));
        p_gpu.set_grad(p_cpu.grad().to(Device::cuda()));
        autograd::AdamW opt_cpu({p_cpu}), opt_gpu({p_gpu});
        // Reads p, g, m, v and writes p, m, v: 7 arrays.
        row("AdamW step", "n=" + std::to_string(n), 28.0 * double(n), false, repeats, peak,
            [&](const Device& d) { d.is_cuda() ? opt_gpu.step() : opt_cpu.step(); });
    }
    const auto stats = cuda::memory_stats();
    std::printf("  caching allocator: peak %.1f MiB in use, %.1f MiB cached, %llu device allocations, %llu reuses\n",
                double(stats.peak_in_use) / 1048576.0, double(stats.cached) / 1048576.0,
                static_cast<unsigned long long>(stats.raw_allocs), static_cast<unsigned long long>(stats.reuses));
}

}  // namespace ssmtune::tools
