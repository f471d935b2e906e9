// `ssmtune experiment NAME`: the papers' findings at small scale on the CPU (issue: PEFT layer). Each experiment
// prints a table (method, trainable params, % of model, metric, time), writes results.csv and results.md (with a
// "claims" section computed from the numbers) into --out.
//   s4d-synthetic   SDLoRA's synthetic experiment (reference/peft-methods.md §2.2), scaled down: a frozen random
//                   4-layer S4D regresses the per-position outputs of a random 1-layer S4D target (N = 8) on fresh
//                   integer inputs each iteration; the metric is the best training MSE.
//   mamba-transfer  a small Mamba pre-trained on selective copying, adapted with every method to the same task
//                   with the copied tokens in reverse order; the metric is accuracy on the output positions.
// Method budgets are matched roughly (about 1 % of the model where the method allows; state-offset h and initial
// state have a fixed size E·N per layer). Learning rates: one per method family, the same in every run.
// Not here: hyperparameter sweeps (one fixed lr per method family), several seeds.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

#include "autograd/node.h"
#include "autograd/optim.h"
#include "models/checkpoint.h"
#include "ops/ops.h"
#include "peft/peft.h"
#include "peft/sdlora.h"
#include "tools/commands.h"
#include "tools/data/synthetic.h"

