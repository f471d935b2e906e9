// Linear, Embedding, RMSNorm, LayerNorm (see layers.h).
#include "models/layers.h"

#include <algorithm>
#include <cmath>

#include "ops/ops.h"

namespace ssmtune::models {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, Generator& gen)
    : in_(in_features), out_(out_features), has_bias_(bias) {
    SSMTUNE_CHECK(in_features > 0 && out_features > 0, "Linear: sizes must be positive, got in ", in_features,
                  " out ", out_features);
    const double bound = 1.0 / std::sqrt(double(in_features));
    register_parameter("weight", Tensor::uniform({out_features, in_features}, gen, -bound, bound));
    if (bias) register_parameter("bias", Tensor::uniform({out_features}, gen, -bound, bound));
}

Tensor OutputDelta::apply(const Tensor& out, const Tensor& x) { return ops::add(out, forward(x)); }

Tensor OutputDelta::masked(const Tensor& term) const {
    if (!sample_mask_.defined()) return term;
    SSMTUNE_CHECK(term.dim() >= 1 && term.size(0) == sample_mask_.size(0), "per-sample adapters were set for a batch of ",
                  sample_mask_.size(0), " samples, but this batch holds ", term.dim() ? term.size(0) : 0,
                  "; fix: set_batch_adapters with one name per sample of the batch");
    Shape shape(size_t(term.dim()), 1);
    shape[0] = sample_mask_.size(0);
    return ops::mul(term, sample_mask_.reshape(shape));
}

void DeltaHost::attach_delta(const std::string& adapter_name, std::shared_ptr<OutputDelta> delta) {
    SSMTUNE_CHECK(delta, "attach_delta: no delta given");
    std::string name = adapter_name;
    for (int k = 2; std::any_of(children_.begin(), children_.end(), [&](const auto& c) { return c.first == name; }); ++k)
        name = adapter_name + "_" + std::to_string(k);
    delta->train(is_training());  // an adapter follows its host's train/eval mode
    deltas_.push_back(delta);
    register_module(name, delta);
}

void DeltaHost::detach_delta(const OutputDelta* delta) {
    for (auto it = deltas_.begin(); it != deltas_.end(); ++it) {
        if (it->get() != delta) continue;
        remove_child(delta);
        deltas_.erase(it);
        return;
    }
}

Tensor Linear::forward(const Tensor& x) {
    Tensor out = ops::linear(x, effective(size_t(0)), has_bias_ ? effective(size_t(1)) : Tensor());
    return add_delta(out, x);
}

Embedding::Embedding(int64_t num_embeddings, int64_t dim, Generator& gen, double std) {
    SSMTUNE_CHECK(num_embeddings > 0 && dim > 0, "Embedding: sizes must be positive");
    register_parameter("weight", Tensor::randn({num_embeddings, dim}, gen, DType::F32, 0.0, std));
}

Tensor Embedding::forward(const Tensor& ids) { return add_delta(ops::embedding(effective(size_t(0)), ids), ids); }

RMSNorm::RMSNorm(int64_t dim, double eps) : eps_(eps) { register_parameter("weight", Tensor::ones({dim})); }

Tensor RMSNorm::forward(const Tensor& x) { return ops::rmsnorm(x, effective(size_t(0)), eps_); }

DepthwiseConv1d::DepthwiseConv1d(int64_t channels, int64_t kernel, bool bias, Generator& gen)
    : kernel_(kernel), has_bias_(bias) {
    SSMTUNE_CHECK(channels > 0 && kernel > 0, "Conv1d: channels and kernel must be positive");
    const double bound = 1.0 / std::sqrt(double(kernel));
    register_parameter("weight", Tensor::uniform({channels, 1, kernel}, gen, -bound, bound));
    if (bias) register_parameter("bias", Tensor::uniform({channels}, gen, -bound, bound));
}

Tensor DepthwiseConv1d::forward(const Tensor& x) {
    return ops::causal_conv1d(x, effective_weight(), effective_bias());
}

PointwiseConv1d::PointwiseConv1d(int64_t in, int64_t out, Generator& gen) {
    const double bound = 1.0 / std::sqrt(double(in));
    register_parameter("weight", Tensor::uniform({out, in, 1}, gen, -bound, bound));
    register_parameter("bias", Tensor::uniform({out}, gen, -bound, bound));
}

Tensor PointwiseConv1d::forward(const Tensor& y) {
    Tensor w = effective(size_t(0));
    Tensor out = ops::add(ops::matmul(w.reshape({w.size(0), w.size(1)}), y), effective(size_t(1)).unsqueeze(1));
    return add_delta(out, y);
}

LayerNorm::LayerNorm(int64_t dim, double eps) : eps_(eps) {
    register_parameter("weight", Tensor::ones({dim}));
    register_parameter("bias", Tensor::zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& x) { return ops::layernorm(x, effective(size_t(0)), effective(size_t(1)), eps_); }

}  // namespace ssmtune::models
