// SDLORA on the S4D classifier: ssm-peft's "ours" hard mode with lp_method = lora (reference/peft-methods.md
// §2.2), per layer, with M = N/2 complex modes ("states") per channel h ∈ [0, H):
//
//   usable channels U_c, and per update channel its usable states U_s(h) — everything else of C is pruned;
//   update channels S_c ⊆ U_c, and per update channel its update states S_n(h) ⊆ U_s(h);
//   C'        = C ⊙ keep + α·δC      keep = 0 on channels ∉ U_c and on states ∉ U_s(h) of h ∈ S_c, else 1;
//                                    δC at (h ∈ S_c, n ∈ S_n(h), re and im)          (2·Σ|S_n| values)
//   log_A_real' = log_A_real + α·δ, A_imag' = A_imag + α·δ   at (h ∈ S_c, n ∈ S_n(h)) (Σ|S_n| values each)
//   log_dt' = log_dt + δ [H], D' = D + δ [H], output_linear.0.bias' = bias + δ [2H]   (dense)
//   plus LoRA (rank r) on target_modules, default ["output_linear.0"].  α = sdlora_alpha.
// Files (flat vectors, row-major over the trained entries): s4_layers.{i}.kernel.{C,log_A_real,A_imag,log_dt}_delta,
// s4_layers.{i}.D_delta, s4_layers.{i}.output_linear.0.bias_delta, plus the LoRA tensors.
// "dimensions": {"<layer>": {"usable_channels": [...], "channels": [...], "usable_states": [[...] per update
// channel], "states": [[...] per update channel]}}; usable_channels / usable_states may be left out (= all, no
// pruning). Merge writes C ⊙ keep + α·δC and adds the other deltas, plus LoRA.
// Selection (sdlora_select; the warm-up trains dense deltas on C, log_A_real, A_imag, log_dt and D: "ssm"
// mode), on the warmed-up parameters, with z = Δ_h A[h,n] and the model's discretisation (ZOH: W = C(e^z − 1)/A,
// λ = z; bilinear: W = CΔ/(1 − z/2), λ = log((1 + z/2)/(1 − z/2))):
//   AC[h,n] = W·exp(λ·⌊seq_len/2⌋), the mode's contribution to the kernel at lag L/2;
//   U_c = top round(select_channel_ratio·H) channels by ‖AC[h,:]‖;
//   S_c = top round(channel_ratio·H) of U_c by ‖A_warm[h,:] − A_frozen[h,:]‖ (complex A = −exp(log_A_real) + i·A_imag);
//   U_s(h) = top round(select_state_ratio·M) states by |AC[h,n]|; S_n(h) = top round(state_ratio·M) of U_s(h)
//   by |A_warm − A_frozen|.  Counts are at least 1; ties go to the lower index.
// Differences from the reference code, on purpose: it adds A_real and A_imag as reals when scoring AC and takes
// the frozen A's real part as +exp(log_A_real); we use the complex A both times (the intended math). Its
// lp_method = ours (a column-sparse delta on the output linear) is not here: SDLoRA's setting is lp = lora.
#include <algorithm>
#include <cmath>
#include <complex>

#include "peft/sdlora.h"