namespace ssmtune::tools {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct Row {
    std::string method;
    int64_t trainable = 0, total = 0;
    double before = 0, metric = 0, seconds = 0;
};

struct MethodSpec {
    std::string name;
    json config;  // null = frozen (no training)
    double lr;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Trains `adapter` with AdamW for `iters` steps of `loss`; returns the best (lowest) loss seen.
double train_adapter(peft::Adapter& adapter, double lr, int64_t iters, const std::function<Tensor()>& loss) {
    autograd::AdamW opt(adapter.parameters(), autograd::AdamW::Options().lr(lr).weight_decay(0.0));
    double best = INFINITY;
    for (int64_t i = 0; i < iters; ++i) {
        Tensor l = loss();
        best = std::min(best, l.item());
        l.backward();
        autograd::clip_grad_norm(adapter.parameters(), 1.0);
        opt.step();
        opt.zero_grad();
    }
    return best;
}

// SDLoRA's dimension selection: a warm-up of `steps` on the same loss, then the selected config.
peft::Config sdlora_warmed(models::Module& model, const json& cfg, double lr, int64_t steps, const std::function<Tensor()>& loss) {
    return peft::sdlora_select(model, peft::Config::from_json(cfg), [&](peft::Adapter& warm) { train_adapter(warm, lr, steps, loss); });
}

void write_results(const fs::path& out, const std::string& title, const std::string& metric_name, bool lower_better,
                   const std::vector<Row>& rows, const std::vector<std::string>& claims) {
    fs::create_directories(out);
    std::ofstream csv(out / "results.csv");
    csv << "method,trainable_params,percent,before," << metric_name << ",seconds\n";
    std::ofstream md(out / "results.md");
    md << "# " << title << "\n\n| method | trainable params | % of model | before | " << metric_name << " | time (s) |\n"
       << "|---|---:|---:|---:|---:|---:|\n";
    std::printf("\n%-34s %12s %9s %10s %12s %8s\n", "method", "trainable", "%", "before", metric_name.c_str(), "time");
    for (const auto& r : rows) {
        const double pct = r.total ? 100.0 * double(r.trainable) / double(r.total) : 0.0;
        std::printf("%-34s %12lld %9.4f %10.4f %12.4f %7.1fs\n", r.method.c_str(), (long long)r.trainable, pct, r.before,
                    r.metric, r.seconds);
        csv << '"' << r.method << "\"," << r.trainable << "," << pct << "," << r.before << "," << r.metric << ","
            << r.seconds << "\n";
        char line[256];
        std::snprintf(line, sizeof line, "| %s | %lld | %.4f | %.4f | %.4f | %.1f |\n", r.method.c_str(),
                      (long long)r.trainable, pct, r.before, r.metric, r.seconds);
        md << line;
    }
    md << "\n(" << metric_name << (lower_better ? ": lower is better" : ": higher is better") << ")\n\n## Claims\n\n";
    std::printf("\nclaims:\n");
    for (const auto& c : claims) {
        md << "- " << c << "\n";
        std::printf("  - %s\n", c.c_str());
    }
    std::printf("wrote %s and %s\n", (out / "results.csv").string().c_str(), (out / "results.md").string().c_str());
}

const Row* find(const std::vector<Row>& rows, const std::string& prefix) {
    for (const auto& r : rows)
        if (r.method.rfind(prefix, 0) == 0) return &r;
    return nullptr;
}

// "holds" / "does not hold" for `a` better than or equal to `b` (by the metric's direction), with both numbers.
std::string claim(const std::string& text, const std::vector<Row>& rows, const std::string& a, const std::string& b,
                  bool lower_better) {
    const Row *ra = find(rows, a), *rb = find(rows, b);
    if (!ra || !rb) return text + ": not measured";
    const bool holds = lower_better ? ra->metric <= rb->metric : ra->metric >= rb->metric;
    char buf[512];
    std::snprintf(buf, sizeof buf, "%s: %s (%s %.4f vs %s %.4f)", text.c_str(), holds ? "holds" : "does not hold",
                  ra->method.c_str(), ra->metric, rb->method.c_str(), rb->metric);
    return buf;
}

// ---------------------------------------------------------------- s4d-synthetic
int s4d_synthetic(const Flags& flags) {
    const int64_t iters = flags.integer("iters"), B = flags.integer("batch"), L = flags.integer("seq-len");
    const uint64_t seed = flags.seed();
    const fs::path out = flags.is_set("out") ? fs::path(flags.str("out")) : fs::path("experiments/s4d-synthetic");
    models::S4DConfig frozen_cfg;
    frozen_cfg.d_input = 4;
    frozen_cfg.d_output = 4;
    frozen_cfg.d_model = 64;
    frozen_cfg.d_state = 16;
    frozen_cfg.n_layers = 4;
    frozen_cfg.dropout = 0.0;
    models::S4DConfig target_cfg = frozen_cfg;
    target_cfg.n_layers = 1;
    target_cfg.d_state = 8;
    target_cfg.init = "inv";
    models::S4DClassifier target(target_cfg, seed + 101);
    target.eval();
    // fresh integer inputs X ∈ {0..9} every iteration (the same sequence of batches for every method)
    auto batch = [&](Generator& g) {
        Tensor u = Tensor::uniform({B, L, frozen_cfg.d_input}, g, 0.0, 10.0);
        std::vector<float> v = u.to_vector<float>();
        for (float& x : v) x = std::floor(x);
        return Tensor::from_vector<float>(v, u.shape());
    };
    const std::vector<MethodSpec> methods = {
        {"Frozen", nullptr, 0},
        {"FULL", {{"peft_type", "FULL"}}, 5e-3},
        {"LoRA (linear layers, r=2)", {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 2}}, 5e-3},
        {"LoRA (output_linear only, r=4)", {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 4}, {"target_modules", {"output_linear.0"}}}, 5e-3},
        {"SDLoRA", {{"peft_type", "SDLORA"}, {"r", 2}, {"lora_alpha", 2}, {"channel_ratio", 0.25}, {"state_ratio", 0.5},
                    {"seq_len", L}}, 5e-3},
        {"state-offset h", {{"peft_type", "STATE_OFFSET"}, {"variant", "h"}}, 5e-3},
        {"state-offset y", {{"peft_type", "STATE_OFFSET"}, {"variant", "y"}}, 5e-3},
        {"initial state", {{"peft_type", "INITIAL_STATE"}}, 5e-3},
        {"BitFit", {{"peft_type", "BITFIT"}}, 5e-3},
        {"parallel adapter (r=2)", {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 2}}, 5e-3},
        {"SURM circulant (linear layers)", {{"peft_type", "SURM"}, {"target_modules", {"encoder", "output_linear.0", "decoder"}}}, 5e-3},
    };
    std::vector<Row> rows;
    for (const auto& m : methods) {
        models::S4DClassifier model(frozen_cfg, seed);
        model.eval();
        Generator data(seed + 7);
        auto loss = [&]() {
            Tensor x = batch(data);
            Tensor y;
            {
                autograd::NoGradGuard ng;
                y = target.forward_sequence(x);
            }
            Tensor d = ops::sub(model.forward_sequence(x), y);
            return ops::mean(ops::mul(d, d));
        };
        const auto t0 = std::chrono::steady_clock::now();
        Row r;
        r.method = m.name;
        r.total = model.num_parameters();
        {
            autograd::NoGradGuard ng;
            Generator probe(seed + 7);
            Tensor x = batch(probe), d = ops::sub(model.forward_sequence(x), target.forward_sequence(x));
            r.before = ops::mean(ops::mul(d, d)).item();
        }
        if (m.config.is_null()) {
            r.metric = r.before;
        } else {
            json cfg = m.config;
            peft::Config pc = peft::Config::from_json(cfg);
            if (cfg["peft_type"] == "SDLORA") pc = sdlora_warmed(model, cfg, 1e-2, 20, loss);
            peft::Adapter a = peft::apply(model, pc);
            r.trainable = a.num_trainable();
            r.total = a.num_total();
            r.metric = train_adapter(a, m.lr, iters, loss);
        }
        r.seconds = seconds_since(t0);
        std::printf("%-34s best MSE %.4f (%.1fs)\n", r.method.c_str(), r.metric, r.seconds);
        std::fflush(stdout);
        rows.push_back(r);
    }
    std::vector<std::string> claims = {
        claim("SDLoRA >= LoRA on the linear layers at a similar budget (Galim et al.)", rows, "SDLoRA", "LoRA (linear layers", true),
        claim("state-offset h >= initial state (Kang et al.)", rows, "state-offset h", "initial state", true),
        claim("SURM (circulant) vs LoRA at a similar budget (Sehanobish et al.: SURM >= LoRA)", rows, "SURM", "LoRA (linear layers", true),
        claim("full fine-tuning is the upper reference", rows, "FULL", "LoRA (linear layers", true),
    };
    write_results(out, "S4D synthetic (frozen 4-layer S4D -> random 1-layer target), best training MSE", "best_mse", true,
                  rows, claims);
    return 0;
}

