// Workloads: data + model → loss and metrics (see workload.h).
#include "tools/workload.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <utility>

#include "autograd/node.h"
#include "cuda/runtime.h"
#include "ops/ops.h"
#include "tools/data/bpe_tokenizer.h"
#include "tools/data/class_metrics.h"
#include "tools/run_config.h"

namespace ssmtune::tools {

using json = nlohmann::json;

namespace {
// Mean cross-entropy over the batch's target positions (−100 ignored), and the logits.
// The batch is moved to `device` (where the model is) first.
Tensor lm_token_loss(models::LanguageModel& lm, const data::TokenBatch& b, Device device, Tensor* logits_out = nullptr) {
    Tensor logits = lm.forward(b.input_ids.to(device));
    const int64_t V = logits.size(-1), n = b.input_ids.numel();
    if (logits_out) *logits_out = logits;
    return ops::cross_entropy(logits.reshape({n, V}), b.targets.to(device).reshape({n}));
}

constexpr int64_t kPixelLevels = 256;

// Images as token sequences for a language model (Mamba, Longhorn): each pixel's 8-bit intensity is a token
// (0–255, one pixel per step: order pixel or permuted), and the target at the last pixel is the class token
// 256 + label; every other position is ignored. Loss: cross-entropy there; the answer: argmax over the vocabulary.
data::TokenBatch pixel_token_batch(const data::ImageSequences& images, const Tensor& index) {
    const Tensor x = ops::index_select(images.inputs, 0, index).contiguous();  // [B, L, 1], intensities / 255
    const Tensor y = ops::index_select(images.labels, 0, index);
    const int64_t B = x.size(0), L = x.size(1);
    std::vector<int64_t> ids(size_t(B * L)), targets(size_t(B * L), data::kIgnoreIndex);
    const std::vector<float> px = x.to_vector<float>();
    const std::vector<int64_t> labels = y.to_vector<int64_t>();
    for (int64_t i = 0; i < B * L; ++i) ids[size_t(i)] = std::lround(double(px[size_t(i)]) * (kPixelLevels - 1));
    for (int64_t b = 0; b < B; ++b) targets[size_t(b * L + L - 1)] = kPixelLevels + labels[size_t(b)];
    return {Tensor::from_vector<int64_t>(ids, {B, L}), Tensor::from_vector<int64_t>(targets, {B, L})};
}

std::vector<int64_t> sample_indices(Workload& w, int64_t n) {
    const int64_t B = std::min(w.batch_size, n);
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < B; ++i)
        idx.push_back(std::min<int64_t>(n - 1, int64_t(philox_uniform(w.data_gen.seed(), w.data_gen.advance(1)) * double(n))));
    return idx;
}

// Loss, accuracy, macro-F1 and MCC over all test images, in batches of the training batch size, without autograd.
// `batch_metrics(start, count, predicted)` gives that batch's mean loss and appends its predicted classes.
std::map<std::string, double> evaluate_test_images(
    const Workload& w,
    const std::function<double(int64_t start, int64_t count, std::vector<int64_t>& predicted)>& batch_metrics) {
    autograd::NoGradGuard no_grad;
    const int64_t n = w.test_images.inputs.size(0);
    double loss = 0;
    std::vector<int64_t> predicted;
    for (int64_t start = 0; start < n; start += w.batch_size) {
        const int64_t b = std::min(w.batch_size, n - start);
        loss += batch_metrics(start, b, predicted) * double(b);
    }
    std::map<std::string, double> out = data::classification_metrics(predicted, w.test_images.labels.to_vector<int64_t>());
    out["loss"] = loss / double(n);
    return out;
}

// Image classification for the models that read real-valued frames: the S4D classifier (logits [B, C]) and the
// Mamba/Longhorn frame models (logits [B, L, C]; the prediction is read at the last frame, which has seen them all).
// Loss: cross-entropy of the class logits; metrics: loss, accuracy, macro-F1, MCC.
void attach_frame_classifier(Workload& w) {
    Workload* wp = &w;
    const auto class_logits = [wp](const Tensor& x) {
        return wp->model.s4d ? wp->model.s4d->forward(x) : wp->model.lm->classify_frames(x);
    };
    w.train_loss = [wp, class_logits](double& units) {
        const std::vector<int64_t> idx = sample_indices(*wp, wp->train_images.inputs.size(0));
        const int64_t B = int64_t(idx.size());
        Tensor ix = Tensor::from_vector<int64_t>(idx, {B});
        Tensor x = ops::index_select(wp->train_images.inputs, 0, ix), y = ops::index_select(wp->train_images.labels, 0, ix);
        units = double(B);
        const DType dtype = wp->model.module().named_parameters().front().second.dtype();
        return ops::cross_entropy(class_logits(x.to(dtype).to(wp->device)), y.to(wp->device));
    };
    w.evaluate = [wp, class_logits]() {
        return evaluate_test_images(*wp, [wp, class_logits](int64_t start, int64_t b, std::vector<int64_t>& predicted) {
            Tensor x = wp->test_images.inputs.narrow(0, start, b).contiguous().to(wp->device);
            Tensor y = wp->test_images.labels.narrow(0, start, b).contiguous().to(wp->device);
            const Tensor logits = class_logits(x);
            for (int64_t p : ops::argmax(logits, 1).to_vector<int64_t>()) predicted.push_back(p);
            return ops::cross_entropy(logits, y).item();
        });
    };
}

void attach_pixel_token_lm(Workload& w) {
    SSMTUNE_CHECK(w.input_features == 1, "a ", w.model.model_type, " language model reads Fashion-MNIST one pixel token "
                  "per step, but data.order gives ", w.input_features, " features per step; fix: data.order pixel or "
                  "permuted, or a frame model (model.input_size ", w.input_features, ", the default of train "
                  "--model-type ", w.model.model_type, " for this data)");
    SSMTUNE_CHECK(w.model.lm->config().vocab_size >= w.data_vocab, "Fashion-MNIST as tokens needs a vocabulary of ",
                  w.data_vocab, " (256 pixel levels + ", w.num_classes, " class tokens) but the model has ",
                  w.model.lm->config().vocab_size, "; fix: vocab_size >= ", w.data_vocab);
    Workload* wp = &w;
    w.train_loss = [wp](double& units) {
        const std::vector<int64_t> idx = sample_indices(*wp, wp->train_images.inputs.size(0));
        units = double(idx.size());
        return lm_token_loss(*wp->model.lm, pixel_token_batch(wp->train_images, Tensor::from_vector<int64_t>(idx, {int64_t(idx.size())})),
                             wp->device);
    };
    w.evaluate = [wp]() {
        return evaluate_test_images(*wp, [wp](int64_t start, int64_t b, std::vector<int64_t>& predicted) {
            const data::TokenBatch batch = pixel_token_batch(wp->test_images, Tensor::arange(start, start + b, 1, DType::I64));
            Tensor logits;
            const double loss = lm_token_loss(*wp->model.lm, batch, wp->device, &logits).item();
            // the answer is the token predicted at the last pixel: class token 256 + c means class c; a pixel token
            // (an answer that is no class) stays a label of its own, below 0
            const int64_t L = logits.size(1);
            for (int64_t p : ops::argmax(logits.narrow(1, L - 1, 1).contiguous(), 2).to_vector<int64_t>()) predicted.push_back(p - kPixelLevels);
            return loss;
        });
    };
}

}  // namespace

