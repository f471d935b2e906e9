// `ssmtune grads --model DIR --batch FILE --out FILE [--dtype f32|f64] [--adapter DIR[+DIR...]]`: one forward and
// backward pass of a model on a batch, written as safetensors: `loss` (scalar), `logits`, and the gradient of every
// parameter under the parameter's own name — or, with --adapter, of every trainable adapter tensor under the name it
// has in adapter_model.safetensors (the base is frozen, as in fine-tuning); with "A+B" (LoRA adapters active together)
// each name is preceded by the adapter's position: "1/base_model.model...", "2/...". `--per-sample A,__base__,B`
// gives each sample of the batch its own LoRA adapter directory (or the base model), named by first appearance. Language models take `input_ids` ([B, L], I64 or I32) and use HF's mean
// next-token loss over the B·(L−1) shifted positions; the S4D classifier takes `inputs` (F32 [B, L, d_input])
// and `labels` (I64 [B]), and so do the Mamba / Longhorn frame models (inputs [B, L, input_size], the logits at
// the last frame, as training computes them). Evaluation mode (no dropout). `--dtype f64` runs everything in float64.
// Bad input is one `error:` line and exit 1, and no output file is written.
#include <algorithm>
#include <cstdio>
#include <memory>

#include "autograd/node.h"
#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "ops/ops.h"
#include "peft/peft.h"
#include "tools/adapter_group.h"
#include "tools/commands.h"

