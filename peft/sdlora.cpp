// SDLORA on Mamba and Longhorn, the sparse deltas every variant uses, and the warm-up selection
// (reference/peft-methods.md §2.1; sdlora.h has the protocol).
//
// Mamba, per layer with channels S_c ⊆ [0, E) and per channel states S_n(d) ⊆ [0, N) (all deltas zero-init):
//   A_log'[d, n]   = A_log[d, n] + α·δA        for d ∈ S_c, n ∈ S_n(d)                 (Σ_d |S_n(d)| values)
//   x_proj.W'[r, d] = W[r, d] + α·δW            for r ∈ [R, R+2N) (B rows, then C rows), d ∈ S_c  (2N·|S_c| values)
//   plus LoRA (rank r) on target_modules, default ["out_proj"].  α = sdlora_alpha.
// Longhorn has no A_log. Its B/C analogues are x_proj's k and q rows [R, R+2N) (ε-scaled write key and read
// query), so we treat those as the SSM parameters: channels are selected from the warm-up change of those
// columns and get the same masked column delta as Mamba's B/C (2N·|S_c| values); there is no state selection.
// Files: backbone.layers.{i}.mixer.A_log_delta [Σ|S_n|] and backbone.layers.{i}.mixer.x_proj.weight_delta
// [2N·|S_c|], flat vectors holding the trained entries in row-major (ascending flat index) order of the
// parameter: A_log by (d, n); x_proj by (row r, then column d). The LoRA tensors keep HF's names.
// "dimensions" in adapter_config.json: {"<layer>": {"channels": [d, ...], "states": [[n, ...] per channel]}}
// (Longhorn: "channels" only), sorted on save. Merge adds α·scatter(δ) into A_log / x_proj.weight plus LoRA.
// Warm-up (sdlora_select): dense zero-init deltas on all of A_log [E, N] (Longhorn: the k/q rows of x_proj), scaled
// by α as in the run (sd_lora.py), plus the LoRA; the caller trains them (`finetune`: the run's first steps,
// tools/train_common.cpp); the scores are the deltas' squares (those of α·δ would rank the same). "init": "random"
// draws the sparse deltas from N(0, 0.1²) and LoRA B like A (a non-zero start, for tests). Pruning (A_log = 10, "num_zero") is not implemented: every
// released ssm-peft config leaves it off. Not here: S4D (sdlora_s4d.cpp), the warm-up's training loop (caller).
#include "peft/sdlora.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/node.h"
#include "engine/round_to_double.h"
#include "models/longhorn_mixer.h"
#include "models/mamba_mixer.h"
#include "ops/ops.h"

