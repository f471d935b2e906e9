// ssmtune — a from-scratch C++17 training stack for state space models. Include this one header.
//
//   #include "ssmtune.h"
//   using namespace ssmtune;
//
//   int main() {
//       Tensor w = Tensor::randn({1, 3}, /*seed=*/0).set_requires_grad(true);
//       Tensor x = Tensor::randn({64, 3}, 1), y = ops::matmul(x, Tensor::from_vector<float>({1, -2, 3}, {3, 1}));
//       autograd::AdamW opt({w}, autograd::AdamW::Options().lr(0.1));
//       for (int step = 0; step < 200; ++step) {
//           Tensor loss = ops::mean(ops::pow(ops::linear(x, w) - y, 2.0));
//           loss.backward();
//           opt.step();
//           opt.zero_grad();
//       }
//       std::cout << w << "\n";   // close to [1, -2, 3]
//   }
//
// Layers: engine (tensors, dtypes, RNG, safetensors) → autograd (graph, gradcheck, optimizers) → ops.
#pragma once

#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "autograd/optim.h"
#include "engine/cpu_isa.h"
#include "engine/safetensors.h"
#include "engine/tensor.h"
#include "ops/ops.h"
#include "engine/version.h"
