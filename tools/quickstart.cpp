// `ssmtune quickstart`: the main job on its built-in default, with no data to download. It
//   1. trains a small Mamba LM on selective copying (Mamba paper §4.1.1: copy the marked data tokens in order),
//   2. moves to a related task — the same inputs, but every copied token shifted by +3 (mod the 8 data tokens) —
//      and measures the base model there (untuned),
//   3. fine-tunes it to the new task with state-offset tuning (h′, ~0.1 % of... see the table) and with LoRA on
//      the projections, through the same code paths as `ssmtune train` / `ssmtune finetune`,
//   4. prints a table (method, trainable params, %, accuracy before → after, time), the adapter paths, and writes
//      a loss-curve plot of the three runs (OUT/loss.svg).
// Flags scale it (--base-steps, --finetune-steps) and move it (--out). Exit status 1 if fine-tuning does not beat
// the untuned model, so CI notices when the main job stops working.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "models/checkpoint.h"
#include "tools/commands.h"
#include "tools/run_config.h"
#include "tools/svg_plot.h"
#include "tools/train_common.h"

namespace ssmtune::tools {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::vector<std::pair<double, double>> logged_train_loss(const std::string& run_dir) {
    std::vector<std::pair<double, double>> pts;
    std::ifstream in(fs::path(run_dir) / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
        json j = json::parse(line, nullptr, false);
        if (j.is_object() && !j.contains("split") && j.contains("loss")) pts.emplace_back(j["step"], j["loss"]);
    }
    return pts;
}

}  // namespace

int run_quickstart(int argc, char** argv) {
    Flags flags(argc, argv, {{"out", "runs/quickstart"}, {"base-steps", "500"}, {"finetune-steps", "300"},
                             {"seed", "0"}, {"quiet", Flags::kSwitch}}, "quickstart");
    if (flags.help()) {
        std::printf("usage: ssmtune quickstart [--out DIR] [--base-steps 500] [--finetune-steps 300] [--seed 0]\n"
                    "Trains a small Mamba on selective copying, then fine-tunes it to a shifted-output variant with\n"
                    "state-offset tuning and with LoRA, and prints the comparison table.\n");
        return 0;
    }
    const std::string out = flags.str("out");
    const bool quiet = flags.is_set("quiet");
    const auto t0 = std::chrono::steady_clock::now();
    json task = {{"name", "selective_copying"}, {"num_tokens", 8}, {"num_memorize", 4}, {"span", 24}};
    json rc = resolve_run_config({{"data", {{"kind", "synthetic"}, {"task", task}}},
                                  {"train", {{"steps", flags.integer("base-steps")}, {"batch_size", 32}, {"lr", 3e-3},
                                             {"eval_every", 100}, {"log_every", 50}, {"seed", flags.seed()},
                                             {"eval_batches", 8}}},
                                  {"out", (fs::path(out) / "base").string()}},
                                 "quickstart");

    // 1. the base model
    auto w = load_workload_data(rc);
    json model_cfg = default_model_config(*w);
    rc["model"] = model_cfg;
    models::AnyModel model = models::create_model(model_cfg, rc["train"]["seed"].get<uint64_t>(), "quickstart");
    attach_model(*w, model, rc);
    set_aside_earlier_run(rc["out"]);  // a second quickstart into the same --out
    fs::create_directories(rc["out"].get<std::string>());
    models::write_json_file((fs::path(rc["out"].get<std::string>()) / "run_config.json").string(), rc);
    if (!quiet) std::printf("== 1/3 training the base Mamba (%lld parameters) on selective copying\n",
                            (long long)model.module().num_parameters());
    TrainHooks hooks = model_hooks(*w, model.module().named_parameters(),
                                   [model](const std::string& dir) { models::save_model(dir, model); },
                                   [model](const std::string& dir) {
                                       models::ModelWeights(dir).load_into(model.module());
                                   });
    TrainResult base = run_training(loop_options(rc, false, quiet), hooks);
    const std::string base_dir = (fs::path(out) / "base" / "model").string();
    models::save_model(base_dir, model);
    if (!quiet) std::printf("base model: accuracy %.3f on its own task -> %s\n", base.last_eval["accuracy"], base_dir.c_str());

    // 2–3. the related task, fine-tuned two ways
    json target_task = task;
    target_task["token_shift"] = 3;
    struct Row { std::string name; FinetuneOutcome r; };
    std::vector<Row> rows;
    const std::vector<std::pair<std::string, json>> methods = {
        {"state-offset (h)", {{"peft_type", "STATE_OFFSET"}, {"variant", "h"}}},
        {"LoRA r=4 (in/out_proj)", {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"target_modules", {"in_proj", "out_proj"}}}},
    };
    for (size_t i = 0; i < methods.size(); ++i) {
        json frc = rc;
        frc["model"] = nullptr;
        frc["base_model"] = base_dir;
        frc["peft"] = methods[i].second;
        frc["data"]["task"] = target_task;
        frc["train"]["steps"] = flags.integer("finetune-steps");
        frc["train"]["lr"] = methods[i].second["peft_type"] == "LORA" ? 3e-3 : 1e-2;
        frc["out"] = (fs::path(out) / (i == 0 ? "state_offset" : "lora")).string();
        if (!quiet) std::printf("== %zu/3 fine-tuning to the shifted task with %s\n", i + 2, methods[i].first.c_str());
        rows.push_back({methods[i].first, finetune_model(frc, false, quiet)});
    }

    // 4. the table and the plot
    std::vector<PlotSeries> curves = {{"base (original task)", logged_train_loss((fs::path(out) / "base").string())}};
    std::printf("\n%-26s %12s %9s %28s %8s\n", "method (shifted task)", "trainable", "%", "accuracy before -> after", "time");
    const double untuned = rows.front().r.before.at("accuracy");
    std::printf("%-26s %12s %9s %28s %8s\n", "untuned base", "0", "0.0000", (std::to_string(untuned).substr(0, 5)).c_str(), "-");
    bool better = true;
    for (const auto& row : rows) {
        char acc[64], pct[32], secs[32];
        std::snprintf(acc, sizeof acc, "%.3f -> %.3f", row.r.before.at("accuracy"), row.r.after.at("accuracy"));
        std::snprintf(pct, sizeof pct, "%.4f", 100.0 * double(row.r.trainable) / double(row.r.total));
        std::snprintf(secs, sizeof secs, "%.1fs", row.r.seconds);
        std::printf("%-26s %12lld %9s %28s %8s\n", row.name.c_str(), (long long)row.r.trainable, pct, acc, secs);
        better = better && row.r.after.at("accuracy") > untuned + 0.1;
        curves.push_back({row.name, logged_train_loss(fs::path(row.r.adapter_dir).parent_path().string())});
    }
    const std::string plot = (fs::path(out) / "loss.svg").string();
    write_svg_plot(plot, curves, {"quickstart: training loss", "step", "loss", true});
    std::printf("\nadapters: %s, %s\nplot: %s\ntotal time %.1fs\n", rows[0].r.adapter_dir.c_str(),
                rows[1].r.adapter_dir.c_str(), plot.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!better) {
        std::fprintf(stderr, "error: fine-tuning did not clearly beat the untuned model (accuracy %.3f)\n", untuned);
        return 1;
    }
    return 0;
}

}  // namespace ssmtune::tools