namespace ssmtune::peft {

using json = nlohmann::json;

// ---------------------------------------------------------------- SparseDelta
SparseDelta::SparseDelta(models::Module& host, std::string param, std::vector<int64_t> indices, double alpha,
                         Tensor values, Tensor drop)
    : host_(&host), param_(std::move(param)), indices_(std::move(indices)), alpha_(alpha), drop_(std::move(drop)) {
    Tensor* base = host.find_parameter(param_);
    SSMTUNE_CHECK(base, "SparseDelta: ", host.type_name(), " has no parameter '", param_, "'");
    shape_ = base->shape();
    const int64_t numel = shape_numel(shape_), k = int64_t(indices_.size());
    for (int64_t j = 0; j < k; ++j)
        SSMTUNE_CHECK(indices_[size_t(j)] >= 0 && indices_[size_t(j)] < numel &&
                          (j == 0 || indices_[size_t(j)] > indices_[size_t(j - 1)]),
                      "SparseDelta on ", param_, ": flat indices must be strictly ascending in [0, ", numel,
                      "), index ", j, " is ", indices_[size_t(j)]);
    SSMTUNE_CHECK(values.dim() == 1 && values.numel() == k, "SparseDelta on ", param_, ": values ",
                  values.describe(), " do not match ", k, " indices");
    if (drop_.defined())
        SSMTUNE_CHECK(drop_.shape() == shape_, "SparseDelta on ", param_, ": prune mask ", drop_.describe(),
                      " does not have the parameter's shape ", shape_str(shape_));
    if (k < numel) {
        std::vector<int64_t> map(size_t(numel), k);  // k = the appended zero
        for (int64_t j = 0; j < k; ++j) map[size_t(indices_[size_t(j)])] = j;
        map_ = Tensor::from_vector<int64_t>(map, {numel});
    }
    register_parameter("values", values);
}

Tensor SparseDelta::delta() {
    Tensor v = params_[0].second;  // [k]
    const Device dev = v.device();  // the index map and prune mask follow the values (Adapter::to moves those)
    if (map_.defined() && map_.device() != dev) map_ = map_.to(dev);
    if (drop_.defined() && drop_.device() != dev) drop_ = drop_.to(dev);
    Tensor dense =
        map_.defined() ? ops::index_select(ops::concat({v, Tensor::zeros({1}, v.dtype(), dev)}, 0), 0, map_) : v;
    dense = dense.reshape(shape_);
    if (alpha_ != 1.0) dense = ops::mul_scalar(dense, alpha_);
    if (drop_.defined()) dense = ops::sub(dense, ops::mul(host_->find_parameter(param_)->detach(), drop_));
    return dense;
}

std::shared_ptr<SparseDelta> SparseDeltaSet::add(const std::string& name, models::Module& host,
                                                 const std::string& param, const std::string& child,
                                                 std::vector<int64_t> indices, double alpha, bool random,
                                                 Generator& gen, Tensor drop) {
    Tensor* base = host.find_parameter(param);
    SSMTUNE_CHECK(base, "SDLORA: ", host.type_name(), " has no parameter '", param, "'");
    const Shape shape{int64_t(indices.size())};
    Tensor v = random ? Tensor::randn(shape, gen, base->dtype(), 0.0, 0.1) : Tensor::zeros(shape, base->dtype());
    auto d = std::make_shared<SparseDelta>(host, param, std::move(indices), alpha, trainable(v), std::move(drop));
    host.attach_parameter_delta(param, child, d);
    deltas.emplace_back(name, d);
    return d;
}

std::vector<std::pair<std::string, Tensor>> SparseDeltaSet::tensors() const {
    std::vector<std::pair<std::string, Tensor>> out;
    for (auto& [name, d] : deltas) out.emplace_back(name, d->values());
    return out;
}

const SparseDelta& SparseDeltaSet::find(const std::string& name) const {
    for (auto& [n, d] : deltas)
        if (n == name) return *d;
    SSMTUNE_FAIL("SDLORA: no delta named ", name);
}

void SparseDeltaSet::merge() {
    autograd::NoGradGuard no_grad;
    for (auto& [name, d] : deltas) {
        Tensor w = *d->host().find_parameter(d->param());
        LoraAttachment::copy_merged(w, d->delta());
    }
}

void SparseDeltaSet::detach() {
    for (auto& [name, d] : deltas) d->host().detach_parameter_delta(d->param());
    deltas.clear();
}

// ---------------------------------------------------------------- shared helpers
std::vector<int64_t> top_k_among(const std::vector<double>& scores, std::vector<int64_t> candidates, int64_t k) {
    k = std::min<int64_t>(k, int64_t(candidates.size()));
    auto score = [&](int64_t i) {  // NaN ranks last (a strict weak order needs it)
        const double s = scores[size_t(i)];
        return std::isnan(s) ? -HUGE_VAL : s;
    };
    std::stable_sort(candidates.begin(), candidates.end(), [&](int64_t a, int64_t b) {
        const double sa = score(a), sb = score(b);
        return sa != sb ? sa > sb : a < b;
    });
    candidates.resize(size_t(k));
    std::sort(candidates.begin(), candidates.end());
    return candidates;
}

std::vector<int64_t> top_k_indices(const std::vector<double>& scores, int64_t k) {
    std::vector<int64_t> all(scores.size());
    std::iota(all.begin(), all.end(), int64_t(0));
    return top_k_among(scores, std::move(all), k);
}

int64_t ratio_count(double ratio, int64_t n) {
    return std::min<int64_t>(n, std::max<int64_t>(1, int64_t(std::llround(round_to_double(ratio * double(n))))));
}

std::vector<int64_t> read_index_list(const json& j, int64_t n, const std::string& what) {
    SSMTUNE_CHECK(j.is_array() && !j.empty(), "SDLORA dimensions: ", what, " must be a non-empty list of indices, got ",
                  j.dump());
    std::vector<int64_t> out;
    for (const json& v : j) {
        SSMTUNE_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < n, "SDLORA dimensions: ",
                      what, " holds ", v.dump(), ", not an index in [0, ", n, ")");
        out.push_back(v.get<int64_t>());
    }
    std::vector<int64_t> sorted = out;
    std::sort(sorted.begin(), sorted.end());
    SSMTUNE_CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end(), "SDLORA dimensions: ", what,
                  " ", j.dump(), " repeats an index");
    return out;
}

