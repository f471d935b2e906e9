// The one helper every GPU test compares through: run the same computation on CPU tensors and on their GPU
// copies, then compare the output and every input's gradient with per-tensor tolerances (test_util.h's compare,
// which prints the worst element). Not here: the tests themselves.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "test_util.h"

namespace ssmtune::testing {

struct GpuTolerance {
    double rtol, atol;
};

// Per-dtype tolerances for elementwise kernels (same double math as the CPU, rounded to T) and for kernels
// whose summation order differs from the CPU's (reductions, GEMM).
inline GpuTolerance elementwise_tolerance(DType t) { return t == DType::F64 ? GpuTolerance{1e-13, 1e-14} : GpuTolerance{2e-7, 1e-7}; }
inline GpuTolerance summation_tolerance(DType t) { return t == DType::F64 ? GpuTolerance{1e-11, 1e-12} : GpuTolerance{2e-5, 2e-5}; }

// CHECKs a GPU tensor against its CPU counterpart.
inline void expect_gpu_close(const Tensor& gpu, const Tensor& cpu, GpuTolerance tol, const std::string& name) {
    REQUIRE(gpu.device().is_cuda());
    expect_close(gpu.to(Device::cpu()), cpu, tol.rtol, tol.atol, name + " (GPU vs CPU)");
}

// A copy of x on the GPU as a leaf that requires grad (x itself is left as it is).
inline Tensor gpu_leaf(const Tensor& x) {
    Tensor g = x.detach().to(Device::cuda());
    g.set_requires_grad(true);
    return g;
}

// Makes every CPU tensor of `cpu` a leaf that requires grad and returns their GPU twins (gpu_leaf).
inline std::vector<Tensor> gpu_twins(std::vector<Tensor>& cpu) {
    std::vector<Tensor> gpu;
    for (Tensor& p : cpu) {
        p.set_requires_grad(true);
        gpu.push_back(gpu_leaf(p));
    }
    return gpu;
}

using TensorsFn = std::function<Tensor(const std::vector<Tensor>&)>;

// f on CPU inputs and on GPU copies of them: the outputs must agree (forward tolerance), and, for inputs that
// require grad, the gradients of Σ out ⊙ r (r a fixed random tensor) must agree too (backward tolerance).
inline void expect_op_matches_cpu(const std::string& name, const TensorsFn& f, const std::vector<Tensor>& cpu_inputs,
                                  GpuTolerance forward, GpuTolerance backward) {
    INFO(name);  // names the case when a REQUIRE below stops it
    std::vector<Tensor> cpu, gpu;
    for (const Tensor& x : cpu_inputs) {
        Tensor c = x.detach().clone();
        if (x.requires_grad()) c.set_requires_grad(true);
        cpu.push_back(c);
        gpu.push_back(x.requires_grad() ? gpu_leaf(x) : x.detach().to(Device::cuda()));
    }
    const Tensor out_cpu = f(cpu), out_gpu = f(gpu);
    REQUIRE(out_gpu.device().is_cuda());
    expect_gpu_close(out_gpu, out_cpu, forward, name + " forward");
    if (!out_cpu.requires_grad()) return;
    const Tensor r = Tensor::randn(out_cpu.shape(), 99, out_cpu.dtype());
    ops::sum(ops::mul(out_cpu, r)).backward();
    ops::sum(ops::mul(out_gpu, r.to(Device::cuda()))).backward();
    for (size_t k = 0; k < cpu.size(); ++k) {
        if (!cpu[k].requires_grad()) continue;
        if (!cpu[k].grad().defined()) {  // an input f does not use: no gradient on either device
            CHECK_MESSAGE(!gpu[k].grad().defined(), name, ": input ", k, " has a gradient on the GPU only");
            continue;
        }
        REQUIRE(gpu[k].grad().defined());
        expect_gpu_close(gpu[k].grad(), cpu[k].grad(), backward, name + " gradient of input " + std::to_string(k));
    }
}

}  // namespace ssmtune::testing
