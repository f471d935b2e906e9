// Model directory load/save (see checkpoint.h).
#include "models/checkpoint.h"

#include <filesystem>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "engine/safetensors.h"
#include "engine/tensor_copy.h"
#include "engine/tensor_file.h"
#include "engine/torch_checkpoint.h"

namespace fs = std::filesystem;

namespace ssmtune::models {

Module& AnyModel::module() const {
    SSMTUNE_CHECK(lm || s4d, "empty model handle");
    if (lm) return *lm;
    return *s4d;
}

nlohmann::json read_json_file(const std::string& path) {
    std::ifstream in(path);
    SSMTUNE_CHECK(in.good(), "cannot open ", path, ": ", fs::exists(path) ? "unreadable" : "no such file");
    std::stringstream ss;
    ss << in.rdbuf();
    try {
        return nlohmann::json::parse(ss.str());
    } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for numbers beyond double
        SSMTUNE_FAIL(path, ": not valid JSON (", e.what(), ")");
    }
}

void write_json_file(const std::string& path, const nlohmann::json& j) {
    write_file_atomically(path, [&](const std::string& tmp) {
        std::ofstream out(tmp);
        out << j.dump(2) << "\n";
        out.close();
        SSMTUNE_CHECK(out.good(), "writing ", tmp, " failed");
    });
}

namespace {

// A model directory's weight files, in HF's order of preference: model.safetensors, the shards its
// model.safetensors.index.json lists, pytorch_model.bin, the shards of pytorch_model.bin.index.json.
struct WeightFiles {
    std::vector<std::string> files;
    std::string index;             // the index.json when sharded
    nlohmann::json weight_map;     // its weight_map
    bool torch = false;            // PyTorch checkpoints (engine/torch_checkpoint.h) rather than safetensors
};

WeightFiles find_weight_files(const std::string& dir) {
    WeightFiles w;
    for (const bool torch : {false, true}) {
        const std::string stem = torch ? "pytorch_model.bin" : "model.safetensors";
        const fs::path single = fs::path(dir) / stem, index = fs::path(dir) / (stem + ".index.json");
        w.torch = torch;
        if (fs::exists(single)) {
            w.files.push_back(single.string());
            return w;
        }
        if (!fs::exists(index)) continue;
        w.index = index.string();
        const nlohmann::json j = read_json_file(w.index);
        SSMTUNE_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), w.index,
                      ": missing \"weight_map\"");
        w.weight_map = j["weight_map"];
        std::set<std::string> shards;
        for (auto& [name, file] : w.weight_map.items()) {
            SSMTUNE_CHECK(file.is_string(), w.index, ": weight_map entry ", name, " is not a file name");
            const std::string shard = file.get<std::string>();
            SSMTUNE_CHECK(shard.find('/') == std::string::npos && shard.find("..") == std::string::npos, w.index,
                          ": shard name ", shard, " must be a plain file name");
            shards.insert(shard);
        }
        for (const std::string& shard : shards) w.files.push_back((fs::path(dir) / shard).string());
        return w;
    }
    SSMTUNE_FAIL("no model.safetensors, pytorch_model.bin or their sharded index.json in ", dir,
                 "; fix: pass a model directory (config.json + weights)");
}

}  // namespace

struct ModelWeights::Source {
    const TensorFile* file;
    std::string name;  // in the file
    TensorFile::Entry entry;
};

ModelWeights::ModelWeights(const std::string& dir) : dir_(dir) {
    SSMTUNE_CHECK(fs::is_directory(dir), "model directory ", dir, " does not exist; fix: pass a folder holding "
                  "config.json and model.safetensors");
    const WeightFiles w = find_weight_files(dir);
    for (const std::string& file : w.files) {
        files_.push_back(w.torch ? open_torch_checkpoint(file) : open_safetensors(file));
        for (const auto& [name, entry] : files_.back()->entries()) {
            SSMTUNE_CHECK(!tensors_.count(name), "tensor ", name, " appears in two shards of ", dir);
            tensors_[name] = Source{files_.back().get(), name, entry};
        }
    }
    for (auto& [name, file] : w.weight_map.items())
        SSMTUNE_CHECK(tensors_.count(name), w.index, ": ", name, " is listed in weight_map but missing from ", file);
}

ModelWeights::~ModelWeights() = default;

std::map<std::string, Shape> ModelWeights::shapes() const {
    std::map<std::string, Shape> out;
    for (const auto& [name, s] : tensors_) out[name] = s.entry.shape;
    return out;
}

double ModelWeights::element_count() const {
    double n = 0;
    for (const auto& [name, s] : tensors_) {
        double e = 1;
        for (int64_t d : s.entry.shape) e *= double(d);
        n += e;
    }
    return n;
}

