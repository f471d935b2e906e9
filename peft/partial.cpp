// FULL and BITFIT: the methods that train base tensors in place instead of adding any.
//
// FULL trains every parameter (the baseline of every PEFT table). BITFIT (Ben Zaken et al. 2022, as ssm-peft's
// bitfit.py uses it on Mamba) trains only biases: by default every parameter named "*.bias" (for Mamba: conv1d.bias
// and dt_proj.bias, 2E per layer; for S4D: the encoder, output_linear, LayerNorm and decoder biases), or the
// names/suffixes listed in "bias_names". Both save the trained tensors under their own names, so "merging" is a
// no-op; detach keeps the trained values (BITFIT restores the originals, which it keeps, being small).
// Not here: creating biases a module does not have (ssm-peft adds zero ones; we report the module instead).
#include "autograd/node.h"
#include "engine/tensor_copy.h"
#include "peft/method.h"

namespace ssmtune::peft {

namespace {

class InPlaceMethod : public Method {
public:
    std::vector<std::pair<std::string, Tensor>> tensors() const override { return tensors_; }
    bool adds_tensors() const override { return false; }
    std::string merge_refusal() const override { return ""; }
    void detach() override {
        autograd::NoGradGuard no_grad;
        for (size_t i = 0; i < originals_.size(); ++i) copy_into(tensors_[i].second, originals_[i]);
        originals_.clear();
    }
    void merge() override { originals_.clear(); }  // the trained values are the merged model

    std::vector<std::pair<std::string, Tensor>> tensors_;
    std::vector<Tensor> originals_;  // BITFIT only
};

}  // namespace

std::unique_ptr<Method> make_full(ModelView& model, const Config&) {
    auto m = std::make_unique<InPlaceMethod>();
    for (auto& [name, t] : model.module->named_parameters()) m->tensors_.emplace_back(name, trainable(t));
    return m;
}

std::unique_ptr<Method> make_bitfit(ModelView& model, const Config& config) {
    auto m = std::make_unique<InPlaceMethod>();
    const nlohmann::json& names = config.json["bias_names"];
    SSMTUNE_CHECK(names.is_null() || (names.is_array() && !names.empty()),
                  "BITFIT \"bias_names\" must be a non-empty list of parameter names or suffixes, or null");
    auto ends_with = [](const std::string& s, const std::string& suffix) {
        return s == suffix || (s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0 &&
                               s[s.size() - suffix.size() - 1] == '.');
    };
    auto params = model.module->named_parameters();
    std::vector<int64_t> layers = selected_layers(config.json, model);
    auto in_layers = [&](const std::string& name) {
        if (config.json["layers_to_transform"].is_null()) return true;
        for (int64_t l : layers)
            if (name.find("layers." + std::to_string(l) + ".") != std::string::npos) return true;
        return false;
    };
    std::string available;
    for (auto& [name, t] : params)
        if (ends_with(name, "bias")) available += (available.empty() ? "" : ", ") + name;
    if (names.is_null()) {
        for (auto& [name, t] : params)
            if (ends_with(name, "bias") && in_layers(name)) m->tensors_.emplace_back(name, t);
    } else {
        for (const auto& entry : names) {
            SSMTUNE_CHECK(entry.is_string(), "BITFIT \"bias_names\" entries must be strings, got ", entry.dump());
            bool any = false;
            for (auto& [name, t] : params) {
                if (!ends_with(name, entry.get<std::string>())) continue;
                SSMTUNE_CHECK(ends_with(name, "bias"), "BITFIT \"bias_names\" entry \"", entry.get<std::string>(),
                              "\" matches ", name, ", which is not a bias; fix: choose among: ", available);
                any = true;
                if (in_layers(name)) m->tensors_.emplace_back(name, t);
            }
            SSMTUNE_CHECK(any, "BITFIT \"bias_names\" entry \"", entry.get<std::string>(),
                          "\" matches no bias of this model; fix: choose among: ", available);
        }
    }
    SSMTUNE_CHECK(!m->tensors_.empty(), "BITFIT found no bias to train in this ", model.kind(), " model");
    for (auto& [name, t] : m->tensors_) {
        m->originals_.push_back(t.detach().clone());
        trainable(t);
    }
    return m;
}

}  // namespace ssmtune::peft
