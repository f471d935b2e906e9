// PARALLEL_ADAPTER: He et al. 2022's scaled parallel adapter (reference/peft-methods.md §6), beside a module whose
// input is x:   out = module(x) + Δ(x),   Δ(x) = s · up(f(down(dropout(x))))
//   down: x W_downᵀ + b_down, W_down [r, in], b_down [r];  up: W_upᵀ + b_up, W_up [out, r], b_up [out]
// (s multiplies the whole up projection, bias included, as petl_factory.Adapter_Layer does). f = relu (default),
// gelu, silu or identity; s = "scaling" (default 4.0, He et al.'s scaled PA).
// Targets: by default (target_modules null) the whole mixer of each selected LM layer, o_t = mixer(u_t) + Δ(u_t)
// with u_t the normalised block input (width D; the SSM analogue of an FFN-parallel adapter), and the whole S4D
// layer of each selected classifier layer (input [B, H, L], channels first: Δ acts per position over channels).
// target_modules may instead name Linear or 1x1 Conv1d modules (e.g. ["out_proj"], ["in_proj"]), or "mixer".
// Init "lora": W_down Kaiming-uniform(a=√5) = U(±1/√in), W_up zero, zero biases (outputs unchanged at start);
// "bert": both weights N(0, 0.02²), zero biases. Files: <module>.adapter.{down,up}.{weight,bias}.
// Not here: merging (the nonlinearity; even identity is refused, see merge_refusal), a learnable scalar s, the
// optional LayerNorm of Adapter_Layer, sequential adapters, multi-head PA.
#include <cmath>

#include "ops/ops.h"
#include "peft/method.h"

