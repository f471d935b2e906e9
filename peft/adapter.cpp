// The Adapter object and the adapter directory format (HF PEFT's): freezing, the trainable-parameter report,
// save/load of adapter_config.json + adapter_model.safetensors, merge and detach; plus the helpers every method
// shares (model view, layer selection, HF-style target matching).
// Also Adapter::disable / enable and AdapterSet (several named adapters, one attached at a time).
// Not here: the methods themselves (one file each), two adapters active at once.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <set>
#include <sstream>
#include <unordered_set>

#include "autograd/node.h"
#include "engine/safetensors.h"
#include "engine/torch_checkpoint.h"
#include "engine/tensor_copy.h"
#include "models/checkpoint.h"
#include "peft/lora.h"
#include "peft/lora_init.h"
#include "peft/method.h"

namespace ssmtune::peft {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kFilePrefix = kAdapterTensorPrefix;

// ---------------------------------------------------------------- shared helpers
ModelView::ModelView(models::Module& m) : module(&m) {
    lm = dynamic_cast<models::LanguageModel*>(&m);
    s4d = dynamic_cast<models::S4DClassifier*>(&m);
    SSMTUNE_CHECK(lm || s4d, "PEFT supports the Mamba and Longhorn language models and the S4D classifier, got a ",
                  m.type_name());
}

std::string ModelView::kind() const { return lm ? lm->config().model_type : "s4d"; }

DType ModelView::dtype() const {
    auto params = module->named_parameters();
    SSMTUNE_CHECK(!params.empty(), "the model has no parameters");
    return params.front().second.dtype();
}

int64_t ModelView::num_layers() const { return lm ? lm->num_layers() : s4d->num_layers(); }

std::vector<int64_t> selected_layers(const json& config, const ModelView& model) {
    std::vector<int64_t> out;
    const json& sel = config.contains("layers_to_transform") ? config["layers_to_transform"] : json();
    if (sel.is_null()) {
        for (int64_t i = 0; i < model.num_layers(); ++i) out.push_back(i);
        return out;
    }
    // HF's layers_pattern names the module list the indices count in; ours is "layers" (LMs) or "s4_layers" (S4D)
    if (config.contains("layers_pattern") && !config["layers_pattern"].is_null()) {
        const json& pattern = config["layers_pattern"];
        const std::string ours = model.s4d ? "s4_layers" : "layers";
        const json names = pattern.is_array() ? pattern : json::array({pattern});
        SSMTUNE_CHECK(std::any_of(names.begin(), names.end(), [&](const json& n) { return n == ours; }),
                      "layers_pattern ", pattern.dump(), " names no layer list of this ", model.kind(), " model (its layers "
                      "are \"", ours, "\"); fix: \"layers_pattern\": \"", ours, "\" or null");
    }
    const json list = sel.is_array() ? sel : json::array({sel});
    SSMTUNE_CHECK(!list.empty(), "layers_to_transform [] selects no layer; fix: list layer indices (0..",
                  model.num_layers() - 1, ") or leave it null for every layer");
    for (const json& v : list) {
        SSMTUNE_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < model.num_layers(),
                      "layers_to_transform: ", v.dump(), " is not a layer index of this ", model.num_layers(),
                      "-layer model (valid: 0..", model.num_layers() - 1, ")");
        out.push_back(v.get<int64_t>());
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

namespace {
// The layer index of a module name ("backbone.layers.3.mixer.in_proj" -> 3, "s4_layers.1.x" -> 1), or -1.
int64_t layer_of(const std::string& name) {
    static const std::regex re(R"((^|\.)(layers|s4_layers)\.(\d+)(\.|$))");
    std::smatch m;
    return std::regex_search(name, m, re) ? std::stoll(m[3]) : -1;
}

// The short forms users write ("in_proj", "output_linear.0"): the name with layer prefixes removed.
std::string short_name(const std::string& name) {
    static const std::regex re(R"(^(backbone\.)?((layers|s4_layers)\.\d+\.)?(mixer\.)?)");
    return std::regex_replace(name, re, "");
}
}  // namespace

bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

bool name_matches(const std::string& name, const std::string& target) {
    return name == target ||
           (name.size() > target.size() && ends_with(name, target) && name[name.size() - target.size() - 1] == '.');
}

bool has_name_parts(const std::string& name, const std::string& parts) {
    return ("." + name + ".").find("." + parts + ".") != std::string::npos;
}

std::vector<std::pair<std::string, models::Module*>> match_targets(const ModelView& model, const json& config,
                                                                   const std::function<bool(models::Module*)>& accept,
                                                                   const std::string& what_accepts) {
    const json& tm = config["target_modules"];
    std::vector<int64_t> layers = selected_layers(config, model);
    const bool all_layers = config["layers_to_transform"].is_null();
    auto in_layers = [&](const std::string& name) {
        if (all_layers) return true;
        const int64_t l = layer_of(name);
        return l >= 0 && std::find(layers.begin(), layers.end(), l) != layers.end();
    };
    auto modules = model.module->named_modules();
    std::set<std::string> targetable;
    for (auto& [name, m] : modules)
        if (!name.empty() && accept(m)) targetable.insert(short_name(name));
    std::string listing;
    for (const auto& t : targetable) listing += (listing.empty() ? "" : ", ") + t;

    // exclude_modules (HF, LoRA): a string is a regular expression the whole name must match, a list names modules
    // as target_modules' list does. Excluded modules are skipped before anything else is asked of them.
    static const json no_exclusions;
    const json& ex = config.contains("exclude_modules") ? config["exclude_modules"] : no_exclusions;
    std::regex ex_re;
    if (ex.is_string()) {
        try {
            ex_re = std::regex(ex.get<std::string>());
        } catch (const std::regex_error& e) {
            SSMTUNE_FAIL("exclude_modules regex ", ex.dump(), " is invalid (", e.what(), ")");
        }
    }
    auto excluded = [&](const std::string& name) {
        if (ex.is_string()) return std::regex_match(name, ex_re);
        if (ex.is_array())
            return std::any_of(ex.begin(), ex.end(), [&](const json& e) { return name_matches(name, e); });
        return false;
    };
    std::vector<std::pair<std::string, models::Module*>> out;
    auto consider = [&](const std::string& name, models::Module* m, const std::string& target) {
        if (excluded(name)) return;
        SSMTUNE_CHECK(accept(m), "target_modules entry \"", target, "\" matches ", name, ", a ", m->type_name(),
                      ", but this method adapts ", what_accepts, "; fix: choose among: ", listing);
        if (in_layers(name) && std::none_of(out.begin(), out.end(), [&](auto& p) { return p.first == name; }))
            out.emplace_back(name, m);
    };
    if (tm.is_string() && tm == "all-linear") {
        for (auto& [name, m] : modules)
            if (!name.empty() && dynamic_cast<models::Linear*>(m) && name != "lm_head" && name != "decoder" &&
                in_layers(name) && !excluded(name))
                out.emplace_back(name, m);
    } else if (tm.is_string()) {
        std::regex re;
        try {
            re = std::regex(tm.get<std::string>());
        } catch (const std::regex_error& e) {
            SSMTUNE_FAIL("target_modules regex ", tm.dump(), " is invalid (", e.what(), ")");
        }
        for (auto& [name, m] : modules)
            if (!name.empty() && std::regex_match(name, re)) consider(name, m, tm.get<std::string>());
    } else {
        for (const json& t : tm) {
            const std::string target = t;
            bool any = false;
            for (auto& [name, m] : modules) {
                if (name.empty() || !name_matches(name, target)) continue;
                any = true;
                consider(name, m, target);
            }
            SSMTUNE_CHECK(any, "target_modules entry \"", target, "\" matches no module of this ", model.kind(),
                          " model; fix: choose among: ", listing);
        }
    }
    SSMTUNE_CHECK(!out.empty(), "target_modules ", tm.dump(), " with layers_to_transform ",
                  config["layers_to_transform"].dump(), ex.is_null() ? "" : " and exclude_modules " + ex.dump(),
                  " selects no module; fix: choose among: ", listing);
    std::sort(out.begin(), out.end(), [&](auto& a, auto& b) {
        auto pos = [&](const std::string& n) {
            return std::find_if(modules.begin(), modules.end(), [&](auto& p) { return p.first == n; }) - modules.begin();
        };
        return pos(a.first) < pos(b.first);
    });
    return out;
}

Tensor trainable(Tensor t) { return t.set_requires_grad(true); }

// ---------------------------------------------------------------- Adapter
Adapter::Adapter(models::Module& model, Config config, std::unique_ptr<Method> method, int64_t base_params)
    : model_(&model), config_(std::move(config)), method_(std::move(method)), base_params_(base_params) {}
Adapter::Adapter(Adapter&&) noexcept = default;
Adapter& Adapter::operator=(Adapter&&) noexcept = default;
Adapter::~Adapter() = default;

std::vector<std::pair<std::string, Tensor>> Adapter::named_parameters() const {
    if (disabled_) return held_;
    SSMTUNE_CHECK(method_, "this adapter was detached or merged; fix: apply a new one");
    return method_->tensors();
}

void Adapter::to(Device device) {
    SSMTUNE_CHECK(!disabled_, "this adapter is disabled; fix: enable() it first, or move the model with Module::to");
    SSMTUNE_CHECK(method_, "this adapter was detached or merged; fix: move the model with Module::to");
    std::vector<Tensor> all;
    std::unordered_set<const TensorImpl*> seen;
    for (auto& [n, t] : model_->named_parameters())
        if (seen.insert(t.impl_ptr().get()).second) all.push_back(t);
    for (auto& [n, t] : method_->tensors())
        if (seen.insert(t.impl_ptr().get()).second) all.push_back(t);
    move_in_place(all, device);
}

std::vector<Tensor> Adapter::parameters() const {
    std::vector<Tensor> out;
    for (auto& [n, t] : named_parameters()) out.push_back(t);
    return out;
}

int64_t Adapter::num_trainable() const {
    int64_t n = 0;
    for (auto& [name, t] : named_parameters()) n += t.numel();
    return n;
}

int64_t Adapter::num_total() const {
    return base_params_ + (disabled_ ? held_added_ : method_ ? method_->num_added() : 0);
}

std::string Adapter::trainable_report() const {
    const int64_t n = num_trainable(), m = num_total();
    auto commas = [](int64_t v) {
        std::string s = std::to_string(v);
        for (int i = int(s.size()) - 3; i > 0; i -= 3) s.insert(size_t(i), ",");
        return s;
    };
    char pct[64];
    std::snprintf(pct, sizeof pct, "%.4f", m > 0 ? 100.0 * double(n) / double(m) : 0.0);
    return "trainable params: " + commas(n) + " || all params: " + commas(m) + " || trainable%: " + pct;
}

void Adapter::print_trainable_parameters() const { std::printf("%s\n", trainable_report().c_str()); }

namespace {
void write_adapter(const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& named, const json& cfg) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    SSMTUNE_CHECK(!ec && fs::is_directory(dir), "cannot create adapter directory ", dir, ": ", ec.message());
    TensorMap tensors;
    for (auto& [name, t] : named) tensors[kFilePrefix + name] = t.detach().contiguous();
    save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), tensors);
    models::write_json_file((fs::path(dir) / "adapter_config.json").string(), cfg);
}
}  // namespace

