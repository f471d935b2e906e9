// AdapterSet::add_weighted_adapter: a new LORA adapter from several, as HF PEFT's LoraModel.add_weighted_adapter
// builds it (reference/peft-methods.md). For one module with adapters i (weight w_i, scale s_i, A_i [r_i, n],
// B_i [m, r_i]; an embedding's lora_embedding_A [r, V] / _B [D, r] the same way, a 1×1 conv's trailing 1 dropped):
//   cat        A = [w_1 s_1 A_1; w_2 s_2 A_2; ...], B = [B_1, B_2, ...]: exactly B A = Σ w_i s_i B_i A_i (new rank Σ r_i)
//   linear, ties, dare_linear, dare_ties, magnitude_prune: A and B merged separately (merge_task_tensors) with weights
//              sign(w_i s_i)·√|w_i s_i| on A and √|w_i s_i| on B, all ranks equal (not B A: cross terms remain, as in HF)
//   svd and *_svd: ΔW = merge of the s_i B_i A_i with weights w_i s_i (s_i twice, as HF's get_delta_weight already
//              holds s_i), then the new rank's leading SVD part: B = U_k diag(S_k), A = V_kᵀ; with svd_clamp both
//              are clamped to ± the quantile of their entries
// The new adapter's config: the first's, r = lora_alpha = the new rank (s = 1), use_rslora false (HF since peft
// #3449), rank / alpha patterns empty, target_modules the union (regex strings joined as "(a)|(b)"), and
// init_lora_weights true (the values are the combination's; no init runs on them).
// Where we are stricter than HF (which writes a wrong adapter or drops a part silently) it is an Error that says so:
// DoRA, lora_bias, in-place parts and base-rewriting inits (peft #3761), a source module the new config does not
// reach, a module whose rank differs from the new rank (linear family), an SVD rank above a module's smaller side.
// Trainable tokens and target_parameters are refused too (HF's combination has no rule for them / refuses them).
// Singular vectors' signs are ours (each U column's largest entry positive): B and A may differ from torch's by a
// sign per component, B A does not; with svd_clamp the quantile sees those signs, so clamped values can differ.
// Not here: HF's svd_full_matrices / svd_driver (they change neither rank nor values here).
#include "peft/weighted_adapter.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "autograd/node.h"
#include "engine/round_to_double.h"
#include "engine/tensor_copy.h"
#include "peft/lora.h"
#include "peft/lora_init.h"
#include "peft/peft.h"

namespace ssmtune::peft {

using nlohmann::json;

const std::vector<std::string>& combination_types() {
    static const std::vector<std::string> types = {"svd", "linear", "cat", "ties", "ties_svd", "dare_ties", "dare_linear",
                                                   "dare_ties_svd", "dare_linear_svd", "magnitude_prune",
                                                   "magnitude_prune_svd"};
    return types;
}

std::vector<double> prune_by_magnitude(const std::vector<double>& t, double density) {
    const auto k = static_cast<size_t>(round_to_double(density * double(t.size())));  // Python's int(): towards 0
    std::vector<size_t> order(t.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return std::abs(t[a]) > std::abs(t[b]); });
    std::vector<double> out(t.size(), 0.0);
    for (size_t j = 0; j < k && j < order.size(); ++j) out[order[j]] = t[order[j]];
    return out;
}

namespace {
double sign_of(double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : 0.0; }
}  // namespace

