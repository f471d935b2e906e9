// Every differentiable op of ssmtune, one declaration each. Include "ops/ops.h" (or "ssmtune.h").
//
// Each family lives in its own file with forward and backward side by side (listed per section). All float
// ops compute in F32 or F64; inputs of one op must share dtype and device (an Error otherwise, naming both).
// Binary ops broadcast like NumPy. Every op records an autograd node only when an input requires grad.
// Shape letters follow DESIGN.md's glossary. Not here: the fused SSM ops (ops/ssm.h), CUDA kernels (cuda/).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace ssmtune::ops {

// ---- elementwise_binary.cpp ----
Shape broadcast_shapes(const Shape& a, const Shape& b);  // NumPy rules; Error naming both shapes
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& a, double s);
Tensor mul_scalar(const Tensor& a, double s);
// Sum of g over the dimensions that broadcasting expanded, so the result has `shape` (used by backward).
Tensor sum_to_shape(const Tensor& g, const Shape& shape);
// In place, no autograd: dst += src (src broadcast to dst's shape). For gradient accumulation and optimizers.
void add_(Tensor& dst, const Tensor& src);

// ---- elementwise_unary.cpp ----
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor pow(const Tensor& x, double p);                 // x^p, p a scalar
Tensor abs(const Tensor& x);                           // d|x|/dx = sign(x), 0 at 0
Tensor clamp(const Tensor& x, double lo, double hi);   // gradient 1 inside [lo, hi], 0 outside
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor silu(const Tensor& x);                          // x * sigmoid(x)
Tensor softplus(const Tensor& x, double beta = 1.0, double threshold = 20.0);  // PyTorch's, stable
Tensor gelu(const Tensor& x);                          // exact (erf) form, PyTorch's default
Tensor relu(const Tensor& x);
Tensor sin(const Tensor& x);                           // radians; d/dx = cos(x)
Tensor cos(const Tensor& x);                           // radians; d/dx = −sin(x)

// ---- reduce.cpp ----  dims may be negative; empty dims = all dims
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);  // gradient to the first maximum
Tensor max(const Tensor& x);                                     // over all elements, as a 0-d tensor
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);  // I64, not differentiable

// ---- matmul.cpp ----
// a[..., M, K] @ b[..., K, N] with broadcast batch dims; 1-D operands as in NumPy. Eigen GEMM, threaded.
Tensor matmul(const Tensor& a, const Tensor& b);
// x[..., in] @ w[out, in]^T + bias[out]; bias may be undefined.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());
// Number of GEMM kernel calls since start (forward and backward): lets tests prove a frozen weight gets none.
uint64_t gemm_count();

// ---- embedding.cpp ----
// weight[V, D], ids (I64 or I32) of any shape -> [..., D]; ids out of [0, V) are an Error.
Tensor embedding(const Tensor& weight, const Tensor& ids);

// ---- shape_ops.cpp ---- (views are Tensor methods: reshape, transpose, permute, narrow, expand, ...)
Tensor concat(const std::vector<Tensor>& tensors, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end);  // [start, end), negative from the end
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);  // index: 1-D I64/I32
// cond (BOOL, U8 or any: nonzero = true) picks a, else b; all three broadcast.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

// ---- norm.cpp ----
Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps);  // x[..., D], weight[D]
Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);  // weight/bias optional

// ---- softmax.cpp ----
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// logits[M, V] (or [..., V], flattened), target[M] I64/I32; mean over targets != ignore_index (0 if none).
Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index = -100);

// ---- dropout.cpp ----
// Zeroes each element with probability p and scales the rest by 1/(1-p) when training; identity otherwise.
// The mask of element i is Philox draw gen.advance(numel) + i, so it is reproducible and matches on GPU.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

// ---- conv1d.cpp ----
// Depthwise causal conv (Mamba's short conv): x[B, C, L], weight[C, K] or [C, 1, K], bias[C] (optional):
// out[b, c, t] = bias[c] + sum_k weight[c, k] * x[b, c, t - (K-1) + k], zero before t = 0.
Tensor causal_conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace ssmtune::ops