void Adapter::save(const std::string& dir) const {
    write_adapter(dir, named_parameters(), saved_config());
}

json Adapter::saved_config() const {
    SSMTUNE_CHECK(disabled_ || method_, "this adapter was detached or merged already");
    return disabled_ ? held_config_ : full_config();
}

void Adapter::save_as_lora(const std::string& dir) const {
    SSMTUNE_CHECK(!disabled_, "save_as_lora: this adapter is disabled; fix: enable() it first");
    SSMTUNE_CHECK(method_, "save_as_lora: this adapter was detached or merged already");
    const auto tensors = method_->plain_lora_tensors();
    SSMTUNE_CHECK(!tensors.empty(), "save_as_lora: only a LORA adapter whose init_lora_weights rewrote the base "
                  "weights (\"pissa\", \"pissa_niter_K\", \"olora\") has a plain-LoRA form; this one (", config_.peft_type(),
                  config_.peft_type() == "LORA" ? ", init_lora_weights " + config_.json["init_lora_weights"].dump() : "",
                  ") runs on the unmodified base already; fix: save() it");
    write_adapter(dir, tensors, plain_lora_config(full_config()));
}

void Adapter::load_weights(const std::string& dir) {
    // HF PEFT's order: adapter_model.safetensors, else the legacy adapter_model.bin (torch.save's format)
    std::string path = (fs::path(dir) / "adapter_model.safetensors").string();
    const std::string legacy = (fs::path(dir) / "adapter_model.bin").string();
    if (!fs::exists(path) && fs::exists(legacy)) path = legacy;
    SSMTUNE_CHECK(fs::exists(path), "adapter weights ", path, " not found; fix: pass a directory written by "
                  "Adapter::save / ssmtune finetune, or by HF PEFT's save_pretrained");
    TensorMap file = path == legacy ? load_torch_checkpoint(path) : load_safetensors(path);
    std::vector<std::string> problems;
    std::set<std::string> used;
    auto mine = named_parameters();
    for (auto& [name, t] : mine) {
        auto it = file.find(kFilePrefix + name);
        if (it == file.end()) it = file.find(name);  // files written without the prefix
        if (it == file.end()) { problems.push_back("missing " + kFilePrefix + name + " " + shape_str(t.shape())); continue; }
        used.insert(it->first);
        if (first_non_finite(it->second) >= 0) { problems.push_back(it->first + " holds a non-finite value"); continue; }
        if (it->second.shape() != t.shape()) {
            problems.push_back(it->first + " has shape " + shape_str(it->second.shape()) + " but this model needs " +
                               shape_str(t.shape()));
            continue;
        }
        autograd::NoGradGuard no_grad;
        copy_into(t, it->second);
    }
    for (auto& [name, t] : file)
        if (!used.count(name)) problems.push_back("unexpected " + name);
    if (!problems.empty()) {
        std::string msg;
        for (size_t i = 0; i < problems.size() && i < 20; ++i) msg += (i ? "; " : " ") + problems[i];
        if (problems.size() > 20) msg += "; ... and " + std::to_string(problems.size() - 20) + " more";
        SSMTUNE_FAIL("adapter ", path, " does not fit this ", ModelView(*model_).kind(), " model (",
                     problems.size(), " problems):", msg,
                     ". fix: load it into the base model it was trained on (same width, layers and modules)");
    }
}

