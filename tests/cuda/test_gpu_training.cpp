// Optimizer steps and a whole training step on the GPU against the CPU: AdamW (with and without AMSGrad) and
// SGD (momentum, Nesterov) on the same gradients, grad_norm and clipping, and a 2-layer MLP trained for a few
// steps on both devices with the same data (losses and every weight compared).
#include "autograd/optim.h"
#include "engine/tensor_copy.h"
#include "gpu_compare.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

// Runs `steps` updates of an optimizer made by make_opt on CPU and GPU copies of two parameters, with the same
// gradients each step; compares the parameters after every step.
template <class MakeOpt>
void expect_same_updates(const std::string& name, MakeOpt make_opt, DType t) {
    std::vector<Tensor> cpu = {Tensor::randn({33, 7}, 1, t), Tensor::randn({5}, 2, t)};
    std::vector<Tensor> gpu = gpu_twins(cpu);
    auto opt_cpu = make_opt(cpu);
    auto opt_gpu = make_opt(gpu);
    for (int step = 0; step < 4; ++step) {
        for (size_t k = 0; k < cpu.size(); ++k) {
            const Tensor grad = Tensor::randn(cpu[k].shape(), 100 + uint64_t(step * 10 + k), t);
            cpu[k].set_grad(grad);
            gpu[k].set_grad(grad.to(Device::cuda()));
        }
        opt_cpu.step();
        opt_gpu.step();
        for (size_t k = 0; k < cpu.size(); ++k)
            expect_gpu_close(gpu[k].detach(), cpu[k].detach(), elementwise_tolerance(t),
                             name + " parameter " + std::to_string(k) + " after step " + std::to_string(step + 1));
    }
}

}  // namespace

TEST_CASE("gpu: AdamW and SGD steps match the CPU") {
    for (DType t : {DType::F32, DType::F64}) {
        expect_same_updates("AdamW", [](std::vector<Tensor> p) {
            return autograd::AdamW(p, autograd::AdamWOptions().lr(0.01).weight_decay(0.1));
        }, t);
        expect_same_updates("AdamW amsgrad", [](std::vector<Tensor> p) {
            return autograd::AdamW(p, autograd::AdamWOptions().lr(0.01).amsgrad(true));
        }, t);
        expect_same_updates("SGD nesterov", [](std::vector<Tensor> p) {
            return autograd::SGD(p, autograd::SGDOptions().lr(0.05).momentum(0.9).nesterov(true).weight_decay(0.01));
        }, t);
        expect_same_updates("SGD dampened", [](std::vector<Tensor> p) {
            return autograd::SGD(p, autograd::SGDOptions().lr(0.05).momentum(0.5).dampening(0.3));
        }, t);
    }
}

TEST_CASE("gpu: grad_norm and clip_grad_norm match the CPU") {
    Tensor a = Tensor::randn({100000}, 3), b = Tensor::randn({17, 3}, 4);
    a.set_requires_grad(true);
    b.set_requires_grad(true);
    a.set_grad(Tensor::randn({100000}, 5));
    b.set_grad(Tensor::randn({17, 3}, 6));
    Tensor ga = gpu_leaf(a), gb = gpu_leaf(b);
    ga.set_grad(a.grad().to(Device::cuda()));
    gb.set_grad(b.grad().to(Device::cuda()));
    CHECK(autograd::grad_norm({ga, gb}) == doctest::Approx(autograd::grad_norm({a, b})).epsilon(1e-12));
    const double n_cpu = autograd::clip_grad_norm({a, b}, 1.0), n_gpu = autograd::clip_grad_norm({ga, gb}, 1.0);
    CHECK(n_gpu == doctest::Approx(n_cpu).epsilon(1e-12));
    expect_gpu_close(ga.grad(), a.grad(), elementwise_tolerance(DType::F32), "clipped gradient");
}

TEST_CASE("gpu: a 2-layer MLP trains the same on GPU and CPU") {
    const DType t = DType::F32;
    // Parameters: w1 [32, 16], b1 [32], w2 [10, 32], b2 [10]; data: x [64, 16], labels [64].
    std::vector<Tensor> cpu = {ops::mul_scalar(Tensor::randn({32, 16}, 7, t), 0.25), Tensor::zeros({32}, t),
                               ops::mul_scalar(Tensor::randn({10, 32}, 8, t), 0.18), Tensor::zeros({10}, t)};
    std::vector<Tensor> gpu = gpu_twins(cpu);
    const Tensor x = Tensor::randn({64, 16}, 9, t);
    std::vector<int64_t> labels(64);
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = int64_t((i * 7) % 10);
    const Tensor y = Tensor::from_vector(labels, {64});
    const Tensor xg = x.to(Device::cuda()), yg = y.to(Device::cuda());
    auto loss_of = [](const std::vector<Tensor>& p, const Tensor& in, const Tensor& target) {
        const Tensor h = ops::gelu(ops::linear(in, p[0], p[1]));
        return ops::cross_entropy(ops::linear(h, p[2], p[3]), target);
    };
    autograd::AdamW opt_cpu(cpu, autograd::AdamWOptions().lr(0.01)), opt_gpu(gpu, autograd::AdamWOptions().lr(0.01));
    double first = 0, last = 0;
    for (int step = 0; step < 5; ++step) {
        opt_cpu.zero_grad();
        opt_gpu.zero_grad();
        const Tensor l_cpu = loss_of(cpu, x, y), l_gpu = loss_of(gpu, xg, yg);
        CHECK(l_gpu.item() == doctest::Approx(l_cpu.item()).epsilon(1e-5));
        if (step == 0) first = l_cpu.item();
        last = l_cpu.item();
        l_cpu.backward();
        l_gpu.backward();
        for (size_t k = 0; k < cpu.size(); ++k)
            expect_gpu_close(gpu[k].grad(), cpu[k].grad(), summation_tolerance(t), "gradient " + std::to_string(k));
        opt_cpu.step();
        opt_gpu.step();
    }
    CHECK(last < first);
    for (size_t k = 0; k < cpu.size(); ++k)
        expect_gpu_close(gpu[k].detach(), cpu[k].detach(), GpuTolerance{1e-4, 1e-5}, "weight " + std::to_string(k));
}

TEST_CASE("gpu: an optimizer keeps its state when its parameters move to the GPU between steps") {
    auto make = [] {
        Tensor p = Tensor::randn({9, 5}, 40);
        p.set_requires_grad(true);
        return p;
    };
    Tensor moved = make(), stay = make();
    autograd::AdamW opt_moved({moved}, autograd::AdamWOptions().lr(0.05)), opt_stay({stay}, autograd::AdamWOptions().lr(0.05));
    for (int step = 0; step < 3; ++step) {
        if (step == 1) move_in_place({moved}, Device::cuda());  // moments made on the CPU follow at the next step
        const Tensor g = Tensor::randn({9, 5}, 41 + uint64_t(step));
        stay.set_grad(g);
        moved.set_grad(g.to(moved.device()));
        opt_stay.step();
        opt_moved.step();
    }
    REQUIRE(moved.device().is_cuda());
    expect_gpu_close(moved.detach(), stay.detach(), elementwise_tolerance(DType::F32), "parameter after 3 steps");
}