namespace ssmtune::peft {

using json = nlohmann::json;

namespace {

enum class Activation { Relu, Gelu, Silu, Identity };

// One projection's tensors: weight [out, in], bias [out] (He et al.'s nn.Linear down_proj / up_proj).
class Projection : public models::Module {
public:
    Projection(Tensor weight, Tensor bias) {
        register_parameter("weight", trainable(weight));
        register_parameter("bias", trainable(bias));
    }
    Tensor forward(const Tensor& x) { return ops::linear(x, params_[0].second, params_[1].second); }
    std::string type_name() const override { return "Linear"; }
};

struct AdapterSettings {
    int64_t r = 16;
    double scale = 4.0;
    Activation act = Activation::Relu;
    std::string act_name = "relu";
    bool bert_init = false;
    double dropout = 0.0;
};

class AdapterDelta : public models::OutputDelta {
public:
    // channels_first: the host's input is [B, in, L] (S4D layer, 1x1 Conv1d); [B, in] inputs (S4D step) are
    // channels-last either way.
    AdapterDelta(int64_t in, int64_t out, const AdapterSettings& s, Generator& gen, DType dtype, bool channels_first)
        : s_(s), gen_(gen.seed() * 7919 + gen.advance(1)), channels_first_(channels_first) {
        Tensor down_w, up_w;
        if (s.bert_init) {
            down_w = Tensor::randn({s.r, in}, gen, dtype, 0.0, 0.02);
            up_w = Tensor::randn({out, s.r}, gen, dtype, 0.0, 0.02);
        } else {
            const double bound = 1.0 / std::sqrt(double(in));  // kaiming_uniform(a=√5) on [r, in]
            down_w = Tensor::uniform({s.r, in}, gen, -bound, bound, dtype);
            up_w = Tensor::zeros({out, s.r}, dtype);
        }
        down_ = register_module("down", std::make_shared<Projection>(down_w, Tensor::zeros({s.r}, dtype)));
        up_ = register_module("up", std::make_shared<Projection>(up_w, Tensor::zeros({out}, dtype)));
    }
    Tensor forward(const Tensor& x) override {
        const bool cf = channels_first_ && x.dim() == 3;
        Tensor in = cf ? x.transpose(1, 2) : x;  // [..., in]
        if (is_training() && s_.dropout > 0) in = ops::dropout(in, s_.dropout, true, gen_);
        Tensor h = down_->forward(in);            // [..., r]
        switch (s_.act) {
            case Activation::Relu: h = ops::relu(h); break;
            case Activation::Gelu: h = ops::gelu(h); break;
            case Activation::Silu: h = ops::silu(h); break;
            case Activation::Identity: break;
        }
        Tensor out = ops::mul_scalar(up_->forward(h), s_.scale);  // [..., out]
        return cf ? out.transpose(1, 2) : out;
    }
    std::string type_name() const override { return "ParallelAdapter"; }
    Generator* training_generator() override { return s_.dropout > 0 ? &gen_ : nullptr; }

private:
    AdapterSettings s_;
    Generator gen_;
    bool channels_first_;
    std::shared_ptr<Projection> down_, up_;
};

AdapterSettings settings_from(const json& c) {
    AdapterSettings s;
    s.r = c["r"].get<int64_t>();
    SSMTUNE_CHECK(c["scaling"].is_number(), "PARALLEL_ADAPTER \"scaling\" must be a number (He et al.'s s, 4.0 for ",
                  "the scaled PA), got ", c["scaling"].dump(), "; a learnable scalar is not implemented");
    s.scale = c["scaling"].get<double>();
    s.act_name = c["activation"].is_string() ? c["activation"].get<std::string>() : c["activation"].dump();
    if (s.act_name == "relu") s.act = Activation::Relu;
    else if (s.act_name == "gelu") s.act = Activation::Gelu;
    else if (s.act_name == "silu") s.act = Activation::Silu;
    else if (s.act_name == "identity") s.act = Activation::Identity;
    else SSMTUNE_FAIL("PARALLEL_ADAPTER \"activation\" = ", s.act_name, " is not supported; fix: use relu, gelu, ",
                      "silu or identity");
    SSMTUNE_CHECK(c["init"] == "lora" || c["init"] == "bert", "PARALLEL_ADAPTER \"init\" = ", c["init"].dump(),
                  " is not supported; fix: use \"lora\" (Kaiming down, zero up) or \"bert\" (both N(0, 0.02²))");
    s.bert_init = c["init"] == "bert";
    s.dropout = c["adapter_dropout"].get<double>();
    return s;
}

bool adapter_can_target(models::Module* m) {
    return dynamic_cast<models::Linear*>(m) || dynamic_cast<models::PointwiseConv1d*>(m) ||
           dynamic_cast<models::Mixer*>(m) || dynamic_cast<models::S4DLayer*>(m);
}

class ParallelAdapterMethod : public Method {
public:
    ParallelAdapterMethod(ModelView& model, const Config& config) : s_(settings_from(config.json)) {
        const json& c = config.json;
        Generator gen(c["init_seed"].get<uint64_t>());
        std::vector<std::pair<std::string, models::Module*>> targets;
        if (c["target_modules"].is_null()) {  // the whole mixer / S4D layer of each selected layer
            for (int64_t i : selected_layers(c, model)) {
                if (model.lm) targets.emplace_back("backbone.layers." + std::to_string(i) + ".mixer", &model.lm->mixer(i));
                else targets.emplace_back("s4_layers." + std::to_string(i), &model.s4d->layer(i));
            }
        } else {
            targets = match_targets(model, c, adapter_can_target,
                                    "Linear and 1x1 Conv1d modules, whole mixers and whole S4D layers");
        }
        const DType dtype = model.dtype();
        try {
            for (auto& [name, m] : targets) {
                auto* host = dynamic_cast<models::DeltaHost*>(m);
                SSMTUNE_CHECK(host && !host->delta(), name, " already carries an adapter; fix: detach it first");
                int64_t in = 0, out = 0;
                bool channels_first = false;
                if (auto* lin = dynamic_cast<models::Linear*>(m)) {
                    in = lin->in_features();
                    out = lin->out_features();
                } else if (auto* conv = dynamic_cast<models::PointwiseConv1d*>(m)) {
                    in = conv->weight().size(1);
                    out = conv->weight().size(0);
                    channels_first = true;
                } else if (dynamic_cast<models::Mixer*>(m)) {
                    in = out = model.lm->config().hidden_size;
                } else {
                    in = out = model.s4d->config().d_model;
                    channels_first = true;
                }
                host->attach_delta("adapter", std::make_shared<AdapterDelta>(in, out, s_, gen, dtype, channels_first));
                hosts_.emplace_back(name, host);
            }
        } catch (...) {
            detach();
            throw;
        }
    }
    std::vector<std::pair<std::string, Tensor>> tensors() const override {
        std::vector<std::pair<std::string, Tensor>> out;
        for (auto& [name, host] : hosts_)
            for (auto& [pname, t] : host->delta()->named_parameters()) out.emplace_back(name + ".adapter." + pname, t);
        return out;
    }
    std::string merge_refusal() const override {
        if (s_.act == Activation::Identity)
            return "with activation identity the adapter is linear, but folding it (and its biases) into the module "
                   "beside it is not implemented (a whole mixer or S4D layer has no single weight to fold into); "
                   "use LORA for a mergeable low-rank delta";
        return "a parallel adapter computes s·f(x W_downᵀ + b_down) W_upᵀ beside the module, and the " + s_.act_name +
               " nonlinearity f between its two projections does not fold into a weight";
    }
    void detach() override {
        for (auto& [name, host] : hosts_) host->detach_delta(host->delta());  // (alone on its host: LoRA shares only with LoRA)
        hosts_.clear();
    }

private:
    AdapterSettings s_;
    std::vector<std::pair<std::string, models::DeltaHost*>> hosts_;
};

}  // namespace

std::unique_ptr<Method> make_parallel_adapter(ModelView& model, const Config& config) {
    return std::make_unique<ParallelAdapterMethod>(model, config);
}

}  // namespace ssmtune::peft