std::vector<double> merge_task_tensors(const std::string& merge, const std::vector<std::vector<double>>& tensors,
                                       const std::vector<double>& weights, double density,
                                       const std::string& majority_sign_method, Generator& gen) {
    SSMTUNE_CHECK(!tensors.empty() && tensors.size() == weights.size(), "merge_task_tensors: ", tensors.size(),
                  " tensors and ", weights.size(), " weights");
    const size_t numel = tensors[0].size();
    for (const auto& t : tensors) SSMTUNE_CHECK(t.size() == numel, "merge_task_tensors: tensors of different sizes");
    const bool dare = merge == "dare_linear" || merge == "dare_ties";
    const bool ties = merge == "ties" || merge == "dare_ties";
    SSMTUNE_CHECK(merge == "linear" || merge == "magnitude_prune" || ties || dare, "unknown task-tensor merge \"", merge,
                  "\"; known: linear, magnitude_prune, ties, dare_linear, dare_ties");
    SSMTUNE_CHECK(!ties || majority_sign_method == "total" || majority_sign_method == "frequency",
                  "majority_sign_method must be \"total\" or \"frequency\", got \"", majority_sign_method, "\"");
    std::vector<std::vector<double>> pruned = tensors;
    if (merge != "linear") {
        SSMTUNE_CHECK(density >= 0, "combination \"", merge, "\" needs a density in [0, 1] (the fraction of entries "
                      "kept), got ", density, "; fix: pass one (--density 0.5)");
        SSMTUNE_CHECK(!dare || density > 0, "DARE divides the kept entries by the density, so a density of 0 gives NaN "
                      "(as in HF); fix: a density above 0");
        if (density < 1) {
            for (auto& p : pruned) {
                if (!dare) {
                    p = prune_by_magnitude(p, density);
                    continue;
                }
                const uint64_t first = gen.advance(p.size());
                for (size_t j = 0; j < p.size(); ++j)
                    p[j] = philox_uniform(gen.seed(), first + j) < density ? p[j] / density : 0.0;
            }
        }
    }
    std::vector<double> out(numel, 0.0);
    for (size_t j = 0; j < numel; ++j) {
        if (!ties) {
            for (size_t i = 0; i < pruned.size(); ++i) out[j] += weights[i] * pruned[i][j];
            continue;
        }
        double votes = 0;
        for (const auto& p : pruned) votes += majority_sign_method == "total" ? p[j] : sign_of(p[j]);
        const double majority = votes >= 0 ? 1.0 : -1.0;
        double sum = 0, kept = 0;
        for (size_t i = 0; i < pruned.size(); ++i)
            if (sign_of(pruned[i][j]) == majority) {
                sum += weights[i] * pruned[i][j];
                kept += 1;
            }
        out[j] = sum / std::max(kept, 1.0);
    }
    return out;
}

double torch_quantile(std::vector<double> values, double q) {
    SSMTUNE_CHECK(!values.empty() && q >= 0 && q <= 1, "quantile: q = ", q, " must be in [0, 1] (of ", values.size(),
                  " values)");
    std::sort(values.begin(), values.end());
    const double pos = round_to_double(q * double(values.size() - 1));
    const auto lo = static_cast<size_t>(std::floor(pos)), hi = static_cast<size_t>(std::ceil(pos));
    return values[lo] + (values[hi] - values[lo]) * (pos - double(lo));
}