namespace ssmtune::peft {

using json = nlohmann::json;

namespace {

struct S4DLayerDims {
    int64_t layer = 0;
    std::vector<int64_t> usable_channels;             // ascending
    std::vector<int64_t> channels;                    // update channels, ascending, ⊆ usable_channels
    std::vector<std::vector<int64_t>> usable_states;  // per update channel, ascending
    std::vector<std::vector<int64_t>> states;         // per update channel, ascending, ⊆ its usable states
};

std::string layer_prefix(int64_t layer) { return "s4_layers." + std::to_string(layer) + "."; }

std::vector<int64_t> sorted(std::vector<int64_t> v) {
    std::sort(v.begin(), v.end());
    return v;
}

std::vector<int64_t> iota_list(int64_t n) {
    std::vector<int64_t> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = i;
    return v;
}

bool contains(const std::vector<int64_t>& sorted_list, int64_t x) {
    return std::binary_search(sorted_list.begin(), sorted_list.end(), x);
}

std::vector<S4DLayerDims> parse_s4d_dimensions(ModelView& model, const json& config) {
    const int64_t H = model.s4d->config().d_model, M = model.s4d->config().d_state / 2;
    std::vector<S4DLayerDims> out;
    for (int64_t layer : dimension_layers(config, model)) {
        const json& e = config["dimensions"][std::to_string(layer)];
        const std::string where = "layer " + std::to_string(layer);
        for (auto& [k, v] : e.items())
            SSMTUNE_CHECK(k == "channels" || k == "states" || k == "usable_channels" || k == "usable_states",
                          "SDLORA dimensions of ", where, ": unknown key \"", k,
                          "\"; valid: usable_channels, channels, usable_states, states");
        SSMTUNE_CHECK(e.contains("channels") && e.contains("states"), "SDLORA dimensions of ", where,
                      " need \"channels\" and \"states\" (S4D: update channels and their update states)");
        S4DLayerDims d;
        d.layer = layer;
        d.usable_channels = e.contains("usable_channels")
                                ? sorted(read_index_list(e["usable_channels"], H, where + " usable_channels"))
                                : iota_list(H);
        const std::vector<int64_t> ch = read_index_list(e["channels"], H, where + " channels");
        auto per_channel = [&](const char* key) {
            SSMTUNE_CHECK(e[key].is_array() && e[key].size() == ch.size(), "SDLORA dimensions of ", where, ": \"",
                          key, "\" must hold one state list per update channel (", ch.size(), " channels)");
        };
        per_channel("states");
        if (e.contains("usable_states")) per_channel("usable_states");
        std::vector<size_t> order(ch.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ch[a] < ch[b]; });
        for (size_t o : order) {
            const int64_t h = ch[o];
            const std::string of = where + " channel " + std::to_string(h);
            SSMTUNE_CHECK(contains(d.usable_channels, h), "SDLORA dimensions of ", where, ": update channel ", h,
                          " is not among usable_channels; fix: add it there or drop it");
            std::vector<int64_t> us = e.contains("usable_states")
                                          ? sorted(read_index_list(e["usable_states"][o], M, of + " usable_states"))
                                          : iota_list(M);
            std::vector<int64_t> st = sorted(read_index_list(e["states"][o], M, of + " states"));
            for (int64_t n : st)
                SSMTUNE_CHECK(contains(us, n), "SDLORA dimensions of ", of, ": update state ", n,
                              " is not among its usable_states; fix: add it there or drop it");
            d.channels.push_back(h);
            d.usable_states.push_back(us);
            d.states.push_back(st);
        }
        out.push_back(d);
    }
    return out;
}

json s4d_dimensions_json(const std::vector<S4DLayerDims>& dims) {
    json out = json::object();
    for (const auto& d : dims)
        out[std::to_string(d.layer)] = {{"usable_channels", d.usable_channels}, {"channels", d.channels},
                                        {"usable_states", d.usable_states}, {"states", d.states}};
    return out;
}

class SdloraS4DMethod : public Method {
public:
    SdloraS4DMethod(ModelView& model, const Config& config) : model_(model) {
        const json& c = config.json;
        dims_ = parse_s4d_dimensions(model_, c);
        Generator gen(c["init_seed"].get<uint64_t>());
        const bool random = c["init"] == "random";
        const double alpha = c["sdlora_alpha"].get<double>();
        const int64_t H = model_.s4d->config().d_model, M = model_.s4d->config().d_state / 2;
        try {
            for (const auto& d : dims_) {
                models::S4DLayer& layer = model_.s4d->layer(d.layer);
                models::S4DKernel& kernel = *layer.kernel;
                const std::string pre = layer_prefix(d.layer);
                // C [H, M, 2]: pruning mask and the (h, n, re/im) positions.
                std::vector<double> drop(size_t(H * M * 2), 0.0);
                bool prunes = false;
                for (int64_t h = 0; h < H; ++h) {
                    const auto it = std::find(d.channels.begin(), d.channels.end(), h);
                    for (int64_t n = 0; n < M; ++n) {
                        const bool pruned = !contains(d.usable_channels, h) ||
                                            (it != d.channels.end() &&
                                             !contains(d.usable_states[size_t(it - d.channels.begin())], n));
                        if (!pruned) continue;
                        drop[size_t((h * M + n) * 2)] = drop[size_t((h * M + n) * 2 + 1)] = 1.0;
                        prunes = true;
                    }
                }
                std::vector<int64_t> c_idx, a_idx;
                for (size_t j = 0; j < d.channels.size(); ++j)
                    for (int64_t n : d.states[j]) {
                        const int64_t p = d.channels[j] * M + n;
                        a_idx.push_back(p);
                        c_idx.push_back(2 * p);
                        c_idx.push_back(2 * p + 1);
                    }
                Tensor drop_t = prunes ? Tensor::from_vector<double>(drop, {H, M, 2}).to(kernel.C().dtype()) : Tensor();
                set_.add(pre + "kernel.C_delta", kernel, "C", "C_delta", c_idx, alpha, random, gen, drop_t);
                set_.add(pre + "kernel.log_A_real_delta", kernel, "log_A_real", "log_A_real_delta", a_idx, alpha,
                         random, gen);
                set_.add(pre + "kernel.A_imag_delta", kernel, "A_imag", "A_imag_delta", a_idx, alpha, random, gen);
                set_.add(pre + "kernel.log_dt_delta", kernel, "log_dt", "log_dt_delta", iota_list(H), 1.0, random, gen);
                set_.add(pre + "D_delta", layer, "D", "D_delta", iota_list(H), 1.0, random, gen);
                set_.add(pre + "output_linear.0.bias_delta", layer.output_linear(), "bias", "bias_delta",
                         iota_list(2 * H), 1.0, random, gen);
            }
            lora_ = attach_sdlora_lora(model_, c, json::array({"output_linear.0"}), gen, random);
        } catch (...) {
            set_.detach();
            throw;
        }
    }
    std::vector<std::pair<std::string, Tensor>> tensors() const override {
        auto out = set_.tensors();
        for (auto& t : lora_.tensors()) out.push_back(t);
        return out;
    }
    std::string merge_refusal() const override { return ""; }
    void merge() override {
        set_.merge();
        lora_.merge(model_);
    }
    void detach() override {
        set_.detach();
        lora_.detach();
    }
    json saved_config() const override {
        return {{"dimensions", s4d_dimensions_json(dims_)}, {"target_modules", lora_.targets}};
    }

private:
    ModelView model_;
    std::vector<S4DLayerDims> dims_;
    SparseDeltaSet set_;
    LoraAttachment lora_;
};

}  // namespace

