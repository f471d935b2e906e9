// Fits y = 3x - 1 with one weight and one bias through ssmtune's autograd; prints "consumer ok" on success.
#include <cmath>
#include <cstdio>

#include "ssmtune.h"

using namespace ssmtune;

int main() {
    Tensor x = Tensor::arange(-1.0, 1.0, 0.125, DType::F32).reshape({-1, 1});
    Tensor y = x * 3.0 - 1.0;
    Tensor w = Tensor::zeros({1, 1}).set_requires_grad(true);
    Tensor b = Tensor::zeros({1}).set_requires_grad(true);
    autograd::SGD opt({w, b}, autograd::SGD::Options().lr(0.3));
    double loss_value = 0;
    for (int step = 0; step < 200; ++step) {
        Tensor loss = ops::mean(ops::pow(ops::linear(x, w, b) - y, 2.0));
        loss.backward();
        opt.step();
        opt.zero_grad();
        loss_value = loss.item();
    }
    std::printf("ssmtune %s: w %.4f b %.4f loss %.2e\n", version(), w.item(), b.item(), loss_value);
    const bool ok = std::fabs(w.item() - 3.0) < 1e-3 && std::fabs(b.item() + 1.0) < 1e-3;
    std::printf(ok ? "consumer ok\n" : "consumer FAILED\n");
    return ok ? 0 : 1;
}