namespace ssmtune::tools {

namespace {

Tensor batch_tensor(const TensorMap& batch, const std::string& name, const std::string& path) {
    auto it = batch.find(name);
    if (it == batch.end()) {
        std::string have;
        for (auto& [n, t] : batch) have += " " + n;
        SSMTUNE_FAIL(path, ": no tensor \"", name, "\" (the file holds:", have.empty() ? " nothing" : have, ")");
    }
    return it->second;
}

// Checks token ids are integers in [0, vocab) and names the first bad one.
void check_token_ids(const Tensor& ids, int64_t vocab, const std::string& path) {
    SSMTUNE_CHECK(ids.dtype() == DType::I64 || ids.dtype() == DType::I32, path, ": input_ids must be I64 or I32, got ",
                  ids.describe());
    SSMTUNE_CHECK(ids.dim() == 2 && ids.size(0) > 0 && ids.size(1) >= 2, path,
                  ": input_ids must be [B, L] with B >= 1 and L >= 2, got ", ids.describe());
    const std::vector<int64_t> v = ids.to_vector<int64_t>();
    for (size_t i = 0; i < v.size(); ++i)
        SSMTUNE_CHECK(v[i] >= 0 && v[i] < vocab, path, ": token id ", v[i], " at position [", int64_t(i) / ids.size(1),
                      ", ", int64_t(i) % ids.size(1), "] is outside the model's vocabulary of ", vocab);
}

}  // namespace

int run_grads(int argc, char** argv) {
    Flags flags(argc, argv, {{"model", ""}, {"batch", ""}, {"out", ""}, {"dtype", "f32"}, {"adapter", ""}, {"per-sample", ""}},
                "grads");
    if (flags.help()) {
        std::printf("usage: ssmtune grads --model DIR --batch FILE --out FILE [--dtype f32|f64] [--adapter DIR]\n"
                    "Runs one forward + backward pass and writes loss, logits and every parameter gradient.\n"
                    "  --model DIR   config.json + model.safetensors (mamba, longhorn or s4d)\n"
                    "  --batch FILE  safetensors: input_ids [B, L] (LMs) or inputs [B, L, F] + labels [B] (s4d, frame models)\n"
                    "  --out FILE    safetensors file to write\n"
                    "  --dtype       f32 (default) or f64 (whole computation in float64)\n"
                    "  --adapter DIR a PEFT adapter (adapter_config.json + adapter_model.safetensors): the base is\n"
                    "                frozen and the output holds the gradients of the adapter's tensors instead;\n"
                    "                A+B: LoRA adapters active together, names prefixed \"1/\", \"2/\", ...\n"
                    "  --per-sample A,__base__,B  one LoRA adapter directory (or the base) per sample of the batch,\n"
                    "                gradients prefixed \"1/\", \"2/\" in order of first appearance\n");
        return 0;
    }
    for (const char* required : {"model", "batch", "out"})
        if (!flags.is_set(required)) throw UsageError(std::string("grads: --") + required + " is required");
    const std::string dtype_flag = flags.str("dtype");
    if (dtype_flag != "f32" && dtype_flag != "f64") throw UsageError("grads: --dtype must be f32 or f64");
    const DType dtype = dtype_flag == "f64" ? DType::F64 : DType::F32;

    models::AnyModel model = models::load_model(flags.str("model"));
    const std::string batch_path = flags.str("batch");
    const TensorMap batch = load_safetensors(batch_path);
    models::Module& module = model.module();
    module.eval();
    module.to(dtype);
    if (flags.is_set("adapter") && flags.is_set("per-sample"))
        throw UsageError("grads: give --adapter or --per-sample, not both");
    std::unique_ptr<AdapterGroup> adapter;
    if (flags.is_set("adapter")) adapter = std::make_unique<AdapterGroup>(module, flags.str("adapter"));
    if (flags.is_set("per-sample")) {  // the distinct directories, loaded together, then one per sample
        std::vector<std::string> per_sample, distinct;
        for (const std::string& d : flags.list("per-sample")) {
            if (d.empty()) throw UsageError("grads: --per-sample has an empty entry");
            per_sample.push_back(d);
            if (d != peft::AdapterSet::kBaseAdapter && std::find(distinct.begin(), distinct.end(), d) == distinct.end())
                distinct.push_back(d);
        }
        if (distinct.empty()) throw UsageError("grads: --per-sample names no adapter directory");
        // one entry per sample, said in the flag's terms (found by fuzzing: set_batch_adapters' message named its API)
        const std::string key = batch.count("input_ids") ? "input_ids" : "inputs";
        if (batch.count(key) && batch.at(key).dim() >= 1 && batch.at(key).size(0) != int64_t(per_sample.size()))
            throw UsageError("grads: --per-sample names " + std::to_string(per_sample.size()) + " entries but the "
                             "batch holds " + std::to_string(batch.at(key).size(0)) + " samples; fix: one entry per "
                             "sample, an adapter directory or " + peft::AdapterSet::kBaseAdapter);
        adapter = std::make_unique<AdapterGroup>(module, distinct);
        adapter->set_per_sample(per_sample);
    }

    Tensor loss, logits;
    if (model.lm && !model.lm->reads_frames()) {
        Tensor ids = batch_tensor(batch, "input_ids", batch_path);
        check_token_ids(ids, model.lm->config().vocab_size, batch_path);
        logits = model.lm->forward(ids);
        loss = models::LanguageModel::next_token_loss(logits, ids);
    } else {  // the S4D classifier and the Mamba / Longhorn frame models: frames in, one label per sequence
        Tensor inputs = batch_tensor(batch, "inputs", batch_path), labels = batch_tensor(batch, "labels", batch_path);
        const int64_t features = model.lm ? model.lm->config().input_size : model.s4d->config().d_input;
        const int64_t classes = model.lm ? model.lm->config().vocab_size : model.s4d->config().d_output;
        SSMTUNE_CHECK(is_floating(inputs.dtype()) && inputs.dim() == 3 && inputs.size(2) == features, batch_path,
                      ": inputs must be float [B, L, ", model.lm ? "input_size" : "d_input", "=", features, "], got ",
                      inputs.describe());
        SSMTUNE_CHECK((labels.dtype() == DType::I64 || labels.dtype() == DType::I32) && labels.dim() == 1 &&
                          labels.size(0) == inputs.size(0),
                      batch_path, ": labels must be I64 [B=", inputs.size(0), "], got ", labels.describe());
        for (int64_t y : labels.to_vector<int64_t>())
            SSMTUNE_CHECK(y >= 0 && y < classes, batch_path, ": label ", y, " outside [0, ", classes, ")");
        logits = model.lm ? model.lm->classify_frames(inputs.to(dtype)) : model.s4d->forward(inputs.to(dtype));
        loss = ops::cross_entropy(logits, labels);
    }
    loss.backward();

    TensorMap out;
    out["loss"] = loss.detach();
    out["logits"] = logits.detach();
    auto params = adapter ? adapter->named_tensors() : module.named_parameters();
    for (auto& [name, p] : params) {
        Tensor g = p.grad();
        out[name] = g.defined() ? g : Tensor::zeros(p.shape(), p.dtype());
    }
    save_safetensors(flags.str("out"), out);
    std::printf("loss %.8g; wrote %zu tensors to %s\n", loss.item(), out.size(), flags.str("out").c_str());
    return 0;
}

}  // namespace ssmtune::tools