std::unique_ptr<Method> make_sdlora_s4d(ModelView& model, const Config& config) {
    return std::make_unique<SdloraS4DMethod>(model, config);
}

void attach_s4d_warmup(ModelView& model, const json& config, SparseDeltaSet& set) {
    Generator gen(config["init_seed"].get<uint64_t>());
    for (int64_t i : selected_layers(config, model)) {
        models::S4DLayer& layer = model.s4d->layer(i);
        const std::string pre = layer_prefix(i);
        for (const char* p : {"C", "log_A_real", "A_imag", "log_dt"})
            set.add(pre + "kernel." + p + "_delta", *layer.kernel, p, std::string(p) + "_delta",
                    iota_list(layer.kernel->find_parameter(p)->numel()), 1.0, false, gen);
        set.add(pre + "D_delta", layer, "D", "D_delta", iota_list(layer.D().numel()), 1.0, false, gen);
    }
}

json select_s4d_dimensions(ModelView& model, const json& c, const SparseDeltaSet& warm) {
    const auto& sc = model.s4d->config();
    const int64_t H = sc.d_model, M = sc.d_state / 2;
    const bool bilinear = sc.discretization == "bilinear";
    const double half = double(c["seq_len"].get<int64_t>() / 2);
    std::vector<S4DLayerDims> dims;
    for (int64_t i : selected_layers(c, model)) {
        models::S4DKernel& kernel = *model.s4d->layer(i).kernel;
        const std::string pre = layer_prefix(i) + "kernel.";
        // frozen values and warmed-up values (base + warm-up delta, α = 1)
        auto values = [&](const char* p, std::vector<double>& frozen, std::vector<double>& warmed) {
            frozen = kernel.find_parameter(p)->to_vector<double>();
            const std::vector<double> dv = warm.find(pre + p + "_delta").values().to_vector<double>();
            warmed = frozen;
            for (size_t k = 0; k < dv.size(); ++k) {
                SSMTUNE_CHECK(std::isfinite(dv[k]), "SDLORA warm-up left non-finite values in ", pre, p,
                              "_delta; fix: lower the warm-up learning rate or warmup_steps");
                warmed[k] += dv[k];
            }
        };
        std::vector<double> dt_f, dt_w, c_f, c_w, lar_f, lar_w, ai_f, ai_w;
        values("log_dt", dt_f, dt_w);
        values("C", c_f, c_w);
        values("log_A_real", lar_f, lar_w);
        values("A_imag", ai_f, ai_w);
        using cd = std::complex<double>;
        std::vector<double> ac(size_t(H * M)), da(size_t(H * M)), ch_ac(size_t(H), 0.0), ch_da(size_t(H), 0.0);
        for (int64_t h = 0; h < H; ++h) {
            const double dt = std::exp(dt_w[size_t(h)]);
            for (int64_t n = 0; n < M; ++n) {
                const size_t k = size_t(h * M + n);
                const cd A_w(-std::exp(lar_w[k]), ai_w[k]), A_f(-std::exp(lar_f[k]), ai_f[k]);
                const cd C(c_w[2 * k], c_w[2 * k + 1]), z = dt * A_w;
                const cd W = bilinear ? C * dt / (1.0 - z / 2.0) : C * (std::exp(z) - 1.0) / A_w;
                const cd lambda = bilinear ? std::log((1.0 + z / 2.0) / (1.0 - z / 2.0)) : z;
                ac[k] = std::abs(W * std::exp(lambda * half));
                da[k] = std::abs(A_w - A_f);
                ch_ac[size_t(h)] += ac[k] * ac[k];
                ch_da[size_t(h)] += da[k] * da[k];
            }
        }
        // (‖·‖² ranks like ‖·‖)
        S4DLayerDims d;
        d.layer = i;
        d.usable_channels = top_k_indices(ch_ac, ratio_count(c["select_channel_ratio"].get<double>(), H));
        d.channels = top_k_among(ch_da, d.usable_channels, ratio_count(c["channel_ratio"].get<double>(), H));
        for (int64_t h : d.channels) {
            const std::vector<double> ac_h(ac.begin() + h * M, ac.begin() + (h + 1) * M);
            const std::vector<double> da_h(da.begin() + h * M, da.begin() + (h + 1) * M);
            d.usable_states.push_back(top_k_indices(ac_h, ratio_count(c["select_state_ratio"].get<double>(), M)));
            d.states.push_back(top_k_among(da_h, d.usable_states.back(), ratio_count(c["state_ratio"].get<double>(), M)));
        }
        dims.push_back(d);
    }
    return s4d_dimensions_json(dims);
}

}  // namespace ssmtune::peft