std::vector<int64_t> dimension_layers(const json& config, const ModelView& model) {
    const json& dims = config["dimensions"];
    SSMTUNE_CHECK(!dims.is_null(), "SDLORA needs its selected dimensions but \"dimensions\" is null; fix: run "
                  "peft::sdlora_select(model, config, train_warmup) first (`ssmtune finetune` runs this warm-up for "
                  "you), or give \"dimensions\" per layer, e.g. {\"0\": {\"channels\": [3, 7], \"states\": [[0, 1], "
                  "[2, 5]]}}");
    SSMTUNE_CHECK(dims.is_object(), "SDLORA \"dimensions\" must be an object keyed by layer index, got ", dims.dump());
    const std::vector<int64_t> layers = selected_layers(config, model);
    for (auto& item : dims.items()) {
        const std::string key = item.key();  // (not a structured binding: C++17 lambdas cannot capture those)
        const bool listed = std::any_of(layers.begin(), layers.end(), [&](int64_t l) { return std::to_string(l) == key; });
        SSMTUNE_CHECK(listed, "SDLORA \"dimensions\" has an entry for layer \"", key, "\", which is not one of the ",
                      layers.size(), " selected layers of this ", model.num_layers(), "-layer ", model.kind(),
                      " model; fix: remove it or add it to layers_to_transform");
    }
    for (int64_t l : layers)
        SSMTUNE_CHECK(dims.contains(std::to_string(l)) && dims[std::to_string(l)].is_object(),
                      "SDLORA \"dimensions\" has no object for layer ", l, "; fix: rerun sdlora_select, or restrict "
                      "layers_to_transform to the layers it lists");
    return layers;
}

LoraAttachment attach_sdlora_lora(ModelView& model, const json& config, const json& default_targets, Generator& gen,
                                  bool random) {
    json c = config;
    if (c["target_modules"].is_null()) c["target_modules"] = default_targets;
    if (random) c["init_lora_weights"] = false;
    return attach_lora(model, c, gen);
}

void check_sdlora_fields(const json& c) {
    auto ratio = [&](const char* key) {
        SSMTUNE_CHECK(c[key].is_number() && c[key].get<double>() > 0 && c[key].get<double>() <= 1,
                      "SDLORA \"", key, "\" must be a number in (0, 1], got ", c[key].dump());
    };
    for (const char* key : {"channel_ratio", "state_ratio", "select_channel_ratio", "select_state_ratio"}) ratio(key);
    SSMTUNE_CHECK(c["seq_len"].is_number_integer() && c["seq_len"].get<int64_t>() >= 1,
                  "SDLORA \"seq_len\" (the length L whose kernel lag L/2 scores S4D dimensions) must be a positive "
                  "integer, got ", c["seq_len"].dump());
    SSMTUNE_CHECK(c["sdlora_alpha"].is_number() && c["sdlora_alpha"].get<double>() != 0,
                  "SDLORA \"sdlora_alpha\" must be a non-zero number, got ", c["sdlora_alpha"].dump());
}