namespace {

// One module's LoRA pair of one adapter: A [r, n], B [m, r] flattened, the adapter's scale there.
struct Factor {
    size_t adapter;
    std::vector<double> a, b;
    int64_t r;
    double scale;
};

// An adapter's LoRA factors by module (file names <module>.lora_A.weight / .lora_B.weight, or an embedding's
// .lora_embedding_A / _B), modules in the tensors' order; any other tensor is an Error naming `what` holds it.
struct LoraPairs {
    std::vector<std::string> order;
    std::map<std::string, std::pair<Tensor, Tensor>> at;  // module -> (A, B)
};
LoraPairs lora_pairs(const std::vector<std::pair<std::string, Tensor>>& named, const std::string& what) {
    LoraPairs out;
    for (auto& [name, t] : named) {
        bool known = false;
        for (const char* tail : {".lora_A.weight", ".lora_embedding_A", ".lora_B.weight", ".lora_embedding_B"}) {
            if (!ends_with(name, tail)) continue;
            const std::string module = name.substr(0, name.size() - std::string(tail).size());
            if (!out.at.count(module)) out.order.push_back(module);
            (std::string(tail).find("_A") != std::string::npos ? out.at[module].first : out.at[module].second) = t;
            known = true;
            break;
        }
        SSMTUNE_CHECK(known, what, " holds ", name, ", not a LoRA factor");
    }
    return out;
}

std::string refusal(const json& c) {
    const std::string type = c.at("peft_type").get<std::string>();
    if (type != "LORA") return "is " + type + "; only LORA adapters combine";
    const LoraSettings s = LoraSettings::from_config(c);
    if (s.dora) return "uses DoRA, whose magnitudes do not combine (HF keeps the new adapter's own, peft #3761)";
    if (s.lora_bias) return "has lora_bias, which HF's combination drops (peft #3761)";
    if (c.contains("trainable_token_indices") && !c.at("trainable_token_indices").is_null())
        return "trains tokens (trainable_token_indices), which add_weighted_adapter does not combine";
    if (c.contains("target_parameters") && c.at("target_parameters").is_array() && !c.at("target_parameters").empty())
        return "adapts parameters (target_parameters), which HF's add_weighted_adapter refuses too";
    if (lora_trains_base_in_place(c))
        return "trains base tensors in place (\"bias\" or \"modules_to_save\"), which the combined adapter would not carry";
    if (lora_init_changes_base(s.init))
        return "rewrote the base weights (init_lora_weights \"" + s.init + "\"); fix: combine its plain-LoRA form "
               "(ssmtune convert)";
    return "";
}

int64_t max_rank(const json& c) {  // HF: r, or the largest rank_pattern value
    int64_t r = c.at("r").get<int64_t>();
    if (c.contains("rank_pattern") && c.at("rank_pattern").is_object())
        for (const auto& v : c.at("rank_pattern")) r = std::max(r, v.get<int64_t>());
    return r;
}

// target_modules of the sources joined as HF does: lists (and "all-linear", which HF saves as the modules' last
// name parts) as their union, regex strings as "(a)|(b)"; a mix of the two is an Error, as in HF.
json union_of_targets(const std::vector<json>& configs, const std::vector<std::vector<std::string>>& modules) {
    std::vector<json> lists;
    std::string regex;
    size_t strings = 0;
    for (size_t i = 0; i < configs.size(); ++i) {
        json tm = configs[i].at("target_modules");
        if (tm == "all-linear") {
            tm = json::array();
            for (const std::string& m : modules[i]) tm.push_back(m.substr(m.rfind('.') + 1));
        }
        if (tm.is_string()) {
            regex += (strings++ ? "|(" : "(") + tm.get<std::string>() + ")";
        } else {
            lists.push_back(tm);
        }
    }
    SSMTUNE_CHECK(strings == 0 || lists.empty(), "add_weighted_adapter: some adapters give target_modules as a list, "
                  "others as a regular expression; HF refuses the mix too; fix: write them the same way");
    if (strings) return regex;
    json out = json::array();
    for (const json& l : lists)
        for (const json& t : l)
            if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
    return out;
}

// The SVD part of rank k of D [m, n]: B = U_k diag(S_k) [m, k], A = V_kᵀ [k, n], each U column's largest entry
// positive; clamped to ± the `clamp` quantile of all their entries when clamp ≥ 0.
void svd_factors(const std::vector<double>& d, int64_t m, int64_t n, int64_t k, double clamp, std::vector<double>& a,
                 std::vector<double>& b) {
    const LowRankSvd svd = svd_thin(d, m, n);  // U [m, p], V [n, p], p = min(m, n) >= k
    const int64_t p = std::min(m, n);
    b.assign(size_t(m * k), 0.0);
    a.assign(size_t(k * n), 0.0);
    for (int64_t j = 0; j < k; ++j) {
        int64_t at = 0;  // the first entry of largest magnitude in U's column j
        for (int64_t i = 1; i < m; ++i)
            if (std::abs(svd.u[size_t(i * p + j)]) > std::abs(svd.u[size_t(at * p + j)])) at = i;
        const double sign = svd.u[size_t(at * p + j)] < 0 ? -1.0 : 1.0;
        for (int64_t i = 0; i < m; ++i) b[size_t(i * k + j)] = sign * svd.u[size_t(i * p + j)] * svd.s[size_t(j)];
        for (int64_t c = 0; c < n; ++c) a[size_t(j * n + c)] = sign * svd.v[size_t(c * p + j)];
    }
    if (clamp < 0) return;
    std::vector<double> all = b;
    all.insert(all.end(), a.begin(), a.end());
    const double hi = torch_quantile(all, clamp), lo = -hi;
    for (auto* side : {&a, &b})
        for (double& x : *side) x = std::min(std::max(x, lo), hi);  // torch.clamp(lo, hi), hi winning when lo > hi
}

}  // namespace