std::shared_ptr<Workload> load_workload_data(const json& rc) {
    auto w = std::make_shared<Workload>();
    const json& d = rc["data"];
    const json& t = rc["train"];
    const std::string kind = d["kind"];
    w->data_kind = kind;
    for (const std::string& unused : unused_data_settings(rc))
        std::fprintf(stderr, "warning: %s; fix: remove it, or set the data.kind that reads it\n", unused.c_str());
    w->data_gen = Generator(t["seed"].get<uint64_t>() * 2654435761ull + 17);
    w->batch_size = t["batch_size"];
    w->seq_len = t["seq_len"];
    const int64_t eval_batches = t["eval_batches"];
    SSMTUNE_CHECK(w->batch_size >= 1 && eval_batches >= 1, "train.batch_size and train.eval_batches must be >= 1, got ",
                  w->batch_size, " and ", eval_batches);
    // only text and tokens read the window length (unused_data_settings warns about it elsewhere)
    SSMTUNE_CHECK(w->seq_len >= 2 || (kind != "text" && kind != "tokens"), "train.seq_len must be >= 2 (an input and "
                  "its next token), got ", w->seq_len);
    if (kind == "synthetic") {
        w->task = data::SyntheticTask::from_json(d["task"], "data.task");
        w->data_vocab = w->task.vocab_size();
        // (its fixed held-out set is drawn by attach_model, once the batch is known to fit in memory)
    } else if (kind == "text" || kind == "tokens") {
        SSMTUNE_CHECK(d["path"].is_string(), "data.path is required for data kind \"", kind, "\"; fix: --data FILE");
        const std::string path = d["path"];
        // Text is read as bytes unless a tokenizer.json is given or sits next to the base model (HF checkpoints).
        std::string tokenizer = d["tokenizer"].is_string() ? d["tokenizer"].get<std::string>() : "";
        if (tokenizer.empty() && rc["base_model"].is_string()) tokenizer = models::tokenizer_beside(rc["base_model"]);
        if (kind == "text") w->tokenizer_path = tokenizer;
        if (kind == "text" && !tokenizer.empty())
            w->text = data::TextData::from_bpe_file(path, data::BpeTokenizer::from_file(tokenizer), d["val_fraction"].get<double>());
        else
            w->text = kind == "text" ? data::TextData::from_bytes_file(path, d["val_fraction"].get<double>())
                                     : data::TextData::from_safetensors(path, d["val_fraction"].get<double>());
        w->data_vocab = w->text.vocab_size;
        w->eval_tokens = w->text.eval_batches(w->batch_size, w->seq_len, eval_batches);
    } else if (kind == "fashion_mnist") {
        data::ImageViewOptions o;
        o.order = d["order"];
        o.permutation_seed = d["permutation_seed"];
        o.classes = d["classes"].get<std::vector<int64_t>>();
        o.limit = d["limit"];
        const std::string dir = d["path"].is_string() ? d["path"].get<std::string>() : "";
        w->train_images = data::load_fashion_mnist(dir, "train", o);
        data::ImageViewOptions ot = o;
        ot.limit = o.limit > 0 ? std::max<int64_t>(1, o.limit / 6) : 0;
        w->test_images = data::load_fashion_mnist(dir, "test", ot);
        w->num_classes = w->train_images.num_classes;
        w->input_features = w->train_images.inputs.size(2);
        w->data_vocab = kPixelLevels + w->num_classes;  // a language model reads pixel tokens, answers a class token
        w->units_name = "samples";
    } else {
        SSMTUNE_FAIL("unknown data.kind \"", kind, "\"; known: synthetic, text, tokens, fashion_mnist");
    }
    return w;
}

