// PREFIX tuning on the Mamba and Longhorn mixers, as the furiosa ssm-peft hook does it (reference/peft-methods.md
// §4.5): per selected layer, trainable prefix vectors p [P, E] (P = num_virtual_tokens) are prepended along the
// sequence axis of the SSM input x after in_proj, z is zero-padded at the front, conv / SiLU / x_proj / dt / scan /
// gate run on P + L positions and the first P are dropped before out_proj (Mixer::hook_prefix). The recurrent mode
// runs the P positions through the one-step update when the state is created, so generation matches.
// Init N(0, init_std²) seeded by init_seed. File name: backbone.layers.{i}.mixer.prefix.
// On an SSM a prefix can only reach a start state (the virtual positions end in h and a conv window; §4.3), so it
// does not fold into the weights (merge refuses). Not here: S4D (use INITIAL_STATE, what a prefix reduces to), the
// reparameterising MLP of Li & Liang's prefix tuning, attention-style key/value prefixes (no attention here).
#include "peft/method.h"

namespace ssmtune::peft {

namespace {
class PrefixMethod : public Method {
public:
    PrefixMethod(ModelView& model, const Config& config) {
        SSMTUNE_CHECK(model.lm, "PREFIX is not supported on the S4D classifier (its layers have no input projection "
                      "to prepend to); a prefix on an SSM reduces to an initial state; fix: use INITIAL_STATE");
        const nlohmann::json& c = config.json;
        SSMTUNE_CHECK(c["init_std"].is_number() && c["init_std"].get<double>() >= 0, "PREFIX \"init_std\" must be a ",
                      "number >= 0, got ", c["init_std"].dump());
        const int64_t P = c["num_virtual_tokens"].get<int64_t>(), E = model.lm->config().intermediate_size;
        const double init_std = c["init_std"].get<double>();
        Generator gen(c["init_seed"].get<uint64_t>());
        for (int64_t i : selected_layers(c, model)) {
            models::Mixer& mixer = model.lm->mixer(i);
            SSMTUNE_CHECK(!mixer.hook_prefix.defined(), "layer ", i, " already has prefix vectors attached; fix: "
                          "detach that adapter first");
            Tensor p = trainable(Tensor::randn({P, E}, gen, model.dtype(), 0.0, init_std));  // [P, E]
            mixer.hook_prefix = p;
            mixers_.push_back(&mixer);
            tensors_.emplace_back("backbone.layers." + std::to_string(i) + ".mixer.prefix", p);
        }
    }
    std::vector<std::pair<std::string, Tensor>> tensors() const override { return tensors_; }
    std::string merge_refusal() const override { return "prefix vectors are extra inputs per layer, not weights"; }
    void detach() override {
        for (auto* m : mixers_) m->hook_prefix = Tensor();
        mixers_.clear();
    }

private:
    std::vector<std::pair<std::string, Tensor>> tensors_;
    std::vector<models::Mixer*> mixers_;
};
}  // namespace

std::unique_ptr<Method> make_prefix(ModelView& model, const Config& config) {
    return std::make_unique<PrefixMethod>(model, config);
}

}  // namespace ssmtune::peft
