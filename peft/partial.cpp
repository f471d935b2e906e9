// FULL, BITFIT and PARTIAL: the methods that train base tensors in place instead of adding any.
//
// FULL trains every parameter (the baseline of every PEFT table). BITFIT (Ben Zaken et al. 2022, as ssm-peft's
// bitfit.py uses it on Mamba) trains only biases: by default every parameter named "*.bias" (for Mamba: conv1d.bias
// and dt_proj.bias, 2E per layer; for S4D: the encoder, output_linear, LayerNorm and decoder biases), or the
// names/suffixes listed in "bias_names". PARTIAL (ssm-peft's layer_freeze baseline, Galim et al. §5: which SSM
// parameters are worth tuning) trains the parameters "param_names" lists: a full name, a suffix after a '.'
// ("A_log", "D", "dt_proj.bias") or whole parts of the name ("conv1d": its weight and bias; "kernel": S4D's). All three save the
// trained tensors under their own names, so "merging" is a no-op; detach keeps FULL's trained values, BITFIT and
// PARTIAL restore the originals, which they keep.
// Not here: creating biases a module does not have (ssm-peft adds zero ones; we report the module instead), parts
// of a tensor (x_proj's B or C rows alone: SDLORA's sparse deltas do that), ssm-peft's raw substring matching.
#include <algorithm>

#include "autograd/node.h"
#include "engine/tensor_copy.h"
#include "peft/method.h"

namespace ssmtune::peft {

namespace {

class InPlaceMethod : public Method {
public:
    std::vector<std::pair<std::string, Tensor>> tensors() const override { return tensors_; }
    int64_t num_added() const override { return 0; }
    std::string merge_refusal() const override { return ""; }
    void detach() override {
        autograd::NoGradGuard no_grad;
        for (size_t i = 0; i < originals_.size(); ++i) copy_into(tensors_[i].second, originals_[i]);
        originals_.clear();
    }
    void merge() override { originals_.clear(); }  // the trained values are the merged model

    std::vector<std::pair<std::string, Tensor>> tensors_;
    std::vector<Tensor> originals_;  // BITFIT and PARTIAL
};

// The parameters an entry names: the full name, a name ending in "." + entry, or (when `components`) any run of whole
// dot-separated parts of the name, so "conv1d" names conv1d.weight and conv1d.bias, "encoder" encoder.weight. Entries that name nothing are errors listing
// what exists; `kind` is what the entries must name ("bias" for BITFIT, empty for any parameter).
std::unique_ptr<InPlaceMethod> make_named(ModelView& model, const nlohmann::json& config, const char* type,
                                          const char* field, const std::string& kind, bool components) {
    auto m = std::make_unique<InPlaceMethod>();
    const nlohmann::json& names = config[field];
    const bool optional = !kind.empty();  // BITFIT's list defaults to every bias
    SSMTUNE_CHECK((optional && names.is_null()) || (names.is_array() && !names.empty()), type, " \"", field,
                  "\" must be a non-empty list of parameter names or suffixes", optional ? ", or null" : "",
                  ", got ", names.dump());
    auto names_it = [&](const std::string& name, const std::string& entry) {
        return name_matches(name, entry) || (components && has_name_parts(name, entry));
    };
    auto params = model.module->named_parameters();
    std::vector<int64_t> layers = selected_layers(config, model);
    auto in_layers = [&](const std::string& name) {
        if (config["layers_to_transform"].is_null()) return true;
        for (int64_t l : layers)
            if (name.find("layers." + std::to_string(l) + ".") != std::string::npos) return true;
        return false;
    };
    auto of_kind = [&](const std::string& name) { return kind.empty() || name_matches(name, kind); };
    std::string available;
    for (auto& [name, t] : params)
        if (of_kind(name)) available += (available.empty() ? "" : ", ") + name;
    if (names.is_null()) {
        for (auto& [name, t] : params)
            if (of_kind(name) && in_layers(name)) m->tensors_.emplace_back(name, t);
    } else {
        for (const auto& entry : names) {
            SSMTUNE_CHECK(entry.is_string(), type, " \"", field, "\" entries must be strings, got ", entry.dump());
            bool any = false;
            for (auto& [param_name, t] : params) {
                const std::string name = param_name;  // a plain copy: lambdas cannot capture bindings before C++20
                if (!names_it(name, entry.get<std::string>())) continue;
                SSMTUNE_CHECK(of_kind(name), type, " \"", field, "\" entry \"", entry.get<std::string>(), "\" matches ",
                              name, ", which is not a ", kind, "; fix: choose among: ", available);
                any = true;
                const bool listed = std::any_of(m->tensors_.begin(), m->tensors_.end(),
                                                [&](const auto& p) { return p.first == name; });
                if (in_layers(name) && !listed) m->tensors_.emplace_back(name, t);
            }
            SSMTUNE_CHECK(any, type, " \"", field, "\" entry \"", entry.get<std::string>(), "\" matches no ",
                          kind.empty() ? "parameter" : kind.c_str(), " of this model; fix: choose among: ", available);
        }
    }
    SSMTUNE_CHECK(!m->tensors_.empty(), type, " selects no ", kind.empty() ? "parameter" : kind.c_str(), " in this ",
                  model.kind(), " model", config["layers_to_transform"].is_null() ? "" : " within layers_to_transform");
    // in the model's order, whatever the order of the entries
    std::sort(m->tensors_.begin(), m->tensors_.end(), [&](const auto& a, const auto& b) {
        auto pos = [&](const std::string& n) {
            return std::find_if(params.begin(), params.end(), [&](const auto& p) { return p.first == n; }) - params.begin();
        };
        return pos(a.first) < pos(b.first);
    });
    for (auto& [name, t] : m->tensors_) {
        m->originals_.push_back(t.detach().clone());
        trainable(t);
    }
    return m;
}

}  // namespace

std::unique_ptr<Method> make_full(ModelView& model, const Config&) {
    auto m = std::make_unique<InPlaceMethod>();
    for (auto& [name, t] : model.module->named_parameters()) m->tensors_.emplace_back(name, trainable(t));
    return m;
}

std::unique_ptr<Method> make_bitfit(ModelView& model, const Config& config) {
    return make_named(model, config.json, "BITFIT", "bias_names", "bias", false);
}

std::unique_ptr<Method> make_partial(ModelView& model, const Config& config) {
    return make_named(model, config.json, "PARTIAL", "param_names", "", true);
}

}  // namespace ssmtune::peft
