// `ssmtune demo`: trains a 2-layer MLP (linear → tanh → linear) with AdamW, warmup + cosine schedule and
// gradient clipping on a built-in synthetic regression task, y = sin(3·x₀) + x₁·x₂ with x ~ U(−1, 1)³, and
// prints the loss falling. It exercises tensors, autograd, ops and optimizers end to end in seconds on 2 cores.
// Not here: SSM models (they come with the models issue and the `train` command).
#include <chrono>
#include <cmath>
#include <cstdio>

#include "autograd/node.h"
#include "autograd/optim.h"
#include "ops/ops.h"
#include "tools/commands.h"

namespace ssmtune::tools {

namespace {
// x [B, 3] uniform in (−1, 1); y [B, 1] = sin(3 x0) + x1 x2. Data, not part of the graph.
void synthetic_batch(Generator& gen, int64_t batch, Tensor& x, Tensor& y) {
    x = Tensor::uniform({batch, 3}, gen, -1.0, 1.0);
    y = Tensor::empty({batch, 1});
    const float* px = x.data<float>();
    float* py = y.data<float>();
    for (int64_t i = 0; i < batch; ++i) py[i] = std::sin(3.0f * px[3 * i]) + px[3 * i + 1] * px[3 * i + 2];
}
}  // namespace

int run_demo(int argc, char** argv) {
    Flags flags(argc, argv, {{"steps", "600"}, {"hidden", "64"}, {"lr", "0.01"}, {"seed", "0"}, {"batch", "256"}},
                "demo");
    if (flags.help()) {
        std::printf("usage: ssmtune demo [--steps N] [--hidden H] [--lr LR] [--batch B] [--seed S]\n"
                    "Fits y = sin(3 x0) + x1 x2 with a 2-layer MLP and AdamW; prints the loss every 50 steps.\n");
        return 0;
    }
    const int64_t steps = flags.integer("steps", 1, Flags::kMaxSize), hidden = flags.integer("hidden", 1, Flags::kMaxSize),
                  batch = flags.integer("batch", 1, Flags::kMaxSize);
    const double lr = flags.number("lr");
    if (!(lr > 0)) throw UsageError("demo: --lr must be positive");
    const uint64_t seed = flags.seed();

    // Parameters, PyTorch's Linear init: U(±1/√fan_in).
    Generator init(seed);
    Tensor w1 = Tensor::uniform({hidden, 3}, init, -1 / std::sqrt(3.0), 1 / std::sqrt(3.0)).set_requires_grad(true);
    Tensor b1 = Tensor::uniform({hidden}, init, -1 / std::sqrt(3.0), 1 / std::sqrt(3.0)).set_requires_grad(true);
    const double bound2 = 1 / std::sqrt(double(hidden));
    Tensor w2 = Tensor::uniform({1, hidden}, init, -bound2, bound2).set_requires_grad(true);
    Tensor b2 = Tensor::uniform({1}, init, -bound2, bound2).set_requires_grad(true);
    autograd::AdamW opt({{"weights", {w1, w2}, lr, 0.01}, {"biases", {b1, b2}, lr, 0.0}},
                        autograd::AdamW::Options().lr(lr));
    const autograd::LRSchedule schedule = autograd::LRSchedule::cosine(steps / 10, steps, 0.1);

    Generator data(seed + 1);
    Tensor x_val, y_val;
    synthetic_batch(data, 2048, x_val, y_val);
    const auto forward = [&](const Tensor& x) { return ops::linear(ops::tanh(ops::linear(x, w1, b1)), w2, b2); };
    const auto val_loss = [&] {
        autograd::NoGradGuard no_grad;
        return ops::mean(ops::pow(forward(x_val) - y_val, 2.0)).item();
    };
    const double initial = val_loss();
    std::printf("demo: 2-layer MLP (3 → %lld → 1), AdamW lr %.3g, cosine schedule, %lld steps of %lld samples\n",
                (long long)hidden, lr, (long long)steps, (long long)batch);
    std::printf("step %5d | val loss %.5f\n", 0, initial);
    const auto start = std::chrono::steady_clock::now();
    for (int64_t step = 1; step <= steps; ++step) {
        Tensor x, y;
        synthetic_batch(data, batch, x, y);
        Tensor loss = ops::mean(ops::pow(forward(x) - y, 2.0));
        loss.backward();
        const double gnorm = autograd::clip_grad_norm(opt.parameters(), 1.0);
        opt.set_lr_factor(schedule.factor(step - 1));
        opt.step();
        opt.zero_grad();
        if (step % 50 == 0 || step == steps)
            std::printf("step %5lld | train loss %.5f | lr %.2e | gnorm %.3f\n", (long long)step, loss.item(),
                        lr * schedule.factor(step - 1), gnorm);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double final_loss = val_loss();
    std::printf("val loss %.5f → %.5f in %.2f s (%.0f samples/s)\n", initial, final_loss, seconds,
                double(steps * batch) / seconds);
    if (!(final_loss < 0.1 * initial)) {
        std::fprintf(stderr, "error: demo did not converge (val loss %.5f, initial %.5f)\n", final_loss, initial);
        return 1;
    }
    std::printf("demo ok\n");
    return 0;
}

}  // namespace ssmtune::tools