std::string Adapter::merge_refusal() const {
    SSMTUNE_CHECK(!disabled_, "this adapter is disabled; fix: enable() it first");
    SSMTUNE_CHECK(method_, "this adapter was detached or merged already");
    return method_->merge_refusal();
}

void Adapter::merge() {
    const std::string why = merge_refusal();
    SSMTUNE_CHECK(why.empty(), config_.peft_type(), " cannot be merged into the base weights: ", why,
                  "; fix: keep the adapter and load it next to the base model");
    {
        autograd::NoGradGuard no_grad;
        method_->merge();
    }
    detach();
}

void Adapter::detach() {
    if (disabled_) {  // nothing on the model: forget the held tensors
        disabled_ = false;
        held_.clear();
        return;
    }
    if (!method_) return;
    method_->detach();
    method_.reset();
    for (auto& [t, flag] : saved_requires_grad_) t.set_requires_grad(flag);
    saved_requires_grad_.clear();
}

json Adapter::full_config() const {
    json cfg = config_.json;
    const json extra = method_->saved_config();  // (a named value: items() must not outlive it)
    for (auto& [k, v] : extra.items()) cfg[k] = v;
    return cfg;
}

void Adapter::set_sample_mask(const Tensor& mask) {
    SSMTUNE_CHECK(method_ && !disabled_, "set_sample_mask: this adapter is not attached; fix: enable() it first");
    method_->set_sample_mask(mask);
}

