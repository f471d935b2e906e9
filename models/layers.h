// The small layers every model is built from: Linear, Embedding, RMSNorm, LayerNorm.
//
// Parameter names and layouts are PyTorch's (Linear weight [out, in], bias [out]) so checkpoints map 1:1.
// Linear carries the PEFT hook point: an optional LinearDelta whose output is added to W x + b (LoRA, SURM,
// parallel adapters); the base weight stays untouched and frozen. Inits are PyTorch's defaults
// (kaiming-uniform a=√5 → U(±1/√in) for weight and bias), seeded through a Generator.
// Not here: dropout layers (ops::dropout is called where needed), convolutions other than the depthwise one.
#pragma once

#include <memory>

#include "engine/rng.h"
#include "models/module.h"

namespace ssmtune::models {

// Something added to a Linear's output: out = W x + b + delta.forward(x). Attached by peft/.
class LinearDelta : public Module {
public:
    virtual Tensor forward(const Tensor& x) = 0;  // x [..., in] -> [..., out]
};

class Linear : public Module {
public:
    Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen);
    Tensor forward(const Tensor& x);
    Tensor& weight() { return params_[0].second; }  // [out, in]
    Tensor* bias() { return has_bias_ ? &params_[1].second : nullptr; }  // [out]
    int64_t in_features() const { return in_; }
    int64_t out_features() const { return out_; }
    // PEFT hook: registered as a child named `adapter_name` so its tensors appear in named_parameters().
    void attach_delta(const std::string& adapter_name, std::shared_ptr<LinearDelta> delta);
    void detach_delta();
    LinearDelta* delta() { return delta_.get(); }
    std::string type_name() const override { return "Linear"; }

private:
    int64_t in_, out_;
    bool has_bias_;
    std::shared_ptr<LinearDelta> delta_;
};

class Embedding : public Module {
public:
    Embedding(int64_t num_embeddings, int64_t dim, Generator& gen, double std = 1.0);
    Tensor forward(const Tensor& ids);  // ids [...] I64/I32 -> [..., dim]
    Tensor& weight() { return params_[0].second; }
    std::string type_name() const override { return "Embedding"; }
};

class RMSNorm : public Module {
public:
    RMSNorm(int64_t dim, double eps);
    Tensor forward(const Tensor& x);  // x [..., dim]
    Tensor& weight() { return params_[0].second; }
    double eps() const { return eps_; }
    std::string type_name() const override { return "RMSNorm"; }

private:
    double eps_;
};

// Depthwise causal Conv1d (nn.Conv1d(E, E, K, groups=E, padding=K−1) keeping the first L outputs):
// weight [E, 1, K], bias [E] (optional). Init U(±1/√K), PyTorch's default for this fan-in.
class DepthwiseConv1d : public Module {
public:
    DepthwiseConv1d(int64_t channels, int64_t kernel, bool bias, Generator& gen);
    Tensor forward(const Tensor& x);  // x [B, E, L] -> [B, E, L]
    Tensor& weight() { return params_[0].second; }
    Tensor* bias() { return has_bias_ ? &params_[1].second : nullptr; }
    int64_t kernel() const { return kernel_; }
    std::string type_name() const override { return "Conv1d"; }

private:
    int64_t kernel_;
    bool has_bias_;
};

class LayerNorm : public Module {
public:
    LayerNorm(int64_t dim, double eps = 1e-5);
    Tensor forward(const Tensor& x);
    std::string type_name() const override { return "LayerNorm"; }

private:
    double eps_;
};

}  // namespace ssmtune::models
