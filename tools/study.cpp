// `ssmtune study --model DIR (--task NAME | --data FILE | --batch FILE) [--out DIR]`: gradient studies of a
// language model (Mamba or Longhorn) on one batch, for students. Three tables, each also written as CSV and SVG:
//   1. reach.csv / reach.svg — ‖∂L/∂h_t‖ over time t per layer, with L the loss of the prediction at the last
//      position: how far back gradients reach through the scan. Computed exactly in the recurrent mode: after step t
//      a zero leaf is added to every layer's state h_t, and its gradient is ∂L/∂h_t (through all later steps).
//   2. alog_grad.csv / alog_grad.svg — |∂L/∂A_log[e, n]| (Mamba) summed over channels per state, and the channels
//      with the largest Σ_n |∂L/∂A_log|, plus |∂L/∂Δ-bias| per channel: what SDLoRA's selection sees (it ranks by the
//      change a warm-up makes, which follows these gradients).
//   3. lora_grads.csv — the gradient norm of LoRA's B factors (A is random, B zero: B's gradient is what moves first)
//      on the SSM-side projections (x_proj, dt_proj) vs the input/output projections (in_proj, out_proj).
// Not here: S4D (its step mode has no graph; use `ssmtune gradcheck` and `grads` for it).
#include <algorithm>
#include <cmath>
#include <map>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "engine/safetensors.h"
#include "models/checkpoint.h"
#include "ops/ops.h"
#include "peft/peft.h"
#include "tools/commands.h"
#include "tools/data/bpe_tokenizer.h"
#include "tools/data/synthetic.h"
#include "tools/data/text.h"
#include "tools/svg_plot.h"