void Adapter::disable() {
    SSMTUNE_CHECK(!disabled_, "this adapter is disabled already");
    SSMTUNE_CHECK(method_, "this adapter was detached or merged; fix: apply a new one");
    SSMTUNE_CHECK(config_.peft_type() != "FULL", "FULL trains every base weight in place, so there is no base model to "
                  "switch back to; fix: keep a copy of the base model instead");
    held_config_ = full_config();
    held_added_ = method_->num_added();
    std::vector<std::pair<std::string, Tensor>> held;
    {
        autograd::NoGradGuard no_grad;
        for (auto& [name, t] : method_->tensors()) held.emplace_back(name, t.detach().clone().set_requires_grad(true));
    }
    detach();  // the base as before apply (in-place methods put their originals back)
    held_ = std::move(held);
    disabled_ = true;
}

void Adapter::enable() {
    SSMTUNE_CHECK(disabled_ || method_, "this adapter was merged or detached, so there is nothing to enable; fix: load "
                  "or apply it again");
    SSMTUNE_CHECK(disabled_, "this adapter is not disabled");
    // apply again (same config, the method's additions included), then the held values; on the held tensors' device
    Adapter again = apply(*model_, Config::from_json(held_config_, "disabled adapter"));
    const Device device = held_.empty() ? Device::cpu() : held_.front().second.device();
    if (!device.is_cpu()) again.to(device);
    auto fresh = again.method_->tensors();
    SSMTUNE_CHECK(fresh.size() == held_.size(), "enable: the method was applied again with ", fresh.size(),
                  " tensors, but ", held_.size(), " were held; fix: do not change the model while an adapter is disabled");
    {
        autograd::NoGradGuard no_grad;
        for (size_t i = 0; i < fresh.size(); ++i) {
            SSMTUNE_CHECK(fresh[i].first == held_[i].first && fresh[i].second.shape() == held_[i].second.shape(),
                          "enable: held tensor ", held_[i].first, " ", shape_str(held_[i].second.shape()), " does not fit ",
                          fresh[i].first, " ", shape_str(fresh[i].second.shape()),
                          "; fix: do not change the model while an adapter is disabled");
            copy_into(fresh[i].second, held_[i].second);
        }
    }
    method_ = std::move(again.method_);
    saved_requires_grad_ = std::move(again.saved_requires_grad_);
    held_.clear();
    disabled_ = false;
}

