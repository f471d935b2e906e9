// LoRA on parameters (HF PEFT's `target_parameters`, lora.ParamWrapper): a low-rank change of a 2-D or 3-D
// parameter itself, not of a module's output — on an SSM, e.g. Mamba's A_log [E, N] or S4D's log_A_real [H, N/2]:
//   2-D P [out, in]:        P' = P + s · B A,  A [r, in], B [out, r]
//   3-D P [X, in, out]:     P'[e, i, o] = P[e, i, o] + s · Σ_k B[o, k·X + e] A[e·r + k, i],  A [r·X, in], B [out, r·X]
//                           (HF's "experts" layout: A's rows grouped by e, B's columns by k, as its einsum reads them)
// A parameter is named by its full name or a suffix at a '.' ("A_log", "mixer.A_log", "x_proj.weight"), as HF matches
// "<module>.<param>"; the tensors are named after the module that owns it (<module>.lora_A.weight,
// <module>.lora_B.weight). Inits as HF's for these wrappers: true (A Kaiming-uniform over `in`, B zero), false (both
// as nn.Linear's default) and "gaussian". Not here (HF raises for them too): 1-D parameters, dropout, DoRA,
// lora_bias, the inits that read a module's weight, two parameters of one module, per-sample use.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "peft/method.h"

namespace ssmtune::peft {

struct ParamLora {
    std::string module, param;  // the owning module's full name and the parameter's own name
    models::Module* owner = nullptr;
    std::shared_ptr<models::ParameterDelta> delta;
    Tensor a, b;
    std::vector<std::pair<std::string, Tensor>> tensors() const;  // <module>.lora_A.weight, <module>.lora_B.weight
    void merge();   // P += s · B A (in place)
    void detach();
};

// Attaches LoRA to every parameter `config["target_parameters"]` selects; `module_targets` are the modules that carry
// a module LoRA already (a parameter of one of them is an Error, as in HF). Each parameter's r and lora_alpha come
// from rank_pattern / alpha_pattern by its full name "<module>.<param>". An entry that matches nothing is an Error.
std::vector<ParamLora> attach_lora_parameters(ModelView& model, const nlohmann::json& config,
                                              const std::vector<std::string>& module_targets, Generator& gen);

}  // namespace ssmtune::peft