void ModelWeights::rename(const std::string& from, const std::string& to) {
    auto it = tensors_.find(from);
    SSMTUNE_CHECK(it != tensors_.end(), dir_, " holds no tensor named ", from);
    SSMTUNE_CHECK(!tensors_.count(to), dir_, ": both ", from, " and ", to, " are there, and they name one tensor; fix: "
                  "keep one of them");
    Source s = it->second;
    tensors_.erase(it);
    tensors_.emplace(to, std::move(s));
}

void ModelWeights::drop(const std::string& name) { tensors_.erase(name); }

namespace {
// Throws naming the tensor when it holds a NaN or Inf; `as` says which form of it was checked.
void check_finite(const Tensor& t, const std::string& name, const std::string& dir, const std::string& as = "") {
    double v = 0;
    SSMTUNE_CHECK(first_non_finite(t, &v) < 0, dir, ": tensor ", name, as, " holds a non-finite value (", v,
                  "); the weights are damaged; fix: use an intact copy of the model");
}
}  // namespace

Tensor ModelWeights::read(const std::string& name) const {
    auto it = tensors_.find(name);
    SSMTUNE_CHECK(it != tensors_.end(), dir_, " holds no tensor named ", name);
    Tensor t = it->second.file->read(it->second.name);
    check_finite(t, name, dir_);
    return t;
}

void ModelWeights::load_into(Module& module) const {
    module.load_state_dict(shapes(), [&](const std::string& name, Tensor& dst) {
        const Source& s = tensors_.at(name);
        if (dst.device().is_cpu() && dst.dtype() == s.entry.dtype) {
            s.file->read_into(s.name, dst);
            check_finite(dst, name, dir_);
            return;
        }
        copy_into(dst, read(name));
        if (dst.device().is_cpu())  // a float64 value beyond float32's range, say
            check_finite(dst, name, dir_, std::string(" converted to ") + dtype_name(dst.dtype()));
    }, true, dir_);
}

TensorMap read_model_tensors(const std::string& dir) {
    const ModelWeights weights(dir);
    TensorMap all;
    for (const auto& [name, shape] : weights.shapes()) all[name] = weights.read(name);
    return all;
}

namespace {

// Names the config field behind the first shape disagreement between config and weights, if any.
void check_lm_config_against_weights(const LMConfig& c, const std::map<std::string, Shape>& w, const std::string& dir) {
    const auto shape_of = [&](const std::string& name) -> const Shape* {
        auto it = w.find(name);
        return it == w.end() ? nullptr : &it->second;
    };
    if (const Shape* s = shape_of("backbone.embeddings.weight")) {
        SSMTUNE_CHECK(s->size() == 2 && (*s)[0] == c.vocab_size, dir, ": config field \"vocab_size\" is ",
                      c.vocab_size, " but backbone.embeddings.weight is ", shape_str(*s));
        SSMTUNE_CHECK((*s)[1] == c.hidden_size, dir, ": config field \"hidden_size\" is ", c.hidden_size,
                      " but backbone.embeddings.weight is ", shape_str(*s));
    }
    if (const Shape* s = shape_of("backbone.encoder.weight"))
        SSMTUNE_CHECK(s->size() == 2 && (*s)[1] == c.input_size && (*s)[0] == c.hidden_size, dir,
                      ": config fields \"input_size\" ", c.input_size, " and \"hidden_size\" ", c.hidden_size,
                      " disagree with backbone.encoder.weight ", shape_str(*s));
    int64_t layers = 0;
    while (w.count("backbone.layers." + std::to_string(layers) + ".norm.weight")) ++layers;
    SSMTUNE_CHECK(layers == 0 || layers == c.num_hidden_layers, dir, ": config field \"num_hidden_layers\" is ",
                  c.num_hidden_layers, " but the weights have ", layers, " layers");
    const std::string m = "backbone.layers.0.mixer.";
    if (const Shape* s = shape_of(m + "in_proj.weight"))
        SSMTUNE_CHECK((*s)[0] == 2 * c.intermediate_size, dir, ": config field \"intermediate_size\" (or expand) gives ",
                      c.intermediate_size, " but ", m, "in_proj.weight is ", shape_str(*s));
    if (const Shape* s = shape_of(m + "A_log"))
        SSMTUNE_CHECK(s->size() == 2 && (*s)[1] == c.state_size, dir, ": config field \"state_size\" is ", c.state_size,
                      " but ", m, "A_log is ", shape_str(*s));
    if (const Shape* s = shape_of(m + "conv1d.weight"))
        SSMTUNE_CHECK(s->size() == 3 && (*s)[2] == c.conv_kernel, dir, ": config field \"conv_kernel\" is ",
                      c.conv_kernel, " but ", m, "conv1d.weight is ", shape_str(*s));
    if (const Shape* s = shape_of(m + "dt_proj.weight"))
        SSMTUNE_CHECK(s->size() == 2 && (*s)[1] == c.time_step_rank, dir, ": config field \"time_step_rank\" is ",
                      c.time_step_rank, " but ", m, "dt_proj.weight is ", shape_str(*s));
    SSMTUNE_CHECK(c.use_conv_bias == (w.count(m + "conv1d.bias") > 0) || layers == 0, dir,
                  ": config field \"use_conv_bias\" is ", c.use_conv_bias ? "true" : "false", " but ", m,
                  "conv1d.bias is ", w.count(m + "conv1d.bias") ? "present" : "absent");
    SSMTUNE_CHECK(c.use_bias == (w.count(m + "in_proj.bias") > 0) || layers == 0, dir,
                  ": config field \"use_bias\" is ", c.use_bias ? "true" : "false", " but ", m, "in_proj.bias is ",
                  w.count(m + "in_proj.bias") ? "present" : "absent");
}

// The model type a config names; mamba_ssm's MambaConfig (state-spaces/mamba-*'s config.json) has no model_type
// but d_model, n_layer and ssm_cfg: that is a Mamba. "" when neither.
std::string config_model_type(const nlohmann::json& config) {
    if (!config.is_object()) return "";
    if (config.contains("model_type"))
        return config["model_type"].is_string() ? config["model_type"].get<std::string>() : "";
    return config.contains("d_model") && config.contains("n_layer") ? "mamba" : "";
}

}  // namespace

