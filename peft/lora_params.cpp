// LoRA on parameters (HF's target_parameters; the math in lora_params.h). Each selected parameter gets a
// ParameterDelta whose delta() is s · B A (or HF's per-expert product for a 3-D parameter), so every read of the
// parameter through Module::effective — the parallel scan, the step mode, the S4D kernel — sees P + ΔP, as HF's
// parametrization does for the wrapped module's forward. Merge adds ΔP in place.
#include "peft/lora_params.h"

#include <cmath>

#include "autograd/node.h"
#include "engine/tensor_copy.h"
#include "ops/ops.h"
#include "peft/lora.h"

namespace ssmtune::peft {

using nlohmann::json;

namespace {

class ParamLoraDelta : public models::ParameterDelta {
public:
    ParamLoraDelta(Tensor a, Tensor b, double scale, Shape shape) : scale_(scale), shape_(std::move(shape)) {
        register_parameter("lora_A", std::move(a));
        register_parameter("lora_B", std::move(b));
    }
    Tensor a() const { return params_[0].second; }
    Tensor b() const { return params_[1].second; }
    Tensor delta() override {
        const Tensor A = a(), B = b();
        if (shape_.size() == 2) return ops::mul_scalar(ops::matmul(B, A), scale_);  // [out, in]
        const int64_t X = shape_[0], in = shape_[1], out = shape_[2], r = A.size(0) / X;
        const Tensor a3 = A.reshape({X, r, in});                     // [e, k, i]: row e·r + k
        const Tensor b3 = B.reshape({out, r, X}).permute({2, 0, 1});  // [e, o, k]: column k·X + e
        return ops::mul_scalar(ops::matmul(b3, a3).transpose(1, 2), scale_);  // [e, i, o]
    }
    std::string type_name() const override { return "ParamLora"; }

private:
    double scale_;
    Shape shape_;
};

}  // namespace

std::vector<std::pair<std::string, Tensor>> ParamLora::tensors() const {
    return {{module + ".lora_A.weight", a}, {module + ".lora_B.weight", b}};
}

void ParamLora::merge() {
    autograd::NoGradGuard no_grad;
    Tensor* p = owner->find_parameter(param);
    copy_into(*p, ops::add(p->detach(), delta->delta().to(p->dtype())));
}

void ParamLora::detach() {
    if (owner && delta) owner->detach_parameter_delta(param);
    delta.reset();
    owner = nullptr;
}

std::vector<ParamLora> attach_lora_parameters(ModelView& model, const json& config,
                                              const std::vector<std::string>& module_targets, Generator& gen) {
    std::vector<ParamLora> out;
    const json& targets = config.contains("target_parameters") ? config.at("target_parameters") : json();
    if (targets.is_null() || targets.empty()) return out;
    const LoraSettings common = LoraSettings::from_config(config);
    SSMTUNE_CHECK(common.dropout == 0, "target_parameters: lora_dropout must be 0 (a dropout of x cannot be factored "
                  "out of a change of the parameter; HF raises too); fix: \"lora_dropout\": 0");
    SSMTUNE_CHECK(!common.dora && !common.lora_bias, "target_parameters works without DoRA and lora_bias (as in HF); "
                  "fix: set use_dora and lora_bias to false");
    SSMTUNE_CHECK(common.init == "default" || common.init == "random" || common.init == "gaussian",
                  "target_parameters: init_lora_weights \"", common.init, "\" reads a module's weight; HF's parameter "
                  "wrapper takes true, false or \"gaussian\"");
    SSMTUNE_CHECK(config["layers_to_transform"].is_null(), "target_parameters with layers_to_transform: HF applies "
                  "layers_to_transform to target_modules only and would adapt the parameters of every layer; fix: name "
                  "the layers in target_parameters (\"layers.0.mixer.A_log\")");
    std::vector<bool> used(targets.size(), false);
    try {
        for (auto& [module_name, m] : model.module->named_modules()) {
            for (auto& [pname, p] : m->named_parameters()) {
                if (pname.find('.') != std::string::npos) continue;  // the module's own parameters only
                const std::string key = module_name.empty() ? pname : module_name + "." + pname;
                bool hit = false;
                for (size_t i = 0; i < targets.size(); ++i)
                    if (name_matches(key, targets[i].get<std::string>())) hit = used[i] = true;  // HF's test
                if (!hit) continue;
                SSMTUNE_CHECK(p.dim() == 2 || p.dim() == 3, "target_parameters: ", key, " has shape ", shape_str(p.shape()),
                              "; LoRA on a parameter needs a 2-D [out, in] or 3-D [experts, in, out] one (HF's rule); "
                              "fix: leave it out, or train it whole with PARTIAL");
                for (const std::string& t : module_targets)
                    SSMTUNE_CHECK(t != module_name, "target_parameters: ", key, " belongs to ", module_name, ", which "
                                  "target_modules adapts already (HF refuses this too); fix: leave one of them out");
                for (const ParamLora& other : out)
                    SSMTUNE_CHECK(other.owner != m, "target_parameters: ", key, " and ", other.module, ".", other.param,
                                  " belong to one module; HF nests a wrapper per parameter there; fix: target one of "
                                  "them (or use a second adapter)");
                SSMTUNE_CHECK(!m->parameter_delta(pname), key, " carries another adapter's change already; fix: "
                              "detach it first");
                const LoraSettings s = LoraSettings::from_config(config, key);
                const int64_t X = p.dim() == 3 ? p.size(0) : 1, in = p.size(1), rows = p.dim() == 3 ? p.size(2) : p.size(0);
                const DType dtype = p.dtype();
                const double a_bound = 1.0 / std::sqrt(double(in)), b_bound = 1.0 / std::sqrt(double(s.r * X));
                Tensor a = s.init == "gaussian" ? Tensor::randn({s.r * X, in}, gen, DType::F64, 0.0, 1.0 / double(s.r)).to(dtype)
                                                : Tensor::uniform({s.r * X, in}, gen, -a_bound, a_bound).to(dtype);
                Tensor b = s.init == "random" ? Tensor::uniform({rows, s.r * X}, gen, -b_bound, b_bound).to(dtype)
                                              : Tensor::zeros({rows, s.r * X}, dtype);
                auto delta = std::make_shared<ParamLoraDelta>(trainable(a), trainable(b), s.scale, p.shape());
                m->attach_parameter_delta(pname, "lora_" + pname, delta);
                ParamLora part;
                part.module = module_name;
                part.param = pname;
                part.owner = m;
                part.delta = delta;
                part.a = delta->a();
                part.b = delta->b();
                out.push_back(std::move(part));
            }
        }
        for (size_t i = 0; i < targets.size(); ++i)
            SSMTUNE_CHECK(used[i], "target_parameters entry \"", targets[i].get<std::string>(), "\" names no parameter "
                          "of this ", model.kind(), " model; fix: a full name or a suffix such as \"A_log\", "
                          "\"mixer.A_log\" or \"x_proj.weight\"");
    } catch (...) {
        for (ParamLora& p : out) p.detach();
        throw;
    }
    return out;
}

}  // namespace ssmtune::peft