// ---------------------------------------------------------------- mamba-transfer
int mamba_transfer(const Flags& flags) {
    const int64_t base_steps = flags.integer("base-steps"), iters = flags.integer("iters");
    const uint64_t seed = flags.seed();
    const fs::path out = flags.is_set("out") ? fs::path(flags.str("out")) : fs::path("experiments/mamba-transfer");
    data::SyntheticTask task;
    task.num_tokens = 8;
    task.num_memorize = 4;
    task.span = 24;
    data::SyntheticTask target_task = task;
    target_task.reverse = true;
    const json model_cfg = {{"model_type", "mamba"}, {"vocab_size", task.vocab_size()}, {"hidden_size", 64},
                            {"num_hidden_layers", 2}, {"state_size", 16}, {"intermediate_size", 128},
                            {"conv_kernel", 4}, {"time_step_rank", 4}};
    auto lm_loss = [](models::LanguageModel& lm, const data::TokenBatch& b) {
        Tensor logits = lm.forward(b.input_ids);
        const int64_t V = logits.size(-1), n = b.input_ids.numel();
        return ops::cross_entropy(logits.reshape({n, V}), b.targets.reshape({n}));
    };
    // 1. pre-train the base on the original task
    models::AnyModel base = models::create_model(model_cfg, seed, "experiment");
    {
        const auto t0 = std::chrono::steady_clock::now();
        Generator g(seed + 3);
        autograd::AdamW opt(base.module().parameters(), autograd::AdamW::Options().lr(3e-3).weight_decay(0.0));
        autograd::LRSchedule sched = autograd::LRSchedule::cosine(std::min<int64_t>(20, base_steps), base_steps, 0.1);
        for (int64_t i = 0; i < base_steps; ++i) {
            Tensor l = lm_loss(*base.lm, task.sample(g, 32));
            l.backward();
            autograd::clip_grad_norm(base.module().parameters(), 1.0);
            opt.set_lr_factor(sched.factor(opt.step_count()));
            opt.step();
            opt.zero_grad();
        }
        std::printf("base Mamba (%lld params) pre-trained on selective copying in %.1fs\n",
                    (long long)base.module().num_parameters(), seconds_since(t0));
    }
    const std::string base_dir = (out / "base_model").string();
    models::save_model(base_dir, base);
    Generator eval_gen(seed + 99);
    std::vector<data::TokenBatch> eval_set, eval_orig;
    for (int i = 0; i < 8; ++i) eval_set.push_back(target_task.sample(eval_gen, 32));
    for (int i = 0; i < 8; ++i) eval_orig.push_back(task.sample(eval_gen, 32));
    auto accuracy = [&](models::LanguageModel& lm, const std::vector<data::TokenBatch>& set) {
        autograd::NoGradGuard ng;
        double acc = 0;
        for (const auto& b : set) acc += data::target_accuracy(lm.forward(b.input_ids), b.targets);
        return acc / double(set.size());
    };
    std::printf("base accuracy: original task %.4f, reversed task %.4f\n", accuracy(*base.lm, eval_orig),
                accuracy(*base.lm, eval_set));
    const std::vector<MethodSpec> methods = {
        {"FULL", {{"peft_type", "FULL"}}, 1e-3},
        {"LoRA (in/out_proj, r=1)", {{"peft_type", "LORA"}, {"r", 1}, {"lora_alpha", 2}, {"target_modules", {"in_proj", "out_proj"}}}, 3e-3},
        {"LoRA on SSM (x_proj/dt_proj, r=2)", {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"target_modules", {"x_proj", "dt_proj"}}}, 3e-3},
        {"PiSSA (in/out_proj, r=1)", {{"peft_type", "LORA"}, {"r", 1}, {"lora_alpha", 2}, {"init_lora_weights", "pissa"}, {"target_modules", {"in_proj", "out_proj"}}}, 3e-3},
        {"OLoRA (in/out_proj, r=1)", {{"peft_type", "LORA"}, {"r", 1}, {"lora_alpha", 2}, {"init_lora_weights", "olora"}, {"target_modules", {"in_proj", "out_proj"}}}, 3e-3},
        {"SDLoRA", {{"peft_type", "SDLORA"}, {"r", 1}, {"lora_alpha", 2}, {"channel_ratio", 0.05}, {"state_ratio", 0.25}, {"warmup_steps", 30}}, 3e-3},
        {"state-offset h", {{"peft_type", "STATE_OFFSET"}, {"variant", "h"}}, 1e-2},
        {"state-offset y", {{"peft_type", "STATE_OFFSET"}, {"variant", "y"}}, 1e-2},
        {"initial state", {{"peft_type", "INITIAL_STATE"}}, 1e-2},
        {"additional scan (k=4)", {{"peft_type", "ADDITIONAL_SCAN"}, {"d_state", 4}}, 4e-3},
        {"partial (A_log, D)", {{"peft_type", "PARTIAL"}, {"param_names", {"A_log", "D"}}}, 1e-2},
        {"prompt (16 tokens)", {{"peft_type", "PROMPT"}, {"num_virtual_tokens", 16}}, 1e-2},
        {"prefix (4 per layer)", {{"peft_type", "PREFIX"}, {"num_virtual_tokens", 4}}, 1e-2},
        {"BitFit", {{"peft_type", "BITFIT"}}, 1e-2},
        {"parallel adapter (r=4)", {{"peft_type", "PARALLEL_ADAPTER"}, {"r", 4}}, 3e-3},
        {"SURM circulant (in/out_proj)", {{"peft_type", "SURM"}}, 1e-2},
    };
    std::vector<Row> rows;
    for (const auto& m : methods) {
        models::AnyModel model = models::load_model(base_dir);
        Generator g(seed + 5);
        auto loss = [&]() { return lm_loss(*model.lm, target_task.sample(g, 32)); };
        const auto t0 = std::chrono::steady_clock::now();
        peft::Config pc = peft::Config::from_json(m.config);
        if (m.config["peft_type"] == "SDLORA") pc = sdlora_warmed(model.module(), m.config, m.lr, 30, loss);
        Row r;
        r.method = m.name;
        r.before = accuracy(*model.lm, eval_set);
        peft::Adapter a = peft::apply(model.module(), pc);
        r.trainable = a.num_trainable();
        r.total = a.num_total();
        model.module().train();
        train_adapter(a, m.lr, iters, loss);
        model.module().eval();
        r.metric = accuracy(*model.lm, eval_set);
        r.seconds = seconds_since(t0);
        std::printf("%-34s accuracy %.4f -> %.4f (%.1fs)\n", r.method.c_str(), r.before, r.metric, r.seconds);
        std::fflush(stdout);
        rows.push_back(r);
    }
    const Row* prompt = find(rows, "prompt");
    const Row* prefix = find(rows, "prefix");
    const Row* soh = find(rows, "state-offset h");
    const Row* init = find(rows, "initial state");
    std::vector<std::string> claims;
    if (prompt && prefix && soh && init) {
        const double pp = std::max(prompt->metric, prefix->metric), st = std::max(soh->metric, init->metric);
        char buf[256];
        std::snprintf(buf, sizeof buf, "prompt/prefix weaker than state-based methods (Kang et al.): %s (best of prompt/prefix %.4f vs best of state-offset h/initial state %.4f)",
                      pp < st ? "holds" : "does not hold", pp, st);
        claims.push_back(buf);
    }
    claims.push_back(claim("state-offset h >= initial state (Kang et al.)", rows, "state-offset h", "initial state", false));
    claims.push_back(claim("state-offset h >= additional scan (Kang et al.)", rows, "state-offset h", "additional scan", false));
    claims.push_back(claim("LoRA on linear projections better than LoRA on SSM modules (Galim et al.)", rows, "LoRA (in/out_proj", "LoRA on SSM", false));
    claims.push_back(claim("SDLoRA >= LoRA at a similar budget (Galim et al.)", rows, "SDLoRA", "LoRA (in/out_proj", false));
    claims.push_back(claim("SURM (circulant) vs LoRA at a similar budget (Sehanobish et al.: SURM >= LoRA)", rows, "SURM", "LoRA (in/out_proj", false));
    claims.push_back(claim("PiSSA >= LoRA at the same rank, steps and learning rate (Meng et al.: PiSSA converges faster)", rows, "PiSSA", "LoRA (in/out_proj", false));
    write_results(out, "Mamba transfer: selective copying -> reversed order, accuracy on the output positions", "accuracy",
                  false, rows, claims);
    return 0;
}

}  // namespace