double described_parameters(const nlohmann::json& config, const std::string& source) {
    const std::string model_type = config_model_type(config);
    if (model_type == "s4d") return S4DConfig::from_json(config, source).num_parameters();
    if (model_type == "mamba" || model_type == "mamba_ssm" || model_type == "longhorn")
        return LMConfig::from_json(config, source).num_parameters();
    return 0;
}

AnyModel create_model(const nlohmann::json& config, uint64_t seed, const std::string& source) {
    AnyModel m;
    m.model_type = config_model_type(config);
    SSMTUNE_CHECK(!m.model_type.empty(), source, ": missing \"model_type\" (one of mamba, longhorn, s4d)");
    if (m.model_type == "mamba_ssm") m.model_type = "mamba";
    if (m.model_type == "mamba" || m.model_type == "longhorn") {
        m.lm = std::make_shared<LanguageModel>(LMConfig::from_json(config, source), seed);
    } else if (m.model_type == "s4d") {
        m.s4d = std::make_shared<S4DClassifier>(S4DConfig::from_json(config, source), seed);
    } else {
        SSMTUNE_FAIL(source, ": unknown model_type \"", m.model_type, "\"; known: mamba, longhorn, s4d");
    }
    return m;
}

std::string directory_mixup_fix(const std::string& dir, const std::string& wanted_file, const std::string& run_subdir,
                                const std::string& run_is, const std::string& other_file, const std::string& other_is,
                                const std::string& fallback) {
    const fs::path d(dir);
    if (fs::exists(d / run_subdir / wanted_file)) return "this is " + run_is + " " + (d / run_subdir).string();
    if (fs::exists(d / other_file)) return "this is " + other_is;
    if (fs::is_regular_file(d) && fs::exists(d.parent_path() / wanted_file))
        return "pass the directory that holds it, " + d.parent_path().string();
    return fallback;
}

AnyModel load_model(const std::string& dir) {
    const std::string config_path = (fs::path(dir) / "config.json").string();
    if (!fs::exists(config_path))  // found by fuzzing the flags: a run directory, an adapter, a file of the model
        SSMTUNE_FAIL("no config.json in ", dir, "; fix: ",
                     directory_mixup_fix(dir, "config.json", "model", "a run directory; its model is", "adapter_config.json",
                                         "an adapter directory: pass it as --adapter, with its base model as --model",
                                         "pass a model directory (config.json + model.safetensors)"));
    const nlohmann::json config = read_json_file(config_path);
    ModelWeights weights(dir);
    // Before allocating anything: a config that describes a far larger model than the weights hold (a damaged or
    // hostile config.json) is refused here instead of exhausting memory in the constructor.
    const double file_elements = weights.element_count();
    const double described = described_parameters(config, config_path);
    SSMTUNE_CHECK(described <= 2 * file_elements + 1e6, config_path, ": describes a model of ", described,
                  " parameters but the weights in ", dir, " hold only ", file_elements,
                  " values; fix: use the config.json that came with these weights");
    // Longhorn's own code names the β projection dt_head; a mamba_ssm-style config without model_type whose
    // weights have one is a Longhorn (a Mamba always has A_log, a Longhorn never).
    bool has_dt_head = false;
    for (auto& [name, shape] : weights.shapes())
        has_dt_head = has_dt_head || name.find(".mixer.dt_head.") != std::string::npos;
    nlohmann::json typed = config;
    if (has_dt_head && config.is_object() && !config.contains("model_type") && config_model_type(config) == "mamba")
        typed["model_type"] = "longhorn";
    AnyModel m;
    {
        const SkipRandomInit skip;  // every parameter is read from the weights below
        m = create_model(typed, 0, config_path);
    }
    if (m.lm) {
        // Original state-spaces checkpoints say backbone.embedding., Longhorn's own dt_head.
        for (auto& [name, shape] : weights.shapes()) {
            std::string n = name;
            const std::string old_prefix = "backbone.embedding.";
            if (n.rfind(old_prefix, 0) == 0) n = "backbone.embeddings." + n.substr(old_prefix.size());
            const size_t head = n.find(".mixer.dt_head.");
            if (head != std::string::npos && m.model_type == "longhorn")
                n.replace(head, std::string(".mixer.dt_head.").size(), ".mixer.dt_proj.");
            if (n != name) weights.rename(name, n);
        }
        if (m.lm->config().tie_word_embeddings) weights.drop("lm_head.weight");  // tied: the embedding is the head
        check_lm_config_against_weights(m.lm->config(), weights.shapes(), dir);
    }
    weights.load_into(m.module());
    return m;
}