// ---------------------------------------------------------------- Mamba / Longhorn
namespace {

struct LmLayerDims {
    int64_t layer = 0;
    std::vector<int64_t> channels;               // ascending
    std::vector<std::vector<int64_t>> states;    // per channel, ascending (Mamba only)
};

struct LmShapes {
    int64_t E, N, R;
};

LmShapes lm_shapes(ModelView& model, int64_t layer) {
    models::Mixer& mixer = model.lm->mixer(layer);
    Tensor* w = mixer.find_parameter("x_proj.weight");  // [R+2N, E]
    SSMTUNE_CHECK(w, "SDLORA: layer ", layer, " has no x_proj");
    const int64_t N = model.lm->config().state_size;
    return {w->size(1), N, w->size(0) - 2 * N};
}

std::vector<LmLayerDims> parse_lm_dimensions(ModelView& model, const json& config) {
    const bool mamba = model.kind() == "mamba";
    std::vector<LmLayerDims> out;
    for (int64_t layer : dimension_layers(config, model)) {
        const json& e = config["dimensions"][std::to_string(layer)];
        const std::string where = "layer " + std::to_string(layer);
        for (auto& [k, v] : e.items())
            SSMTUNE_CHECK(k == "channels" || (mamba && k == "states"), "SDLORA dimensions of ", where,
                          ": unknown key \"", k, "\"; valid: ", mamba ? "channels, states" : "channels (Longhorn "
                          "has no state selection)");
        SSMTUNE_CHECK(e.contains("channels"), "SDLORA dimensions of ", where, " lack \"channels\"");
        const LmShapes s = lm_shapes(model, layer);
        std::vector<int64_t> ch = read_index_list(e["channels"], s.E, where + " channels");
        std::vector<size_t> order(ch.size());
        std::iota(order.begin(), order.end(), size_t(0));
        std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ch[a] < ch[b]; });
        LmLayerDims d;
        d.layer = layer;
        if (mamba) {
            SSMTUNE_CHECK(e.contains("states") && e["states"].is_array() && e["states"].size() == ch.size(),
                          "SDLORA dimensions of ", where, ": \"states\" must be a list with one state list per "
                          "channel (", ch.size(), " channels)");
        }
        for (size_t o : order) {
            d.channels.push_back(ch[o]);
            if (!mamba) continue;
            std::vector<int64_t> st = read_index_list(e["states"][o], s.N, where + " states of channel " +
                                                                             std::to_string(ch[o]));
            std::sort(st.begin(), st.end());
            d.states.push_back(st);
        }
        out.push_back(d);
    }
    return out;
}

json lm_dimensions_json(const std::vector<LmLayerDims>& dims, bool mamba) {
    json out = json::object();
    for (const auto& d : dims) {
        json e = {{"channels", d.channels}};
        if (mamba) e["states"] = d.states;
        out[std::to_string(d.layer)] = e;
    }
    return out;
}

std::string mixer_prefix(int64_t layer) { return "backbone.layers." + std::to_string(layer) + ".mixer."; }

// Flat indices of x_proj.weight [R+2N, E] at rows [R, R+2N) and the given columns, row-major.
std::vector<int64_t> x_proj_indices(const LmShapes& s, const std::vector<int64_t>& columns) {
    std::vector<int64_t> idx;
    for (int64_t r = s.R; r < s.R + 2 * s.N; ++r)
        for (int64_t d : columns) idx.push_back(r * s.E + d);
    return idx;
}

models::Linear& x_proj_of(ModelView& model, int64_t layer) {
    models::Mixer& mixer = model.lm->mixer(layer);
    if (auto* m = dynamic_cast<models::MambaMixer*>(&mixer)) return *m->x_proj;
    if (auto* m = dynamic_cast<models::LonghornMixer*>(&mixer)) return *m->x_proj;
    SSMTUNE_FAIL("SDLORA supports Mamba and Longhorn mixers, layer ", layer, " is a ", mixer.type_name());
}