// ---------------------------------------------------------------- AdapterSet
Adapter& AdapterSet::insert(const std::string& name, const std::function<Adapter()>& make) {
    SSMTUNE_CHECK(!name.empty() && name.find('+') == std::string::npos, "AdapterSet: an adapter needs a non-empty "
                  "name without '+' (which joins the names of adapters active together), got \"", name, "\"");
    for (auto& [n, a] : adapters_) SSMTUNE_CHECK(n != name, "AdapterSet: an adapter named \"", name, "\" exists already; fix: "
                                                 "remove it first or choose another name");
    const std::vector<std::string> was = active_, was_per_sample = per_sample_;
    set_active("");  // the hooks free for the new one
    std::unique_ptr<Adapter> made;
    try {
        made = std::make_unique<Adapter>(make());
        SSMTUNE_CHECK(made->config().peft_type() != "FULL", "AdapterSet: \"", name, "\" is a FULL adapter, which trains "
                      "every base weight in place, so no set can switch it off for another adapter; fix: use it alone "
                      "(peft::load; on the command line, one --adapter directory)");
        made->disable();
    } catch (...) {  // a config or directory that fails leaves the set as it was, the active adapters attached
        if (made) made->detach();
        set_active(was);
        if (!was_per_sample.empty()) set_batch_adapters(was_per_sample);
        throw;
    }
    adapters_.emplace_back(name, std::move(made));
    set_active(was);
    if (!was_per_sample.empty()) set_batch_adapters(was_per_sample);
    return *adapters_.back().second;
}

Adapter& AdapterSet::add(const std::string& name, const Config& config) {
    return insert(name, [&] { return apply(*model_, config); });
}

Adapter& AdapterSet::load(const std::string& name, const std::string& dir) {
    return insert(name, [&] { return peft::load(*model_, dir); });
}

Adapter& AdapterSet::get(const std::string& name) {
    return const_cast<Adapter&>(static_cast<const AdapterSet*>(this)->get(name));
}

const Adapter& AdapterSet::get(const std::string& name) const {
    for (auto& [n, a] : adapters_)
        if (n == name) return *a;
    std::string known;
    for (auto& [n, a] : adapters_) known += (known.empty() ? "" : ", ") + n;
    SSMTUNE_FAIL("AdapterSet: no adapter named \"", name, "\"; known: ", known.empty() ? "(none)" : known);
}

std::vector<std::string> AdapterSet::names() const {
    std::vector<std::string> out;
    for (auto& [n, a] : adapters_) out.push_back(n);
    return out;
}