void save_model(const std::string& dir, const AnyModel& model) {
    fs::create_directories(dir);
    const nlohmann::json config = model.lm ? model.lm->config().to_json() : model.s4d->config().to_json();
    TensorMap tensors = model.module().state_dict();
    save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
    write_json_file((fs::path(dir) / "config.json").string(), config);
}

namespace {
// Copies `from` to `to`, replacing what is there; Error naming both when it cannot.
void copy_replacing(const fs::path& from, const fs::path& to) {
    std::error_code ec;
    fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
    SSMTUNE_CHECK(!ec, "could not copy ", from.string(), " to ", to.string(), " (", ec.message(), "); fix: check that ",
                  to.parent_path().string(), " is writable and has space");
}
}  // namespace

namespace {
constexpr const char* kTokenizerFiles[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                           "generation_config.json"};

// Removes dir/name if it is there; Error naming it when it cannot.
void remove_stale(const fs::path& path) {
    std::error_code ec;
    fs::remove(path, ec);
    SSMTUNE_CHECK(!ec, "could not remove the stale ", path.string(), " (", ec.message(), "); fix: check that ",
                  path.parent_path().string(), " is writable");
}
}  // namespace

int copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir) {
    std::error_code ec;
    if (fs::equivalent(from_dir, to_dir, ec)) return 0;  // (nothing to copy, and nothing to remove)
    int copied = 0;
    for (const char* name : kTokenizerFiles) {
        const fs::path from = fs::path(from_dir) / name;
        if (fs::is_regular_file(from)) {
            copy_replacing(from, fs::path(to_dir) / name);
            ++copied;
        } else {
            remove_stale(fs::path(to_dir) / name);  // an earlier write's, which would describe another model
        }
    }
    return copied;
}

void install_tokenizer(const std::string& tokenizer_file, const std::string& model_dir) {
    if (tokenizer_file.empty()) {  // none: what an earlier write into model_dir left must not be read as this one's
        for (const char* name : kTokenizerFiles) remove_stale(fs::path(model_dir) / name);
        return;
    }
    const fs::path to = fs::path(model_dir) / "tokenizer.json";
    std::error_code ec;
    if (fs::exists(to) && fs::equivalent(tokenizer_file, to, ec)) return;  // already there
    copy_replacing(tokenizer_file, to);
}

std::string tokenizer_beside(const std::string& model_dir) {
    const fs::path p = fs::path(model_dir) / "tokenizer.json";
    return fs::exists(p) ? p.string() : std::string();
}

namespace {
std::string read_file_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    SSMTUNE_CHECK(in.good(), "cannot open ", path, ": unreadable");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}
}  // namespace

std::string tokenizer_for(const std::string& model_dir, const std::vector<std::string>& adapter_dirs) {
    std::string chosen, chosen_bytes;
    for (const std::string& dir : adapter_dirs) {
        const std::string path = tokenizer_beside(dir);
        if (path.empty()) continue;  // an adapter trained on token ids or a synthetic task, or before 2026-12-07
        const std::string bytes = read_file_bytes(path);
        if (chosen.empty()) {
            chosen = path;
            chosen_bytes = bytes;
        }
        SSMTUNE_CHECK(bytes == chosen_bytes, "the adapters ", fs::path(chosen).parent_path().string(), " and ", dir,
                      " were fine-tuned on text encoded by different tokenizers (their tokenizer.json differ); fix: use "
                      "them separately, or name one with --tokenizer");
    }
    return chosen.empty() && !model_dir.empty() ? tokenizer_beside(model_dir) : chosen;
}

}  // namespace ssmtune::models