class SdloraLmMethod : public Method {
public:
    SdloraLmMethod(ModelView& model, const Config& config) : model_(model), mamba_(model.kind() == "mamba") {
        const json& c = config.json;
        dims_ = parse_lm_dimensions(model_, c);  // validates everything before attaching
        Generator gen(c["init_seed"].get<uint64_t>());
        const bool random = c["init"] == "random";
        const double alpha = c["sdlora_alpha"].get<double>();
        try {
            for (const auto& d : dims_) {
                const LmShapes s = lm_shapes(model_, d.layer);
                const std::string pre = mixer_prefix(d.layer);
                if (mamba_) {
                    std::vector<int64_t> idx;
                    for (size_t j = 0; j < d.channels.size(); ++j)
                        for (int64_t n : d.states[j]) idx.push_back(d.channels[j] * s.N + n);
                    set_.add(pre + "A_log_delta", model_.lm->mixer(d.layer), "A_log", "A_log_delta", idx, alpha,
                             random, gen);
                }
                set_.add(pre + "x_proj.weight_delta", x_proj_of(model_, d.layer), "weight", "weight_delta",
                         x_proj_indices(s, d.channels), alpha, random, gen);
            }
            lora_ = attach_sdlora_lora(model_, c, json::array({"out_proj"}), gen, random);
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
        return {{"dimensions", lm_dimensions_json(dims_, mamba_)}, {"target_modules", lora_.targets}};
    }

private:
    ModelView model_;
    bool mamba_;
    std::vector<LmLayerDims> dims_;
    SparseDeltaSet set_;
    LoraAttachment lora_;
};

// The warm-up adapter of sdlora_select: dense deltas (and, on the LMs, the LoRA) that only score dimensions.
class WarmupMethod : public Method {
public:
    WarmupMethod(ModelView& model, const Config& config) : model_(model) {
        const json& c = config.json;
        Generator gen(c["init_seed"].get<uint64_t>());
        try {
            if (model_.s4d) {
                attach_s4d_warmup(model_, c, set);
                return;
            }
            const bool mamba = model_.kind() == "mamba";
            const double alpha = c["sdlora_alpha"].get<double>();  // A_log + α·δ in the warm-up too, as sd_lora.py
            for (int64_t layer : selected_layers(c, model_)) {
                const LmShapes s = lm_shapes(model_, layer);
                const std::string pre = mixer_prefix(layer);
                if (mamba) {
                    std::vector<int64_t> all(size_t(s.E * s.N));
                    std::iota(all.begin(), all.end(), int64_t(0));
                    set.add(pre + "A_log_delta", model_.lm->mixer(layer), "A_log", "A_log_delta", all, alpha, false,
                            gen);
                } else {
                    std::vector<int64_t> cols(size_t(s.E));
                    std::iota(cols.begin(), cols.end(), int64_t(0));
                    set.add(pre + "x_proj.weight_delta", x_proj_of(model_, layer), "weight", "weight_delta",
                            x_proj_indices(s, cols), alpha, false, gen);
                }
            }
            lora_ = attach_sdlora_lora(model_, c, json::array({"out_proj"}), gen, false);
        } catch (...) {
            set.detach();
            throw;
        }
    }
    std::vector<std::pair<std::string, Tensor>> tensors() const override {
        auto out = set.tensors();
        for (auto& t : lora_.tensors()) out.push_back(t);
        return out;
    }
    std::string merge_refusal() const override {
        return "this is SDLORA's warm-up adapter, which only scores dimensions inside sdlora_select";
    }
    void detach() override {
        set.detach();
        lora_.detach();
    }
    SparseDeltaSet set;

private:
    ModelView model_;
    LoraAttachment lora_;
};

json select_lm_dimensions(ModelView& model, const json& c, const SparseDeltaSet& warm) {
    const bool mamba = model.kind() == "mamba";
    std::vector<LmLayerDims> dims;
    for (int64_t layer : selected_layers(c, model)) {
        const LmShapes s = lm_shapes(model, layer);
        const std::string name = mixer_prefix(layer) + (mamba ? "A_log_delta" : "x_proj.weight_delta");
        const std::vector<double> v = warm.find(name).values().to_vector<double>();
        for (double x : v)
            SSMTUNE_CHECK(std::isfinite(x), "SDLORA warm-up left non-finite values in ", name,
                          "; fix: lower the warm-up learning rate or warmup_steps");
        LmLayerDims d;
        d.layer = layer;
        std::vector<double> score(size_t(s.E), 0.0);
        if (mamba) {  // v [E, N]: ΔA_log
            for (int64_t e = 0; e < s.E; ++e)
                for (int64_t n = 0; n < s.N; ++n) score[size_t(e)] += v[size_t(e * s.N + n)] * v[size_t(e * s.N + n)];
        } else {      // v [2N, E]: Δ of the k and q rows
            for (int64_t r = 0; r < 2 * s.N; ++r)
                for (int64_t e = 0; e < s.E; ++e) score[size_t(e)] += v[size_t(r * s.E + e)] * v[size_t(r * s.E + e)];
        }
        d.channels = top_k_indices(score, ratio_count(c["channel_ratio"].get<double>(), s.E));
        if (mamba) {
            for (int64_t e : d.channels) {
                std::vector<double> st(size_t(s.N));
                for (int64_t n = 0; n < s.N; ++n) st[size_t(n)] = v[size_t(e * s.N + n)] * v[size_t(e * s.N + n)];
                d.states.push_back(top_k_indices(st, ratio_count(c["state_ratio"].get<double>(), s.N)));
            }
        }
        dims.push_back(d);
    }
    return lm_dimensions_json(dims, mamba);
}

}  // namespace

