// S4D's CUDA kernels against the CPU ops: the Vandermonde kernel (ZOH and bilinear, forward and the four parameter
// gradients), the initial-state response (the same kernels shifted by one power; all five gradients), the causal long
// convolution (direct and cuFFT, both adjoints), and an S4D classifier's training step (also with INITIAL_STATE).
#include <optional>

#include "gpu_compare.h"
#include "models/tiny_models.h"
#include "peft/peft.h"
#include "ops/ssm.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {
GpuTolerance s4d_tolerance(DType t) { return t == DType::F64 ? GpuTolerance{1e-10, 1e-11} : GpuTolerance{1e-5, 1e-5}; }

Tensor leaf(Tensor t) {
    t.set_requires_grad(true);
    return t;
}
}  // namespace

TEST_CASE("gpu: s4d kernel forward and gradients match the CPU (ZOH and bilinear)") {
    for (DType t : {DType::F32, DType::F64})
        for (auto method : {ops::S4DDiscretization::ZOH, ops::S4DDiscretization::Bilinear}) {
            const int64_t H = 5, M = 7, L = 300;
            const std::vector<Tensor> in = {
                leaf(ops::add_scalar(ops::mul_scalar(Tensor::randn({H}, 1, t), 0.5), -4.0)),
                leaf(ops::mul_scalar(Tensor::randn({H, M, 2}, 2, t), 0.5)),
                leaf(ops::mul_scalar(Tensor::randn({H, M}, 3, t), 0.3)),
                leaf(ops::mul_scalar(Tensor::randn({H, M}, 4, t), 3.0))};
            expect_op_matches_cpu(method == ops::S4DDiscretization::ZOH ? "s4d_kernel ZOH" : "s4d_kernel bilinear",
                                  [method](const auto& x) { return ops::s4d_kernel(x[0], x[1], x[2], x[3], 300, method); },
                                  in, s4d_tolerance(t), s4d_tolerance(t));
        }
}

TEST_CASE("gpu: s4d initial-state response and its five gradients match the CPU (ZOH and bilinear)") {
    for (DType t : {DType::F32, DType::F64})
        for (auto method : {ops::S4DDiscretization::ZOH, ops::S4DDiscretization::Bilinear}) {
            const int64_t H = 5, M = 7;
            const std::vector<Tensor> in = {
                leaf(ops::add_scalar(ops::mul_scalar(Tensor::randn({H}, 11, t), 0.5), -4.0)),
                leaf(ops::mul_scalar(Tensor::randn({H, M, 2}, 12, t), 0.5)),
                leaf(ops::mul_scalar(Tensor::randn({H, M}, 13, t), 0.3)),
                leaf(ops::mul_scalar(Tensor::randn({H, M}, 14, t), 3.0)),
                leaf(Tensor::randn({H, M, 2}, 15, t))};
            for (int64_t L : {int64_t(1), int64_t(300)})
                expect_op_matches_cpu(
                    std::string(method == ops::S4DDiscretization::ZOH ? "initial state ZOH" : "initial state bilinear") +
                        " L=" + std::to_string(L),
                    [method, L](const auto& x) { return ops::s4d_initial_state_response(x[0], x[1], x[2], x[3], x[4], L, method); },
                    in, s4d_tolerance(t), s4d_tolerance(t));
        }
}

TEST_CASE("gpu: causal long convolution, direct and FFT, matches the CPU") {
    for (DType t : {DType::F32, DType::F64})
        for (auto algorithm : {ops::ConvAlgorithm::Direct, ops::ConvAlgorithm::FFT})
            for (int64_t Lk : {int64_t(5), int64_t(300), int64_t(700)}) {
                const std::string name = std::string(algorithm == ops::ConvAlgorithm::FFT ? "FFT" : "direct") +
                                         " Lk=" + std::to_string(Lk);
                expect_op_matches_cpu(name, [algorithm](const auto& x) { return ops::causal_conv(x[0], x[1], algorithm); },
                                      {leaf(Tensor::randn({3, 4, 513}, 5, t)), leaf(Tensor::randn({4, Lk}, 6, t))},
                                      s4d_tolerance(t), GpuTolerance{1e-4, 1e-4});
            }
}

TEST_CASE("gpu: an S4D classifier's training step matches the CPU (loss and every gradient), also with INITIAL_STATE") {
    for (bool initial_state : {false, true}) {
        INFO("initial-state tuning: " << initial_state);
        models::S4DConfig c = tiny_s4d_config();
        c.d_model = 16;
        c.d_state = 8;
        models::S4DClassifier cpu(c, 3), gpu(c, 3);
        const char* method = R"({"peft_type": "INITIAL_STATE", "init": "random"})";
        std::optional<peft::Adapter> a_cpu, a_gpu;
        if (initial_state) {
            a_cpu.emplace(peft::apply(cpu, peft::Config::parse(method)));
            a_gpu.emplace(peft::apply(gpu, peft::Config::parse(method)));
            a_gpu->to(Device::cuda());
        } else {
            gpu.to(Device::cuda());
        }
        const Tensor x = Tensor::randn({4, 200, 3}, 7);
        const Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 3, 1, 2}, {4});
        const Tensor l_cpu = cpu.loss(x, labels), l_gpu = gpu.loss(x.to(Device::cuda()), labels.to(Device::cuda()));
        CHECK(l_gpu.item() == doctest::Approx(l_cpu.item()).epsilon(1e-4));
        l_cpu.backward();
        l_gpu.backward();
        const auto nc = initial_state ? a_cpu->named_parameters() : cpu.named_parameters();
        const auto ng = initial_state ? a_gpu->named_parameters() : gpu.named_parameters();
        REQUIRE(nc.size() == ng.size());
        for (size_t k = 0; k < nc.size(); ++k)
            expect_gpu_close(ng[k].second.grad(), nc[k].second.grad(), GpuTolerance{2e-3, 2e-5}, nc[k].first);
    }
}

TEST_CASE("gpu: an S4D classifier's recurrent mode on the GPU gives the CPU's logits") {
    models::S4DConfig c = tiny_s4d_config();
    models::S4DClassifier cpu(c, 4), gpu(c, 4);
    gpu.to(Device::cuda());
    cpu.eval();
    gpu.eval();
    const Tensor x = Tensor::randn({2, 30, 3}, 9);
    expect_gpu_close(gpu.forward_recurrent(x.to(Device::cuda())), cpu.forward_recurrent(x), GpuTolerance{1e-4, 1e-5},
                     "recurrent logits");
}