int run_experiment(int argc, char** argv) {
    if (argc < 1 || std::string(argv[0]) == "--help" || std::string(argv[0]) == "-h") {
        std::printf("usage: ssmtune experiment s4d-synthetic [--iters 150] [--batch 32] [--seq-len 64] [--seed 0] [--out DIR]\n"
                    "       ssmtune experiment mamba-transfer [--base-steps 300] [--iters 120] [--seed 0] [--out DIR]\n"
                    "Reproduces the PEFT papers' findings at small scale; prints the table and writes results.csv/.md.\n");
        return 0;
    }
    const std::string name = argv[0];
    if (name == "s4d-synthetic") {
        Flags flags(argc - 1, argv + 1, {{"iters", "150"}, {"batch", "32"}, {"seq-len", "64"}, {"seed", "0"}, {"out", ""}},
                    "experiment s4d-synthetic");
        if (flags.integer("iters") < 1 || flags.integer("batch") < 1 || flags.integer("seq-len") < 2)
            throw UsageError("experiment: --iters, --batch >= 1 and --seq-len >= 2 are required");
        return s4d_synthetic(flags);
    }
    if (name == "mamba-transfer") {
        Flags flags(argc - 1, argv + 1, {{"base-steps", "300"}, {"iters", "120"}, {"seed", "0"}, {"out", ""}},
                    "experiment mamba-transfer");
        if (flags.integer("iters") < 1 || flags.integer("base-steps") < 1)
            throw UsageError("experiment: --iters and --base-steps must be >= 1");
        return mamba_transfer(flags);
    }
    throw UsageError("experiment: unknown experiment '" + name + "'; known: s4d-synthetic, mamba-transfer");
}

}  // namespace ssmtune::tools