std::string AdapterSet::active() const {
    std::string out;
    for (auto& n : active_) out += (out.empty() ? "" : "+") + n;
    return out;
}

void AdapterSet::set_active(const std::string& name) {
    set_active(name.empty() ? std::vector<std::string>{} : std::vector<std::string>{name});
}

namespace {
// Why an adapter's config keeps it from sharing the model with other adapters, or "" when it can: active together
// (a base-rewriting init only `first`) or per sample (also not DoRA, and no base rewrite at all: every sample sees it).
std::string sharing_refusal(const json& c, bool per_sample, bool first) {
    const std::string type = c.at("peft_type").get<std::string>();
    if (type != "LORA") return "is " + type + (per_sample ? "; per-sample adapters are LORA" : "; only LORA adapters are active together");
    if (per_sample && c.contains("use_dora") && c.at("use_dora") == true)
        return "uses DoRA, whose norms scale the whole output (HF refuses it too)";
    if (c.contains("trainable_token_indices") && !c.at("trainable_token_indices").is_null())
        return "trains tokens (trainable_token_indices), whose rows replace the embedding's and keep the module to "
               "themselves";
    if (c.contains("target_parameters") && c.at("target_parameters").is_array() && !c.at("target_parameters").empty())
        return "adapts parameters (target_parameters), one change per parameter (HF's parameter wrapper serves no "
               "mixed batch either)";
    if (lora_trains_base_in_place(c))
        return per_sample ? "trains base tensors in place, which every sample would see"
                          : "trains base tensors in place (\"bias\" or \"modules_to_save\"; HF refuses several active "
                            "adapters with modules_to_save too)";
    const std::string init = LoraSettings::from_config(c).init;
    if (lora_init_changes_base(init) && (per_sample || !first))
        return "rewrites the base weights (init_lora_weights \"" + init + "\"), " +
               (per_sample ? "which every sample would see" : "which the adapters before it read; fix: list it first");
    return "";
}
}  // namespace

void AdapterSet::check_combinable(const std::vector<std::string>& names) {
    for (size_t i = 0; i < names.size(); ++i) {
        get(names[i]);  // an unknown name fails before anything changes
        for (size_t j = 0; j < i; ++j)
            SSMTUNE_CHECK(names[j] != names[i], "AdapterSet: \"", names[i], "\" is listed twice; fix: name each adapter once");
    }
    if (names.size() < 2) return;
    for (size_t i = 0; i < names.size(); ++i) {
        const std::string why = sharing_refusal(get(names[i]).config().json, /*per_sample=*/false, /*first=*/i == 0);
        SSMTUNE_CHECK(why.empty(), "AdapterSet: \"", names[i], "\" cannot be active together with other adapters: it ", why);
    }
}

void AdapterSet::set_active(const std::vector<std::string>& names) {
    if (!per_sample_.empty()) {  // back to whole batches
        for (const std::string& n : active_)
            if (get(n).attached()) get(n).set_sample_mask(Tensor());
        per_sample_.clear();
    }
    if (names == active_) return;
    check_combinable(names);
    const std::vector<std::string> was = active_;
    // off in the reverse order of attaching, so each puts back what it found (requires_grad, rewritten weights); one
    // merged (or detached) meanwhile is part of the base now and stays off
    for (size_t i = active_.size(); i-- > 0;)
        if (get(active_[i]).attached()) get(active_[i]).disable();
    active_.clear();
    try {
        for (const std::string& n : names) {
            get(n).enable();
            active_.push_back(n);
        }
    } catch (...) {  // (an adapter that does not fit beside the others) back to the adapters active before
        for (size_t i = active_.size(); i-- > 0;) get(active_[i]).disable();
        active_.clear();
        for (const std::string& n : was) {
            if (!get(n).disabled()) continue;  // merged meanwhile
            get(n).enable();
            active_.push_back(n);
        }
        throw;
    }
    if (active_.size() > 1)  // each enable() froze the adapters before it: all active adapters train (HF's set_adapter)
        for (const std::string& n : active_)
            for (Tensor& t : get(n).parameters()) t.set_requires_grad(true);
}

