// Shared training-command pieces (see train_common.h).
#include "tools/train_common.h"

#include <filesystem>
#include <memory>

#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "peft/peft.h"
#include "peft/sdlora.h"
#include "tools/commands.h"

namespace ssmtune::tools {

namespace fs = std::filesystem;
using json = nlohmann::json;

TrainHooks model_hooks(Workload& w, std::vector<std::pair<std::string, Tensor>> params,
                       std::function<void(const std::string&)> save_weights,
                       std::function<void(const std::string&)> load_weights) {
    TrainHooks h;
    h.params = std::move(params);
    Workload* wp = &w;
    h.loss = [wp](int64_t, double& units) {
        wp->model.module().train();
        return wp->train_loss(units);
    };
    h.evaluate = [wp]() {
        wp->model.module().eval();
        auto m = wp->evaluate();
        wp->model.module().train();
        return m;
    };
    h.save_weights = std::move(save_weights);
    h.load_weights = std::move(load_weights);
    h.rngs = workload_generators(w);
    h.units_name = w.units_name;
    return h;
}

std::vector<Generator*> workload_generators(Workload& w) {
    std::vector<Generator*> out = {&w.data_gen};
    if (w.model.s4d) out.push_back(&w.model.s4d->dropout_generator());
    for (Generator* g : models::training_generators(w.model.module())) out.push_back(g);  // PEFT layers' dropout
    return out;
}

namespace {

// SDLoRA's first phase (notes §2.1, §2.2): trains the warm-up adapter `warm` for the config's warmup_steps on the
// run's batches, at warmup_lr when set, else the run's lr. Language models (mamba-peft, whose warm-up is the first
// num_warmup_it + 1 steps of the run itself, stopped and restarted): the run's optimizer — its AdamW settings and
// parameter groups, its schedule over the run's steps, clipping and gradient accumulation. S4D (ssm-peft's S4
// run_s4.py warm-up): torch.optim.AdamW with its defaults (weight decay 0.01) at a constant lr, unclipped. Either
// way the data and dropout generators are put back afterwards, so the run proper draws the batches it would have
// drawn without the warm-up (mamba-peft's second run starts again from the same seed).
void sdlora_warmup(Workload& w, const json& rc, const peft::Config& config, peft::Adapter& warm) {
    const int64_t steps = config.json["warmup_steps"];
    TrainLoopOptions run = loop_options(rc, /*resume=*/false, /*quiet=*/true);
    if (!config.json["warmup_lr"].is_null()) run.lr = config.json["warmup_lr"].get<double>();
    if (w.model.s4d) {  // torch.optim.AdamW(params, lr): one group, weight decay 0.01, constant, unclipped
        TrainLoopOptions plain;
        plain.steps = steps;
        plain.lr = run.lr;
        plain.weight_decay = 0.01;
        plain.schedule = "constant";
        plain.grad_clip = 0;
        plain.quiet = true;
        run = plain;
    }
    const std::vector<Generator*> gens = workload_generators(w);
    std::vector<std::pair<uint64_t, uint64_t>> saved;
    for (Generator* g : gens) saved.emplace_back(g->seed(), g->offset());
    warm.to(w.device);  // the warm-up tensors where the model is
    w.model.module().train();
    OptimizerSteps stepper(run, warm.named_parameters());
    auto loss = [&w](int64_t, double& units) { return w.train_loss(units); };
    auto stopped = [] {
        return std::string("Nothing was saved (SDLoRA's warm-up); fix: lower --lr, or set the SDLORA config's "
                           "\"warmup_lr\"");
    };
    for (int64_t i = 0; i < steps; ++i) stepper.step(loss, i, stopped);
    for (size_t i = 0; i < gens.size(); ++i) gens[i]->set_state(saved[i].first, saved[i].second);
    // what the scores are computed from, for whoever wants to see why these dimensions (and for the cross-check)
    TensorMap moved;
    for (auto& [name, t] : warm.named_parameters()) moved[name] = t.detach().to(Device::cpu());
    const fs::path out_dir = rc["out"].get<std::string>();
    fs::create_directories(out_dir);
    char lr[32];
    std::snprintf(lr, sizeof lr, "%.17g", run.lr);
    save_safetensors((out_dir / "sdlora_warmup.safetensors").string(), moved,
                     {{"warmup_steps", std::to_string(steps)}, {"lr", lr}});
}

}  // namespace

void read_text_with_adapter_tokenizer(json& rc, const std::string& model_dir,
                                      const std::vector<std::string>& adapter_dirs) {
    if (rc["data"]["kind"] != "text" || !rc["data"]["tokenizer"].is_null()) return;
    const std::string t = models::tokenizer_for(model_dir, adapter_dirs);
    if (!t.empty()) rc["data"]["tokenizer"] = t;
}

FinetuneOutcome finetune_model(json rc, bool resume, bool quiet) {
    FinetuneOutcome out;
    const std::string base_dir = rc["base_model"];
    // "adapter": go on training a saved adapter (HF's PeftModel.from_pretrained(..., is_trainable=True)): its config
    // and tensors are the start, its tokenizer reads the text (as eval reads it)
    const bool from_adapter = rc["adapter"].is_string();
    if (from_adapter) read_text_with_adapter_tokenizer(rc, base_dir, {rc["adapter"].get<std::string>()});
    auto w = load_workload_data(rc);
    models::AnyModel model = models::load_model(base_dir);
    attach_model(*w, model, rc);
    check_batch_fits_memory(*w, /*training=*/true);
    std::unique_ptr<peft::Adapter> start;
    if (!resume) set_aside_earlier_run(rc["out"]);  // (before SDLoRA's warm-up writes into OUT; after the inputs)
    if (from_adapter) {
        start = std::make_unique<peft::Adapter>(peft::load(model.module(), rc["adapter"].get<std::string>()));
        start->to(w->device);  // the model and the adapter's tensors
    } else {
        model.module().to(w->device);
    }
    model.module().eval();
    out.before = w->evaluate();  // the base model's metrics, or the saved adapter's
    peft::Config config = start ? start->config() : peft::Config::from_json(rc["peft"], "peft");
    if (config.peft_type() == "SDLORA" && config.json["dimensions"].is_null() && resume) {
        // a resumed run keeps the dimensions its first start selected (the warm-up is not run again) when its SDLORA
        // config is otherwise the same
        const fs::path saved = fs::path(rc["out"].get<std::string>()) / "run_config.json";
        if (fs::exists(saved)) {
            const json first = models::read_json_file(saved.string());
            if (first.contains("peft") && first["peft"].is_object() && first["peft"].contains("dimensions") &&
                !first["peft"]["dimensions"].is_null()) {
                json same = first["peft"];
                same["dimensions"] = nullptr;
                if (same == config.json) {
                    config = config.with({{"dimensions", first["peft"]["dimensions"]}});
                    if (!quiet) std::printf("SDLoRA: the dimensions the first start selected (%s)\n", saved.c_str());
                }
            }
        }
    }
    if (config.peft_type() == "SDLORA" && config.json["dimensions"].is_null()) {
        const int64_t warm_steps = config.json["warmup_steps"], run_steps = rc["train"]["steps"];
        if (!quiet) {
            std::printf("SDLoRA warm-up: %lld steps to select dimensions\n", (long long)warm_steps);
            if (warm_steps > run_steps && !w->model.s4d)
                std::printf("note: the warm-up is longer than the run (%lld steps); its last %lld steps keep the "
                            "schedule's final lr (set the SDLORA config's \"warmup_steps\" to change it)\n",
                            (long long)run_steps, (long long)(warm_steps - run_steps));
        }
        config = peft::sdlora_select(model.module(), config,
                                     [&](peft::Adapter& warm) { sdlora_warmup(*w, rc, config, warm); });
    }
    peft::Adapter adapter = start ? std::move(*start) : peft::apply(model.module(), config);
    adapter.to(w->device);  // the method's tensors are made on the host, from the same seed on every device
    // (from a saved adapter the run config names it and leaves "peft" null, so that it can be given again as --config;
    // its config is in OUT/adapter)
    rc["peft"] = from_adapter ? json(nullptr) : config.json;
    out.config = config.json;
    const std::string out_dir = rc["out"];
    fs::create_directories(out_dir);
    models::write_json_file((fs::path(out_dir) / "run_config.json").string(), rc);
    out.report = adapter.trainable_report();
    out.trainable = adapter.num_trainable();
    out.total = adapter.num_total();
    if (!quiet) std::printf("fine-tuning %s with %s: %s\n", rc["base_model"].get<std::string>().c_str(),
                            config.peft_type().c_str(), out.report.c_str());
    peft::Adapter* ap = &adapter;
    TrainHooks hooks = model_hooks(*w, adapter.named_parameters(), [ap](const std::string& dir) { ap->save(dir); },
                                   [ap](const std::string& dir) { ap->load_weights(dir); });
    TrainResult r = run_training(loop_options(rc, resume, quiet), hooks);
    out.adapter_dir = (fs::path(out_dir) / "adapter").string();
    adapter.save(out.adapter_dir);
    // eval, generate and merge read text with it (as HF's Trainer saves the tokenizer with its output), so an
    // adapter trained with --tokenizer X is not evaluated with the base's tokenizer
    models::install_tokenizer(w->tokenizer_path, out.adapter_dir);  // ("": none, and no earlier run's either)
    model.module().eval();
    out.after = w->evaluate();
    out.seconds = r.seconds;
    out.interrupted = r.interrupted;
    plot_run(out_dir);
    return out;
}

}  // namespace ssmtune::tools