json default_model_config(const Workload& w, const std::string& model_type) {
    // Images go to the S4D classifier unless a language model is asked for (it then reads pixel tokens, or rows as
    // real-valued frames).
    const bool lm_wanted = model_type == "mamba" || model_type == "longhorn";
    if (w.data_kind == "fashion_mnist" && !lm_wanted)
        return {{"model_type", "s4d"}, {"d_input", w.input_features}, {"d_output", w.num_classes}, {"d_model", 64},
                {"d_state", 64}, {"n_layers", 4}, {"dropout", 0.1}, {"prenorm", false}};
    // intermediate_size (expand · hidden_size = 128) and time_step_rank (⌈hidden_size / 16⌉ = 4) are left to the
    // loader to derive, so `--set model.hidden_size=32` scales them as HF's MambaConfig does
    json c = {{"model_type", lm_wanted ? model_type : "mamba"}, {"vocab_size", w.data_vocab}, {"hidden_size", 64},
              {"num_hidden_layers", 2}, {"state_size", 16}, {"expand", 2}, {"conv_kernel", 4}};
    if (w.data_kind == "fashion_mnist" && w.input_features > 1) {  // rows: a frame model with a class head
        c["input_size"] = w.input_features;
        c["vocab_size"] = w.num_classes;
        c["tie_word_embeddings"] = false;
    }
    return c;
}

Device resolve_device(const std::string& name, const std::string& where) {
    if (name == "cpu") return Device::cpu();
    int index = 0;
    bool ok = name == "cuda";
    if (!ok && name.rfind("cuda:", 0) == 0 && name.size() > 5 && name.size() < 9) {
        ok = name.find_first_not_of("0123456789", 5) == std::string::npos;
        if (ok) index = std::stoi(name.substr(5));
    }
    SSMTUNE_CHECK(ok, where, ": device must be cpu, cuda or cuda:N, got \"", name, "\"");
    SSMTUNE_CHECK(cuda::built_with_cuda(), where, " is ", name, " but this build has no CUDA (nvcc was not found when it ",
                  "was configured); fix: use cpu, or rebuild with the CUDA Toolkit installed (-DSSMTUNE_CUDA=ON)");
    SSMTUNE_CHECK(cuda::available(), where, " is ", name, " but no CUDA GPU is usable on this machine (no driver or no ",
                  "device); fix: use cpu, or run on a machine with an NVIDIA GPU");
    SSMTUNE_CHECK(index < cuda::device_count(), where, " is ", name, " but this machine has ", cuda::device_count(),
                  " GPU(s); fix: cuda:0 to cuda:", cuda::device_count() - 1);
    return Device::cuda(index);
}