void AdapterSet::set_batch_adapters(const std::vector<std::string>& per_sample) {
    SSMTUNE_CHECK(!per_sample.empty(), "set_batch_adapters: give one adapter name (or \"", kBaseAdapter, "\") per sample");
    std::vector<std::string> distinct;
    for (const std::string& n : per_sample)
        if (n != kBaseAdapter && std::find(distinct.begin(), distinct.end(), n) == distinct.end()) distinct.push_back(n);
    for (const std::string& n : distinct) {  // what set_active checks for several, here for one too
        const std::string why = sharing_refusal(get(n).config().json, /*per_sample=*/true, /*first=*/false);
        SSMTUNE_CHECK(why.empty(), "set_batch_adapters: \"", n, "\" cannot serve single samples: it ", why);
    }
    set_active(distinct);
    for (const std::string& n : distinct) {
        std::vector<double> mask;
        for (const std::string& m : per_sample) mask.push_back(m == n ? 1.0 : 0.0);
        get(n).set_sample_mask(Tensor::from_vector<double>(mask, {int64_t(mask.size())}));
    }
    per_sample_ = per_sample;
}

void AdapterSet::remove(const std::string& name) {
    get(name);
    if (std::find(active_.begin(), active_.end(), name) != active_.end()) {
        std::vector<std::string> rest;
        for (auto& n : active_)
            if (n != name) rest.push_back(n);
        set_active(rest);  // (the others detach and attach again in order, so each restores what it found)
    }
    get(name).detach();
    for (size_t i = 0; i < adapters_.size(); ++i)
        if (adapters_[i].first == name) adapters_.erase(adapters_.begin() + std::ptrdiff_t(i));
}

// ---------------------------------------------------------------- apply / load
Adapter apply(models::Module& model, const Config& config) {
    ModelView view(model);
    const int64_t base = model.num_parameters();
    std::vector<std::pair<Tensor, bool>> saved;
    for (auto& [name, t] : model.named_parameters()) {
        saved.emplace_back(t, t.requires_grad());
        t.set_requires_grad(false);
    }
    const std::string& type = config.peft_type();
    std::unique_ptr<Method> method;
    try {
        if (type == "FULL") method = make_full(view, config);
        else if (type == "BITFIT") method = make_bitfit(view, config);
        else if (type == "PARTIAL") method = make_partial(view, config);
        else if (type == "LORA") method = make_lora(view, config);
        else if (type == "STATE_OFFSET") method = make_state_offset(view, config);
        else if (type == "INITIAL_STATE") method = make_initial_state(view, config);
        else if (type == "PROMPT") method = make_prompt(view, config);
        else if (type == "PREFIX") method = make_prefix(view, config);
        else if (type == "PARALLEL_ADAPTER") method = make_parallel_adapter(view, config);
        else if (type == "SDLORA") method = make_sdlora(view, config);
        else if (type == "SURM") method = make_surm(view, config);
        else if (type == "ADDITIONAL_SCAN") method = make_additional_scan(view, config);
        else if (type == "TRAINABLE_TOKENS") method = make_trainable_tokens(view, config);
        else SSMTUNE_FAIL("unknown peft_type ", type);
    } catch (...) {
        for (auto& [t, flag] : saved) t.set_requires_grad(flag);
        throw;
    }
    Adapter adapter(model, config, std::move(method), base);
    // The saved flags restore the base on detach (the method's own tensors are not in `saved`).
    adapter.saved_requires_grad_ = std::move(saved);
    return adapter;
}

Adapter load(models::Module& model, const std::string& dir) {
    const std::string cfg = (fs::path(dir) / "adapter_config.json").string();
    if (!fs::exists(cfg))  // a fine-tuning run's directory, a model, a file of the adapter
        SSMTUNE_FAIL("adapter directory ", dir, " has no adapter_config.json; fix: ",
                     models::directory_mixup_fix(dir, "adapter_config.json", "adapter",
                                                 "a fine-tuning run's directory; its adapter is", "config.json",
                                                 "a model directory: pass it as --model, and the adapter as --adapter",
                                                 "pass the directory `finetune` wrote as OUT/adapter "
                                                 "(adapter_config.json + weights)"));
    Adapter a = apply(model, Config::from_file(cfg));
    try {
        a.load_weights(dir);
    } catch (...) {
        a.detach();
        throw;
    }
    return a;
}

}  // namespace ssmtune::peft