// ---------------------------------------------------------------- selection and factory
Config sdlora_select(models::Module& model, const Config& config,
                     const std::function<void(Adapter& warmup)>& train_warmup) {
    SSMTUNE_CHECK(config.peft_type() == "SDLORA", "sdlora_select needs an SDLORA config, got peft_type ",
                  config.peft_type());
    check_sdlora_fields(config.json);
    ModelView view(model);
    const int64_t base = model.num_parameters();
    std::vector<std::pair<Tensor, bool>> saved;
    for (auto& [name, t] : model.named_parameters()) {
        saved.emplace_back(t, t.requires_grad());
        t.set_requires_grad(false);
    }
    auto restore = [&] {
        for (auto& [t, flag] : saved) t.set_requires_grad(flag);
    };
    std::unique_ptr<WarmupMethod> method;
    try {
        method = std::make_unique<WarmupMethod>(view, config);
    } catch (...) {
        restore();
        throw;
    }
    WarmupMethod* warm = method.get();
    Adapter adapter(model, config, std::move(method), base);
    json dims;
    try {
        train_warmup(adapter);
        SSMTUNE_CHECK(adapter.attached(), "sdlora_select: train_warmup detached or merged the warm-up adapter; fix: "
                      "only train its parameters");
        dims = view.s4d ? select_s4d_dimensions(view, config.json, warm->set)
                        : select_lm_dimensions(view, config.json, warm->set);
    } catch (...) {
        adapter.detach();
        restore();
        throw;
    }
    adapter.detach();
    restore();
    return config.with({{"dimensions", dims}});
}

std::unique_ptr<Method> make_sdlora(ModelView& model, const Config& config) {
    check_sdlora_fields(config.json);
    dimension_layers(config.json, model);  // the "run sdlora_select" error comes first
    if (model.s4d) return make_sdlora_s4d(model, config);
    return std::make_unique<SdloraLmMethod>(model, config);
}

}  // namespace ssmtune::peft
