// Shared training-command pieces (see train_common.h).
#include "tools/train_common.h"

#include <filesystem>

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
    h.rngs = {&w.data_gen};
    if (w.model.s4d) h.rngs.push_back(&w.model.s4d->dropout_generator());
    h.units_name = w.units_name;
    return h;
}

FinetuneOutcome finetune_model(json rc, bool resume, bool quiet) {
    FinetuneOutcome out;
    auto w = load_workload_data(rc);
    models::AnyModel model = models::load_model(rc["base_model"].get<std::string>());
    attach_model(*w, model, rc);
    model.module().to(w->device);
    model.module().eval();
    out.before = w->evaluate();
    peft::Config config = peft::Config::from_json(rc["peft"], "peft");
    if (config.peft_type() == "SDLORA" && config.json["dimensions"].is_null()) {
        // SDLoRA's first phase (notes §2.1): train a warm-up adapter for warmup_steps at the run's lr, score the
        // SSM dimensions by how far they moved, keep the top ones; the base is left bit-identical.
        const int64_t steps = config.json["warmup_steps"];
        if (!quiet) std::printf("SDLoRA warm-up: %lld steps to select dimensions\n", (long long)steps);
        config = peft::sdlora_select(model.module(), config, [&](peft::Adapter& warm) {
            warm.to(w->device);  // the warm-up tensors where the model is
            autograd::AdamW opt(warm.parameters(), autograd::AdamW::Options().lr(rc["train"]["lr"].get<double>()));
            model.module().train();
            for (int64_t i = 0; i < steps; ++i) {
                double units = 0;
                Tensor loss = w->train_loss(units);
                loss.backward();
                opt.step();
                opt.zero_grad();
            }
        });
    }
    peft::Adapter adapter = peft::apply(model.module(), config);
    adapter.to(w->device);  // the method's tensors are made on the host, from the same seed on every device
    rc["peft"] = config.json;
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
    model.module().eval();
    out.after = w->evaluate();
    out.seconds = r.seconds;
    out.interrupted = r.interrupted;
    plot_run(out_dir);
    return out;
}

}  // namespace ssmtune::tools
