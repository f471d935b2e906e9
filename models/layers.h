// The small layers every model is built from: Linear, Embedding, RMSNorm, LayerNorm, depthwise and pointwise Conv1d.
//
// Parameter names and layouts are PyTorch's (Linear weight [out, in], bias [out]) so checkpoints map 1:1.
// Linear, Embedding and PointwiseConv1d carry the PEFT output hook: an optional OutputDelta whose output is added
// to the layer's (LoRA, SURM, parallel adapters); the base weight stays untouched and frozen. Every layer reads
// its parameters through Module::effective(), so a ParameterDelta (SDLoRA, BitFit) also applies. Inits are PyTorch's defaults
// (kaiming-uniform a=√5 → U(±1/√in) for weight and bias), seeded through a Generator.
// Not here: dropout layers (ops::dropout is called where needed), convolutions other than the depthwise one.
#pragma once

#include <memory>

#include "engine/rng.h"
#include "models/module.h"

namespace ssmtune::models {

// Something added to a layer's output: out = layer(x) + delta.forward(x). Attached by peft/.
// For Linear x is [..., in] and the result [..., out]; for Embedding x holds the ids; for PointwiseConv1d
// x is [B, in, L] and the result [B, out, L].
class OutputDelta : public Module {
public:
    virtual Tensor forward(const Tensor& x) = 0;
    // The host's output with the delta applied: out + forward(x) by default; a sequential adapter (SURM's
    // adapter mode) overrides it to act on `out` itself.
    virtual Tensor apply(const Tensor& out, const Tensor& x);
    // Per-sample adapters (peft::AdapterSet::set_batch_adapters): a mask [B], 1 for the samples this delta serves and
    // 0 for the others, by which a delta that supports it (LoRA) multiplies its term row by row; undefined = all.
    void set_sample_mask(Tensor mask) { sample_mask_ = std::move(mask); }

protected:
    Tensor masked(const Tensor& term) const;  // term [B, ...] ⊙ the mask over B, or term when no mask is set

private:
    Tensor sample_mask_;
};

// A layer that can carry OutputDeltas (each registered as a child named by the adapter, so its tensors appear in
// named_parameters() under e.g. "in_proj.lora"). Several apply in the order attached, each to the output so far
// (out <- d.apply(out, x)), as HF's LoRA layer loops over its active adapters; the methods decide which may share a
// host (LoRA with LoRA only).
class DeltaHost : public Module {
public:
    // The child is named adapter_name, or adapter_name + "_2", "_3", ... when that name is taken.
    void attach_delta(const std::string& adapter_name, std::shared_ptr<OutputDelta> delta);
    void detach_delta(const OutputDelta* delta);  // that one (nothing when it is not attached here)
    OutputDelta* delta() { return deltas_.empty() ? nullptr : deltas_.front().get(); }  // the first attached
    const std::vector<std::shared_ptr<OutputDelta>>& deltas() const { return deltas_; }
    // out with every delta applied in order, or out itself (public: the LM and the S4D classifier apply the deltas
    // of a whole mixer / S4D layer where they call it).
    Tensor add_delta(const Tensor& out, const Tensor& x) {
        if (deltas_.empty()) return out;
        Tensor y = deltas_.front()->apply(out, x);
        for (size_t i = 1; i < deltas_.size(); ++i) y = deltas_[i]->apply(y, x);
        return y;
    }

private:
    std::vector<std::shared_ptr<OutputDelta>> deltas_;
};

class Linear : public DeltaHost {
public:
    Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen);
    Tensor forward(const Tensor& x);
    Tensor& weight() { return params_[0].second; }  // [out, in]
    Tensor* bias() { return has_bias_ ? &params_[1].second : nullptr; }  // [out]
    int64_t in_features() const { return in_; }
    int64_t out_features() const { return out_; }
    std::string type_name() const override { return "Linear"; }

private:
    int64_t in_, out_;
    bool has_bias_;
};

class Embedding : public DeltaHost {
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
    Tensor effective_weight() { return effective(size_t(0)); }
    Tensor effective_bias() { return has_bias_ ? effective(size_t(1)) : Tensor(); }
    int64_t kernel() const { return kernel_; }
    std::string type_name() const override { return "Conv1d"; }

private:
    int64_t kernel_;
    bool has_bias_;
};

// Conv1d(in, out, kernel_size=1) over channels, PyTorch's names and init: weight [out, in, 1], bias [out].
class PointwiseConv1d : public DeltaHost {
public:
    PointwiseConv1d(int64_t in, int64_t out, Generator& gen);
    Tensor forward(const Tensor& y);  // y [B, in, L] -> [B, out, L]
    Tensor& weight() { return params_[0].second; }
    Tensor& bias() { return params_[1].second; }
    std::string type_name() const override { return "Conv1d"; }
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