double physical_memory_bytes() {
    const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page_size > 0 ? double(pages) * double(page_size) : 0.0;
}

namespace {
std::string gib(double bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f GiB", bytes / 1073741824.0);
    return text;
}
}  // namespace

void check_model_fits_memory(double parameters, bool training, const std::string& source) {
    const double memory = physical_memory_bytes(), needed = (training ? 16.0 : 4.0) * parameters;
    if (memory <= 0 || needed <= memory) return;  // (unknown: the allocator says)
    char count[32];
    std::snprintf(count, sizeof count, "%.4g", parameters);
    SSMTUNE_FAIL(source, " describes a model of ", count, " parameters: ", training ? "training it" : "its weights",
                 " need", training ? "s" : "", " at least ", gib(needed),
                 training ? " (float32 weights, gradients and AdamW's two moments)" : " in float32",
                 " and this machine has ", gib(memory), "; fix: smaller hidden_size, intermediate_size, "
                 "num_hidden_layers or vocab_size (S4D: d_model, n_layers)");
}

void check_batch_fits_memory(const Workload& w, bool training) {
    if (!w.device.is_cpu() || (!w.model.lm && !w.model.s4d)) return;  // (a GPU's memory is its allocator's to report)
    // the batch a step really runs: training draws batch_size windows or samples (images: at most the training set);
    // evaluation runs the fixed held-out batches (text: at most the validation windows; images: the test set)
    int64_t steps = w.seq_len, batch = w.batch_size;  // text, tokens
    const auto images_in = [](const data::ImageSequences& s) { return s.inputs.defined() ? s.inputs.size(0) : 0; };
    if (w.data_kind == "synthetic") steps = w.task.seq_len();
    if (w.data_kind == "fashion_mnist") {
        const Tensor& x = w.train_images.inputs;
        steps = x.defined() && x.dim() == 3 ? x.size(1) : 0;
        batch = std::min(batch, images_in(training ? w.train_images : w.test_images));
    }
    if (!training && (w.data_kind == "text" || w.data_kind == "tokens")) {
        batch = 0;
        for (const data::TokenBatch& b : w.eval_tokens) batch = std::max(batch, b.input_ids.size(0));
    }
    double per_step = 0;  // float32 values kept per step of one sample, a lower bound
    // with gradient checkpointing a training step keeps each layer's input and one layer's activations at a time
    const bool checkpointing = training && w.model.module().gradient_checkpointing();
    if (w.model.lm) {
        const models::LMConfig& c = w.model.lm->config();
        const double logits = w.model.lm->reads_frames() ? 0.0 : double(c.vocab_size);  // frames: the last step only
        const double layers = double(c.num_hidden_layers), E = double(c.intermediate_size);
        per_step = (checkpointing ? layers * double(c.hidden_size) + 4.0 * E : training ? 4.0 * layers * E : 2.0 * E) +
                   logits;
    } else {
        const models::S4DConfig& c = w.model.s4d->config();
        const double layers = double(c.n_layers), H = double(c.d_model);
        per_step = checkpointing ? (layers + 2.0) * H : training ? 2.0 * layers * H : H;
    }
    const double memory = physical_memory_bytes(), needed = 4.0 * double(batch) * double(steps) * per_step;
    if (memory <= 0 || needed <= memory) return;
    std::string fix = "a smaller train.batch_size (--batch-size";
    if (training) fix += "; train.gradient_accumulation_steps keeps the batch an optimizer step sees";
    fix += ")";
    if (training && !checkpointing) fix += ", train.gradient_checkpointing (one layer's activations at a time)";
    if (w.data_kind == "text" || w.data_kind == "tokens") fix += " or train.seq_len (--seq-len)";
    SSMTUNE_FAIL(training ? "one training step" : "one evaluation batch", " of ", batch, " × ", steps,
                 " steps needs at least ", gib(needed), " of activations and this machine has ", gib(memory),
                 "; fix: ", fix);
}

namespace {
void attach_model_unchecked(Workload& w, models::AnyModel model, const json& run_config);
}  // namespace

