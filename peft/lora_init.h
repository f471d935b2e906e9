// LoRA starting values that read the base weight or need more than one random draw (HF LoraConfig's
// init_lora_weights = "pissa", "pissa_niter_K", "olora", "orthogonal"), and the plain-LoRA form of an adapter whose
// init changed the base (HF's save_pretrained(path_initial_model_for_weight_conversion=...)). Math in lora_init.cpp.
// Not here: the LoRA layers themselves (lora.cpp), the defaults (true / false / "gaussian", drawn in lora.cpp).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace ssmtune::peft {

// true for an init_lora_weights value built here ("pissa", "pissa_niter_K", "olora", "orthogonal").
bool lora_init_is_computed(const std::string& init);
// true when the init also rewrites the base weight to W − s·B A (PiSSA, OLoRA): the adapted model starts as the base.
bool lora_init_changes_base(const std::string& init);
// "" when `init` (a JSON value of init_lora_weights) is one we implement, else the fix to print.
std::string lora_init_refusal(const nlohmann::json& init);

// The starting lora_A [r, in] and lora_B [out, r] of a Linear LoRA with scale s on weight W [out, in], in `dtype`,
// and for PiSSA / OLoRA the residual W − s·B A the base weight becomes (undefined otherwise). `module` names the
// module in errors (a rank above min(out, in) for PiSSA / OLoRA, an odd rank for "orthogonal").
struct LoraStart {
    Tensor a, b, residual;
};
LoraStart lora_computed_start(const std::string& init, const std::string& module, const Tensor& weight, int64_t r,
                              double scale, Generator& gen, DType dtype);

// torch.svd_lowrank's algorithm (Halko, Martinsson & Tropp 2011, Alg. 4.4: a Gaussian sketch, `niter` power
// iterations re-orthonormalised by QR): the leading q singular triplets of M [m, n] as U [m, q], S [q], V [n, q],
// row-major float64. Exposed for the tests.
struct LowRankSvd {
    std::vector<double> u, s, v;
};
LowRankSvd svd_lowrank(const std::vector<double>& m, int64_t rows, int64_t cols, int64_t q, int64_t niter, Generator& gen);

// The exact thin SVD of M [m, n] (Eigen's BDCSVD, float64): U [m, k], S [k] descending, V [n, k], k = min(m, n),
// row-major. The one place the PEFT code instantiates Eigen's SVD (PiSSA here, add_weighted_adapter's svd types).
LowRankSvd svd_thin(const std::vector<double>& m, int64_t rows, int64_t cols);

// The adapter_config.json of the plain LoRA equivalent to a PiSSA / OLoRA one (HF's conversion): r and the
// rank_pattern values doubled, lora_alpha and the alpha_pattern values doubled (× √2 under rsLoRA, so every
// module's scale stays), init_lora_weights true.
nlohmann::json plain_lora_config(const nlohmann::json& config);

}  // namespace ssmtune::peft