namespace ssmtune::tools {

namespace fs = std::filesystem;

namespace {

double norm_of(const Tensor& g) {
    if (!g.defined()) return 0;
    double s = 0;
    for (double v : g.to_vector<double>()) s += v * v;
    return std::sqrt(s);
}

// A CSV value as the double it is (17 significant digits: it reads back to the same bits). std::to_string's six
// decimals wrote every gradient below 5e-7 as 0.000000 — most of a small model's A_log gradients.
std::string csv_number(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

void write_text(const fs::path& p, const std::string& text) {
    std::ofstream out(p);
    out << text;
    SSMTUNE_CHECK(out.good(), "cannot write ", p.string());
}

}  // namespace

int run_study(int argc, char** argv) {
    Flags flags(argc, argv, {{"model", ""}, {"task", ""}, {"data", ""}, {"batch", ""}, {"out", "runs/study"},
                             {"batch-size", "4"}, {"seq-len", "64"}, {"seed", "0"}, {"tokenizer", ""}}, "study");
    if (flags.help()) {
        std::printf("usage: ssmtune study --model DIR (--task NAME | --data TEXT | --batch FILE) [--out DIR]\n"
                    "                     [--batch-size 4] [--seq-len 64] [--seed 0] [--tokenizer FILE]\n"
                    "--data TEXT is read with --tokenizer, else the tokenizer.json next to the model, else as bytes.\n"
                    "Gradient studies of a Mamba/Longhorn model on one batch: how far back ∂L/∂h_t reaches per layer,\n"
                    "A_log / Δ gradients per channel and state, LoRA-on-SSM vs LoRA-on-projection gradient norms.\n"
                    "Writes CSV and SVG files to --out and prints the tables.\n");
        return 0;
    }
    if (!flags.is_set("model")) throw UsageError("study: --model DIR is required");
    const int sources = int(flags.is_set("task")) + int(flags.is_set("data")) + int(flags.is_set("batch"));
    if (sources != 1) throw UsageError("study: give exactly one of --task, --data and --batch");
    models::AnyModel model = models::load_model(flags.str("model"));
    SSMTUNE_CHECK(model.lm, "study needs a language model (mamba or longhorn); ", flags.str("model"), " is ",
                  model.model_type);
    models::LanguageModel& lm = *model.lm;
    lm.eval();
    lm.to(DType::F64);
    Generator gen(flags.seed());
    Tensor ids;
    if (flags.is_set("task")) {
        data::SyntheticTask t = data::SyntheticTask::from_json({{"name", flags.str("task")}}, "--task");
        ids = t.sample(gen, flags.integer("batch-size", 1, Flags::kMaxSize)).input_ids;
    } else if (flags.is_set("data")) {
        // the text as the model reads it (until 2026-12-07 always bytes: a BPE model studied on the wrong ids)
        const std::string tokenizer =
            flags.is_set("tokenizer") ? flags.str("tokenizer") : models::tokenizer_beside(flags.str("model"));
        const data::TextData text =
            tokenizer.empty() ? data::TextData::from_bytes_file(flags.str("data"), 0.1)
                              : data::TextData::from_bpe_file(flags.str("data"), data::BpeTokenizer::from_file(tokenizer), 0.1);
        ids = text.sample(gen, flags.integer("batch-size", 1, Flags::kMaxSize), flags.integer("seq-len", 2, Flags::kMaxSize))
                  .input_ids;
    } else {
        ids = load_safetensors(flags.str("batch")).at("input_ids");
    }
    SSMTUNE_CHECK(ids.dim() == 2 && ids.size(1) >= 2, "study: input_ids must be [B, L] with L >= 2, got ", ids.describe());
    for (int64_t v : ids.to_vector<int64_t>())
        SSMTUNE_CHECK(v >= 0 && v < lm.config().vocab_size, "study: token id ", v, " outside the vocabulary");
    const int64_t B = ids.size(0), L = ids.size(1), layers = lm.num_layers();
    const fs::path out(flags.str("out"));
    fs::create_directories(out);

    // 1. reach: ∂L/∂h_t per layer through the recurrent mode
    std::vector<std::vector<Tensor>> probes(static_cast<size_t>(layers));
    {
        std::vector<models::MixerState> states = lm.initial_states(B);
        Tensor logits;
        for (int64_t t = 0; t + 1 < L; ++t) {
            logits = lm.step(ids.select(1, t).contiguous(), states);
            for (int64_t i = 0; i < layers; ++i) {
                Tensor probe = Tensor::zeros(states[size_t(i)].ssm_state.shape(), DType::F64).set_requires_grad(true);
                states[size_t(i)].ssm_state = ops::add(states[size_t(i)].ssm_state, probe);
                probes[size_t(i)].push_back(probe);
            }
        }
        // the loss at the last position: the prediction of ids[:, L-1] made at step L-2
        Tensor loss = ops::cross_entropy(logits, ids.select(1, L - 1).contiguous());
        loss.backward();
    }
    std::string csv = "t";
    for (int64_t i = 0; i < layers; ++i) csv += ",layer" + std::to_string(i);
    csv += "\n";
    std::vector<PlotSeries> reach(static_cast<size_t>(layers));
    for (int64_t i = 0; i < layers; ++i) reach[size_t(i)].name = "layer " + std::to_string(i);
    std::printf("‖∂L/∂h_t‖ (loss at the last position), per layer:\n%6s", "t");
    for (int64_t i = 0; i < layers; ++i) std::printf(" %12s", ("layer " + std::to_string(i)).c_str());
    std::printf("\n");
    // the probe after the last step feeds nothing, so the table stops at t = L - 3
    for (int64_t t = 0; t + 2 < L; ++t) {
        csv += std::to_string(t);
        const bool show = t < 3 || t >= L - 5 || t % std::max<int64_t>(1, L / 8) == 0;
        if (show) std::printf("%6lld", (long long)t);
        for (int64_t i = 0; i < layers; ++i) {
            const double n = norm_of(probes[size_t(i)][size_t(t)].grad());
            csv += "," + csv_number(n);
            reach[size_t(i)].points.emplace_back(double(t), n);
            if (show) std::printf(" %12.4e", n);
        }
        csv += "\n";
        if (show) std::printf("\n");
    }
    write_text(out / "reach.csv", csv);
    write_svg_plot((out / "reach.svg").string(), reach, {"how far back gradients reach: ||dL/dh_t||", "t", "norm", true});

    // 2. A_log and Δ gradients from the mean next-token loss in parallel mode
    auto zero_grads = [&lm] { for (auto& [n, t] : lm.named_parameters()) t.zero_grad(); };
    zero_grads();
    Tensor loss = lm.loss(ids);
    loss.backward();
    std::string acsv = "layer,state,sum_over_channels_abs_grad_A_log\n", dcsv = "layer,channel,abs_grad_A_log_row,abs_grad_dt_bias\n";
    std::vector<PlotSeries> per_state;
    std::printf("\nΣ_e |∂L/∂A_log[e, n]| per state n (Mamba), and the channels with the largest gradient:\n");
    for (int64_t i = 0; i < layers; ++i) {
        const std::string p = "backbone.layers." + std::to_string(i) + ".mixer.";
        Tensor* alog = lm.find_parameter(p + "A_log");
        Tensor* dtb = lm.find_parameter(p + "dt_proj.bias");
        std::vector<double> dt_g = dtb && dtb->grad().defined() ? dtb->grad().to_vector<double>() : std::vector<double>();
        if (!alog || !alog->grad().defined()) {
            std::printf("  layer %lld: no A_log (Longhorn); Δ-bias gradient norm %.4e\n", (long long)i, norm_of(dtb ? dtb->grad() : Tensor()));
            continue;
        }
        const int64_t E = alog->size(0), N = alog->size(1);
        const std::vector<double> g = alog->grad().to_vector<double>();
        PlotSeries s{"layer " + std::to_string(i), {}};
        std::printf("  layer %lld:", (long long)i);
        for (int64_t n = 0; n < N; ++n) {
            double sum = 0;
            for (int64_t e = 0; e < E; ++e) sum += std::fabs(g[size_t(e * N + n)]);
            acsv += std::to_string(i) + "," + std::to_string(n) + "," + csv_number(sum) + "\n";
            s.points.emplace_back(double(n), sum);
            std::printf(" %.2e", sum);
        }
        std::printf("\n");
        per_state.push_back(s);
        std::vector<std::pair<double, int64_t>> rows;
        for (int64_t e = 0; e < E; ++e) {
            double r = 0;
            for (int64_t n = 0; n < N; ++n) r += std::fabs(g[size_t(e * N + n)]);
            rows.emplace_back(r, e);
            dcsv += std::to_string(i) + "," + std::to_string(e) + "," + csv_number(r) + "," +
                    csv_number(dt_g.empty() ? 0.0 : std::fabs(dt_g[size_t(e)])) + "\n";
        }
        std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
        std::printf("    top channels:");
        for (size_t k = 0; k < rows.size() && k < 5; ++k) std::printf(" %lld (%.2e)", (long long)rows[k].second, rows[k].first);
        std::printf("\n");
    }
    write_text(out / "alog_grad.csv", acsv);
    write_text(out / "channel_grad.csv", dcsv);
    // Longhorn has no A_log: no plot, and none left over from an earlier Mamba study in the same --out
    if (per_state.empty())
        fs::remove(out / "alog_grad.svg");
    else
        write_svg_plot((out / "alog_grad.svg").string(), per_state,
                       {"A_log gradient by state: sum over channels of |dL/dA_log|", "state n", "sum |grad|", true});

    // 3. LoRA on SSM-side projections vs input/output projections
    zero_grads();
    peft::Adapter lora = peft::apply(lm, peft::Config::parse(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 4,
        "target_modules": ["in_proj", "out_proj", "x_proj", "dt_proj"]})"));
    Tensor lloss = lm.loss(ids);
    lloss.backward();
    std::map<std::string, double> sq;
    for (auto& [name, t] : lora.named_parameters()) {
        if (name.find("lora_B") == std::string::npos) continue;
        for (const char* m : {"in_proj", "out_proj", "x_proj", "dt_proj"})
            if (name.find(std::string(".") + m + ".") != std::string::npos) sq[m] += std::pow(norm_of(t.grad()), 2);
    }
    std::string lcsv = "module,group,grad_norm_lora_B\n";
    std::printf("\nLoRA B-factor gradient norms (r = 4), summed over layers:\n");
    for (const char* m : {"in_proj", "out_proj", "x_proj", "dt_proj"}) {
        const bool ssm = std::string(m) == "x_proj" || std::string(m) == "dt_proj";
        std::printf("  %-9s %-12s %.4e\n", m, ssm ? "SSM-side" : "projection", std::sqrt(sq[m]));
        lcsv += std::string(m) + "," + (ssm ? "ssm" : "projection") + "," + csv_number(std::sqrt(sq[m])) + "\n";
    }
    write_text(out / "lora_grads.csv", lcsv);
    lora.detach();
    std::printf("\nwrote %s/{reach,alog_grad,channel_grad,lora_grads}.csv and reach.svg%s\n", out.string().c_str(),
                per_state.empty() ? "" : ", alog_grad.svg");
    return 0;
}

}  // namespace ssmtune::tools