void attach_model(Workload& w, models::AnyModel model, const json& run_config) {
    attach_model_unchecked(w, std::move(model), run_config);
    check_batch_fits_memory(w, /*training=*/false);
    if (w.data_kind == "synthetic" && w.eval_tokens.empty()) {  // a fixed held-out set (a huge batch is refused above)
        const json& t = run_config["train"];
        Generator eval_gen(t["seed"].get<uint64_t>() + 1000003);
        for (int64_t i = 0; i < t["eval_batches"].get<int64_t>(); ++i)
            w.eval_tokens.push_back(w.task.sample(eval_gen, w.batch_size));
    }
}

namespace {
void attach_model_unchecked(Workload& w, models::AnyModel model, const json& run_config) {
    w.model = model;
    const json* train = run_config.is_object() && run_config.contains("train") ? &run_config["train"] : nullptr;
    const json device = train && train->contains("device") ? (*train)["device"] : json("cpu");
    SSMTUNE_CHECK(device.is_string(), "train.device must be a string (cpu, cuda or cuda:N), got ", device.dump());
    w.device = resolve_device(device.get<std::string>(), "train.device (--device)");
    if (train && train->contains("gradient_checkpointing")) {  // (only training forwards checkpoint)
        const json& on = (*train)["gradient_checkpointing"];
        SSMTUNE_CHECK(on.is_boolean(), "train.gradient_checkpointing must be true or false, got ", on.dump());
        model.module().set_gradient_checkpointing(on.get<bool>());
    }
    Workload* wp = &w;
    if (w.data_kind == "fashion_mnist" && model.lm && !model.lm->reads_frames()) {
        attach_pixel_token_lm(w);
        return;
    }
    if (w.data_kind == "fashion_mnist") {
        const int64_t d_input = model.s4d ? model.s4d->config().d_input : model.lm->config().input_size;
        const int64_t d_output = model.s4d ? model.s4d->config().d_output : model.lm->config().vocab_size;
        SSMTUNE_CHECK(d_input == w.input_features && d_output >= w.num_classes, "the ", model.model_type, " model takes ",
                      d_input, " features per step and has ", d_output, " outputs, but the data has ", w.input_features,
                      " features per step and ", w.num_classes, " classes; fix: data.order (row: 28, pixel: 1)");
        attach_frame_classifier(w);
        return;
    }
    SSMTUNE_CHECK(!(model.lm && model.lm->reads_frames()), "data kind ", w.data_kind, " is tokens, but this ",
                  model.model_type, " model reads real-valued frames (input_size ", model.lm ? model.lm->config().input_size : 0,
                  "); fix: a token model (no input_size), or data kind fashion_mnist");
    SSMTUNE_CHECK(model.lm, "data kind ", w.data_kind, " (tokens) needs a language model (mamba or longhorn), but the "
                  "model is an S4D classifier; fix: use data kind fashion_mnist with it");
    SSMTUNE_CHECK(model.lm->config().vocab_size >= w.data_vocab, "the data needs a vocabulary of ", w.data_vocab,
                  " tokens but the model has ", model.lm->config().vocab_size, "; fix: a model with vocab_size >= ",
                  w.data_vocab);
    w.train_loss = [wp](double& units) {
        data::TokenBatch b = wp->data_kind == "synthetic" ? wp->task.sample(wp->data_gen, wp->batch_size)
                                                          : wp->text.sample(wp->data_gen, wp->batch_size, wp->seq_len);
        units = double(b.input_ids.numel());
        return lm_token_loss(*wp->model.lm, b, wp->device);
    };
    w.evaluate = [wp]() {
        autograd::NoGradGuard no_grad;
        double loss = 0, acc = 0, n = 0;
        int64_t bytes = 0;  // (text) what the evaluated targets decode to
        for (const auto& b : wp->eval_tokens) {
            Tensor logits;
            int64_t count = 0;
            for (int64_t v : b.targets.to_vector<int64_t>()) count += v != -100;
            loss += lm_token_loss(*wp->model.lm, b, wp->device, &logits).item() * double(count);
            acc += data::target_accuracy(logits, b.targets) * double(count);
            n += double(count);
            if (wp->data_kind == "text") bytes += wp->text.target_bytes(b);
        }
        std::map<std::string, double> m{{"loss", loss / n}, {"perplexity", std::exp(loss / n)}, {"accuracy", acc / n}};
        if (wp->data_kind == "text") m["bits_per_byte"] = data::bits_per_byte(loss / n, int64_t(n), bytes);
        return m;
    };
}

}  // namespace

}  // namespace ssmtune::tools