Adapter& AdapterSet::add_weighted_adapter(const std::vector<std::string>& names, const std::vector<double>& weights,
                                          const std::string& new_name, const WeightedAdapterOptions& options) {
    const std::string where = "add_weighted_adapter \"" + new_name + "\": ";
    SSMTUNE_CHECK(!names.empty() && names.size() == weights.size(), where, names.size(), " adapters and ", weights.size(),
                  " weights; fix: one weight per adapter");
    const auto& types = combination_types();
    std::string known;
    for (const auto& t : types) known += (known.empty() ? "" : ", ") + t;
    SSMTUNE_CHECK(std::find(types.begin(), types.end(), options.combination_type) != types.end(), where,
                  "unknown combination_type \"", options.combination_type, "\"; known: ", known);
    SSMTUNE_CHECK(options.svd_rank >= 0, where, "svd_rank ", options.svd_rank, " is negative; fix: 0 (the largest "
                  "rank of the adapters) or a positive rank");
    SSMTUNE_CHECK(options.svd_clamp < 0 || options.svd_clamp <= 1, where, "svd_clamp ", options.svd_clamp,
                  " is a quantile, so in [0, 1]");
    for (double w : weights) SSMTUNE_CHECK(std::isfinite(w), where, "a weight is not finite");
    // HF: one adapter is always combined linearly
    const std::string type = names.size() == 1 ? "linear" : options.combination_type;
    const bool svd = ends_with(type, "svd");
    std::vector<json> configs;
    std::vector<LoraPairs> sources;
    std::vector<std::vector<std::string>> modules;  // each adapter's modules, in its order
    std::vector<int64_t> ranks;
    for (size_t i = 0; i < names.size(); ++i) {
        for (size_t j = 0; j < i; ++j)
            SSMTUNE_CHECK(names[j] != names[i], where, "\"", names[i], "\" is listed twice; fix: give it one weight");
        const Adapter& source = get(names[i]);
        configs.push_back(source.saved_config());
        const std::string why = refusal(configs.back());
        SSMTUNE_CHECK(why.empty(), where, "\"", names[i], "\" cannot be combined: it ", why);
        sources.push_back(lora_pairs(source.named_parameters(), where + "\"" + names[i] + "\""));
        modules.push_back(sources.back().order);
        ranks.push_back(max_rank(configs.back()));
    }
    int64_t new_rank = ranks[0];
    if (type == "cat") {
        new_rank = std::accumulate(ranks.begin(), ranks.end(), int64_t(0));
    } else if (svd) {
        new_rank = options.svd_rank > 0 ? options.svd_rank : *std::max_element(ranks.begin(), ranks.end());
    } else {
        for (size_t i = 0; i < names.size(); ++i)
            SSMTUNE_CHECK(ranks[i] == ranks[0], where, "combination \"", type, "\" needs adapters of one rank (HF's "
                          "rule), but \"", names[0], "\" has r ", ranks[0], " and \"", names[i], "\" ", ranks[i],
                          "; fix: combination_type cat or svd");
    }
    json config = configs[0];
    config["r"] = new_rank;
    config["lora_alpha"] = new_rank;
    config["use_rslora"] = false;
    config["rank_pattern"] = json::object();
    config["alpha_pattern"] = json::object();
    config["init_lora_weights"] = true;
    config["target_modules"] = union_of_targets(configs, modules);

    Adapter& made = add(new_name, Config::from_json(config, "the combined adapter's config"));
    try {
        // module -> its new A and B (held tensors: what is written to them is what enable() attaches)
        LoraPairs slots = lora_pairs(made.named_parameters(), where + "the combined adapter");
        for (size_t i = 0; i < names.size(); ++i)
            for (const std::string& m : modules[i])
                SSMTUNE_CHECK(slots.at.count(m), where, "\"", names[i], "\" has a LoRA on ", m, ", which the combined config "
                              "(\"", names[0], "\"'s layers_to_transform / exclude_modules with the union of the "
                              "target_modules) does not reach; HF would drop it silently; fix: list first an adapter "
                              "whose config reaches every module");
        Generator gen(options.seed);
        for (const std::string& m : slots.order) {
            Tensor& a_new = slots.at[m].first;
            Tensor& b_new = slots.at[m].second;
            const int64_t n = a_new.numel() / new_rank, rows = b_new.numel() / new_rank;
            std::vector<Factor> present;
            for (size_t i = 0; i < names.size(); ++i) {
                auto pair = sources[i].at.find(m);
                if (pair == sources[i].at.end()) continue;
                const Tensor& A = pair->second.first;
                present.push_back({i, A.to_vector<double>(), pair->second.second.to_vector<double>(), A.shape()[0],
                                   LoraSettings::from_config(configs[i], m).scale});
            }
            SSMTUNE_CHECK(!present.empty(), where, "the combined config reaches ", m, " but none of the adapters has a "
                          "LoRA there (HF fails there too, \"No matching LoRAs found\"); fix: list first an adapter whose "
                          "layers_to_transform / exclude_modules keep to the adapters' modules");
            std::vector<double> a(size_t(new_rank * n), 0.0), b(size_t(rows * new_rank), 0.0);
            if (type == "cat") {  // rows of A, columns of B, in the adapters' order; the rest (rank_pattern) zero
                int64_t at = 0;
                for (const Factor& f : present) {
                    const double c = weights[f.adapter] * f.scale;
                    for (int64_t j = 0; j < f.r; ++j)
                        for (int64_t col = 0; col < n; ++col) a[size_t((at + j) * n + col)] = c * f.a[size_t(j * n + col)];
                    for (int64_t row = 0; row < rows; ++row)
                        for (int64_t j = 0; j < f.r; ++j) b[size_t(row * new_rank + at + j)] = f.b[size_t(row * f.r + j)];
                    at += f.r;
                }
            } else if (!svd) {  // A and B merged separately
                std::vector<std::vector<double>> as, bs;
                std::vector<double> wa, wb;
                for (const Factor& f : present) {
                    SSMTUNE_CHECK(f.r == new_rank, where, "\"", names[f.adapter], "\" has rank ", f.r, " on ", m,
                                  " (a rank_pattern) but combination \"", type, "\" writes rank ", new_rank, " (HF would "
                                  "write a tensor of another shape there); fix: combination_type cat or svd");
                    const double ws = weights[f.adapter] * f.scale;
                    wa.push_back((ws >= 0 ? 1.0 : -1.0) * std::sqrt(std::abs(ws)));
                    wb.push_back(std::sqrt(std::abs(ws)));
                    as.push_back(f.a);
                    bs.push_back(f.b);
                }
                a = merge_task_tensors(type, as, wa, options.density, options.majority_sign_method, gen);
                b = merge_task_tensors(type, bs, wb, options.density, options.majority_sign_method, gen);
            } else {  // ΔW_i = s_i B_i A_i [rows, n], merged with weights w_i s_i, then its leading SVD part
                SSMTUNE_CHECK(new_rank <= std::min(rows, n), where, "the SVD rank ", new_rank, " exceeds ", m,
                              "'s smaller side (", rows, " x ", n, "), so it has no more singular values (HF fails or "
                              "writes another shape); fix: a smaller svd_rank, or combination_type cat");
                std::vector<std::vector<double>> deltas;
                std::vector<double> w;
                for (const Factor& f : present) {
                    std::vector<double> d(size_t(rows * n), 0.0);
                    for (int64_t row = 0; row < rows; ++row)
                        for (int64_t j = 0; j < f.r; ++j) {
                            const double bij = f.scale * f.b[size_t(row * f.r + j)];
                            for (int64_t col = 0; col < n; ++col) d[size_t(row * n + col)] += bij * f.a[size_t(j * n + col)];
                        }
                    deltas.push_back(std::move(d));
                    w.push_back(weights[f.adapter] * f.scale);
                }
                const std::string merge = type == "svd" ? "linear" : type.substr(0, type.size() - 4);
                const auto d = merge_task_tensors(merge, deltas, w, options.density, options.majority_sign_method, gen);
                svd_factors(d, rows, n, new_rank, options.svd_clamp, a, b);
            }
            autograd::NoGradGuard no_grad;
            copy_into(a_new, Tensor::from_vector<double>(a, a_new.shape()).to(a_new.dtype()).to(a_new.device()));
            copy_into(b_new, Tensor::from_vector<double>(b, b_new.shape()).to(b_new.dtype()).to(b_new.device()));
        }
    } catch (...) {  // nothing added when the combination fails
        remove(new_name);
        throw;
    }
    return made;
}

}  // namespace ssmtune::peft
