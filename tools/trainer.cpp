// The shared training loop (see trainer.h).
//
// Checkpoints: <out>/checkpoints/{last,best}/ hold the caller's weights, optimizer.safetensors and
// trainer_state.json (step, generator states, best metrics). A checkpoint is written in full into a fresh
// temporary directory and then renamed into place (the previous one is renamed aside first and removed last), so
// a crash or SIGKILL at any point leaves a complete checkpoint to resume from (`last`, or `last.old` if the kill
// fell between the two renames). Resume restores weights, optimizer state, generators and step, so the losses
// that follow are bit-identical to an uninterrupted run with the same thread count. On resume, metrics.jsonl is cut
// back to the checkpoint's step (records of the lost steps and a line torn by the kill are dropped), so the log of
// an interrupted and resumed run reads exactly like one uninterrupted run.
#include "tools/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "models/checkpoint.h"
#include "ops/ops.h"
#include "peft/peft.h"

namespace ssmtune::tools {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_sigint(int) { g_interrupted = 1; }

// Installs the SIGINT handler for the lifetime of the loop.
struct SigintScope {
    void (*previous)(int);
    SigintScope() {
        g_interrupted = 0;
        previous = std::signal(SIGINT, on_sigint);
    }
    ~SigintScope() { std::signal(SIGINT, previous); }
};

std::string format_duration(double s) {
    char buf[32];
    const int64_t t = int64_t(s + 0.5);
    if (t >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60), (long long)(t % 60));
    else std::snprintf(buf, sizeof buf, "%02lld:%02lld", (long long)(t / 60), (long long)(t % 60));
    return buf;
}

// Accuracy, macro-F1 and MCC rise as a model improves; loss, perplexity and bits per byte fall.
bool lower_is_better(const std::string& metric) {
    return metric.find("acc") == std::string::npos && metric.find("f1") == std::string::npos && metric != "mcc";
}

// Writes a complete checkpoint to `dir` atomically (see the file comment).
void write_checkpoint(const std::string& dir, int64_t step, const autograd::Optimizer& opt, TrainHooks& hooks,
                      const json& best, int64_t evals_without_gain) {
    const fs::path target(dir), tmp = target.string() + ".tmp", old = target.string() + ".old";
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    SSMTUNE_CHECK(!ec, "cannot create checkpoint directory ", tmp.string(), ": ", ec.message(),
                  "; fix: make the output directory writable");
    try {
        hooks.save_weights(tmp.string());
        opt.save((tmp / "optimizer.safetensors").string());
        json state = {{"step", step}, {"best", best}, {"evals_without_gain", evals_without_gain},
                      {"rngs", json::array()}};
        for (Generator* g : hooks.rngs) state["rngs"].push_back({g->seed(), g->offset()});
        models::write_json_file((tmp / "trainer_state.json").string(), state);
    } catch (...) {
        fs::remove_all(tmp, ec);
        throw;
    }
    fs::remove_all(old, ec);
    if (fs::exists(target)) fs::rename(target, old, ec);
    SSMTUNE_CHECK(!ec, "cannot move the previous checkpoint ", target.string(), " aside: ", ec.message());
    fs::rename(tmp, target, ec);
    SSMTUNE_CHECK(!ec, "cannot move the new checkpoint into ", target.string(), ": ", ec.message());
    fs::remove_all(old, ec);
}

// The checkpoint to resume from: `last`, or `last.old` when a kill fell between the two renames.
std::string resumable_checkpoint(const std::string& out_dir) {
    const std::string last = last_checkpoint_dir(out_dir);
    if (fs::exists(fs::path(last) / "trainer_state.json")) return last;
    if (fs::exists(fs::path(last + ".old") / "trainer_state.json")) return last + ".old";
    SSMTUNE_FAIL("--resume: no checkpoint in ", last, "; fix: run without --resume to start from scratch");
}

// Rewrites <out>/metrics.jsonl without the records after `step` and without lines that do not parse (a record
// torn by a kill). Written to a temporary file and renamed, like the checkpoints.
void cut_metrics_log(const fs::path& path, int64_t step) {
    if (!fs::exists(path)) return;
    std::string kept;
    {
        std::ifstream in(path);
        std::string line;
        while (std::getline(in, line)) {
            const json rec = json::parse(line, nullptr, /*allow_exceptions=*/false);
            if (rec.is_object() && rec.contains("step") && rec["step"].is_number_integer() &&
                rec["step"].get<int64_t>() <= step)
                kept += line + "\n";
        }
    }
    const fs::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << kept << std::flush;
        SSMTUNE_CHECK(out.good(), "cannot rewrite ", path.string(), " for --resume (writing ", tmp.string(),
                      " failed); fix: free disk space or make the output directory writable");
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    SSMTUNE_CHECK(!ec, "cannot replace ", path.string(), ": ", ec.message());
}

// The first parameter whose gradient holds a NaN or Inf, or "" when all are finite.
std::string first_non_finite_grad(const std::vector<std::pair<std::string, Tensor>>& params) {
    for (auto& [name, t] : params) {
        Tensor g = t.grad();
        if (!g.defined()) continue;
        for (double v : g.to_vector<double>())
            if (!std::isfinite(v)) return name;
    }
    return "";
}

// AdamW's parameter groups (TrainLoopOptions::no_decay, ssm_lr): "group0" at the run's lr and weight decay (the name
// a single-group run has always had, so its checkpoints still load), "no_decay" at weight decay 0, "ssm_kernel" at
// ssm_lr and weight decay 0; empty groups are left out (at weight decay 0 the no-decay split changes nothing and is not
// made; an ssm_lr with no kernel tensor among the trained ones changes nothing, so one run config serves FULL and
// LoRA fine-tuning alike). Each keeps the order of `params`.
std::vector<autograd::ParamGroup> param_groups(const TrainLoopOptions& o,
                                               const std::vector<std::pair<std::string, Tensor>>& params) {
    static const std::vector<std::string> kernel = {"kernel.log_dt", "kernel.log_A_real", "kernel.A_imag"};
    autograd::ParamGroup decay{"group0", {}, o.lr, o.weight_decay}, no_decay{"no_decay", {}, o.lr, 0.0},
        ssm{"ssm_kernel", {}, o.ssm_lr, 0.0};
    for (auto& [param_name, t] : params) {
        const std::string name = param_name;  // a plain copy: lambdas cannot capture bindings before C++20
        auto any_of = [&](const std::vector<std::string>& entries) {
            return std::any_of(entries.begin(), entries.end(),
                               [&](const std::string& e) { return peft::has_name_parts(name, e); });
        };
        if (o.ssm_lr > 0 && any_of(kernel)) ssm.params.push_back(t);
        else if (o.weight_decay != 0 && any_of(o.no_decay)) no_decay.params.push_back(t);
        else decay.params.push_back(t);
    }
    std::vector<autograd::ParamGroup> groups;
    for (autograd::ParamGroup* g : {&decay, &no_decay, &ssm})
        if (!g->params.empty()) groups.push_back(std::move(*g));
    if (groups.empty()) groups.push_back(decay);  // nothing to train: one empty group, as before
    if (!o.quiet && groups.size() > 1) {
        std::printf("optimizer groups:");
        for (const autograd::ParamGroup& g : groups)
            std::printf(" %s %zu tensor(s) lr %.3g weight decay %.3g;", g.name.c_str(), g.params.size(), g.lr,
                        g.weight_decay);
        std::printf("\n");
    }
    return groups;
}

}  // namespace

void set_aside_earlier_run(const std::string& out_dir) {
    const fs::path out(out_dir);
    std::error_code ec;
    if (!fs::is_directory(out, ec)) return;  // a new directory (or not a directory: the run's own error says so)
    if (!fs::exists(out / "metrics.jsonl", ec) && !fs::exists(out / "checkpoints", ec)) return;
    const fs::path previous = out / "previous";
    fs::remove_all(previous, ec);
    SSMTUNE_CHECK(!ec, "cannot remove ", previous.string(), " to keep the earlier run of ", out_dir, " there: ",
                  ec.message(), "; fix: remove it, or pass another --out (--resume continues the earlier run)");
    fs::create_directories(previous, ec);
    SSMTUNE_CHECK(!ec, "cannot create ", previous.string(), ": ", ec.message(),
                  "; fix: pass another --out (--resume continues the earlier run)");
    std::string moved;
    for (const char* name : {"metrics.jsonl", "checkpoints", "loss.svg", "accuracy.svg", "sdlora_warmup.safetensors"}) {
        if (!fs::exists(out / name, ec)) continue;
        fs::rename(out / name, previous / name, ec);
        SSMTUNE_CHECK(!ec, "cannot move ", (out / name).string(), " into ", previous.string(), ": ", ec.message(),
                      "; fix: pass another --out (--resume continues the earlier run)");
        moved += std::string(moved.empty() ? "" : ", ") + name;
    }
    std::fprintf(stderr, "warning: %s held an earlier run; its %s moved to %s (this run starts its own log and "
                 "checkpoints; --resume continues a run instead)\n", out_dir.c_str(), moved.c_str(),
                 previous.string().c_str());
}

std::string last_checkpoint_dir(const std::string& out_dir) { return (fs::path(out_dir) / "checkpoints" / "last").string(); }
std::string best_checkpoint_dir(const std::string& out_dir) { return (fs::path(out_dir) / "checkpoints" / "best").string(); }

OptimizerSteps::OptimizerSteps(const TrainLoopOptions& o, const std::vector<std::pair<std::string, Tensor>>& params)
    : o_(o),
      params_(params),
      opt_(param_groups(o, params), autograd::AdamW::Options()
                                        .lr(o.lr)
                                        .betas(o.adam_beta1, o.adam_beta2)
                                        .eps(o.adam_epsilon)
                                        .weight_decay(o.weight_decay)),
      schedule_(autograd::LRSchedule::parse(o.schedule, o.warmup_steps, o.steps, o.min_lr_ratio)) {
    SSMTUNE_CHECK(o.grad_accum_steps >= 1, "train.gradient_accumulation_steps must be >= 1, got ", o.grad_accum_steps);
    for (auto& [n, t] : params_) tensors_.push_back(t);
}

OptimizerSteps::Result OptimizerSteps::step(const std::function<Tensor(int64_t, double&)>& loss, int64_t step,
                                            const std::function<std::string()>& stopped) {
    Result r;
    for (int64_t micro = 0; micro < o_.grad_accum_steps; ++micro) {
        double micro_units = 0;
        Tensor l = loss(step, micro_units);
        const double value = l.item();
        SSMTUNE_CHECK(std::isfinite(value), "step ", step + 1, ": the loss is ", value, "; stopped. ", stopped());
        if (o_.grad_accum_steps > 1) l = ops::mul_scalar(l, 1.0 / double(o_.grad_accum_steps));
        l.backward();
        r.units += micro_units;
        r.loss += value / double(o_.grad_accum_steps);
    }
    r.grad_norm = o_.grad_clip > 0 ? autograd::clip_grad_norm(tensors_, o_.grad_clip) : autograd::grad_norm(tensors_);
    if (!std::isfinite(r.grad_norm)) {
        const std::string bad = first_non_finite_grad(params_);
        SSMTUNE_FAIL("step ", step + 1, ": the gradient of ", bad.empty() ? "a parameter" : bad,
                     " is not finite; stopped. ", stopped());
    }
    opt_.set_lr_factor(schedule_.factor(opt_.step_count()));
    r.lr = o_.lr * opt_.lr_factor();
    opt_.step();
    opt_.zero_grad();
    return r;
}

TrainResult run_training(const TrainLoopOptions& o, TrainHooks& hooks) {
    SSMTUNE_CHECK(o.steps > 0, "training needs --steps > 0");
    SSMTUNE_CHECK(!o.out_dir.empty(), "training needs an output directory");
    std::error_code ec;
    fs::create_directories(o.out_dir, ec);
    SSMTUNE_CHECK(!ec && fs::is_directory(o.out_dir), "cannot create output directory ", o.out_dir, ": ", ec.message());

    OptimizerSteps stepper(o, hooks.params);
    autograd::AdamW& opt = stepper.optimizer();

    TrainResult result;
    json best = json::object();
    int64_t start = 0;
    int64_t evals_without_gain = 0;  // early stopping: evaluations in a row without a gain beyond the threshold
    if (o.resume) {
        const std::string dir = resumable_checkpoint(o.out_dir);
        hooks.load_weights(dir);
        opt.load((fs::path(dir) / "optimizer.safetensors").string());
        const json state = models::read_json_file((fs::path(dir) / "trainer_state.json").string());
        start = state.at("step").get<int64_t>();
        best = state.at("best");
        if (state.contains("evals_without_gain")) evals_without_gain = state["evals_without_gain"].get<int64_t>();
        SSMTUNE_CHECK(state.at("rngs").size() == hooks.rngs.size(), dir, " was written by a run with ",
                      state.at("rngs").size(), " generators, this one has ", hooks.rngs.size(),
                      "; fix: resume with the same command and config");
        for (size_t i = 0; i < hooks.rngs.size(); ++i)
            hooks.rngs[i]->set_state(state["rngs"][i][0].get<uint64_t>(), state["rngs"][i][1].get<uint64_t>());
        SSMTUNE_CHECK(start <= o.steps, dir, " is at step ", start, ", beyond --steps ", o.steps);
        cut_metrics_log(fs::path(o.out_dir) / "metrics.jsonl", start);
    }
    for (auto& [k, v] : best.items()) result.best_eval[k] = v.get<double>();

    std::ofstream metrics(fs::path(o.out_dir) / "metrics.jsonl", std::ios::app);
    SSMTUNE_CHECK(metrics.good(), "cannot write ", (fs::path(o.out_dir) / "metrics.jsonl").string());
    const bool tty = !o.quiet && isatty(fileno(stdout));
    SigintScope sigint;
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    double window_units = 0, window_start = 0;

    auto checkpoint = [&](const std::string& dir, int64_t step) {
        write_checkpoint(dir, step, opt, hooks, best, evals_without_gain);
    };
    auto evaluate_and_save = [&](int64_t step, bool final_step) {
        if (hooks.evaluate) {
            result.last_eval = hooks.evaluate();
            json rec = {{"step", step}, {"split", "val"}, {"elapsed", elapsed()}};
            for (auto& [k, v] : result.last_eval) rec[k] = v;
            metrics << rec.dump() << "\n" << std::flush;
            if (!o.quiet) {
                std::printf("%seval step %lld:", tty ? "\n" : "", (long long)step);
                for (auto& [k, v] : result.last_eval) std::printf(" %s %.4f", k.c_str(), v);
                std::printf("\n");
                std::fflush(stdout);
            }
            auto it = result.last_eval.find(o.best_metric);
            if (it == result.last_eval.end() && !result.last_eval.empty()) {
                std::string names;
                for (auto& [k, v] : result.last_eval) names += (names.empty() ? "" : ", ") + k;
                SSMTUNE_FAIL("train.best_metric \"", o.best_metric, "\" is not one of the evaluation's metrics (",
                             names, "); fix: --set train.best_metric=\"loss\"");
            }
            if (it != result.last_eval.end()) {
                const bool lower = lower_is_better(o.best_metric);
                const double value = it->second;
                const bool first = !best.contains(o.best_metric);
                const double previous = first ? 0.0 : best[o.best_metric].get<double>();
                const bool better = first || (lower ? value < previous : value > previous);
                // HF's EarlyStoppingCallback: a gain counts when it beats the best so far by more than the threshold
                if (first || (better && std::abs(value - previous) > o.early_stopping_threshold))
                    evals_without_gain = 0;
                else
                    ++evals_without_gain;
                if (better) {
                    for (auto& [k, v] : result.last_eval) best[k] = v;
                    result.best_eval = result.last_eval;
                    checkpoint(best_checkpoint_dir(o.out_dir), step);
                    result.best_checkpoint = best_checkpoint_dir(o.out_dir);
                }
            }
        }
        (void)final_step;
        checkpoint(last_checkpoint_dir(o.out_dir), step);
        result.last_checkpoint = last_checkpoint_dir(o.out_dir);
    };

    // early stopping (HF's EarlyStoppingCallback): stop after `patience` evaluations in a row without a gain
    auto stop_early = [&] {
        if (o.early_stopping_patience <= 0 || evals_without_gain < o.early_stopping_patience) return false;
        result.early_stopped = true;
        if (!o.quiet)
            std::printf("%searly stop: %s has not improved by more than %g for %lld evaluations\n", tty ? "\n" : "",
                        o.best_metric.c_str(), o.early_stopping_threshold, (long long)evals_without_gain);
        return true;
    };
    int64_t step = start;
    const bool stopped_before = stop_early();  // a resumed run that had stopped early: nothing more to train
    for (; !stopped_before && step < o.steps; ++step) {
        if (g_interrupted) {
            checkpoint(last_checkpoint_dir(o.out_dir), step);
            result.last_checkpoint = last_checkpoint_dir(o.out_dir);
            result.interrupted = true;
            if (!o.quiet) std::printf("%sinterrupted at step %lld; checkpoint saved to %s (continue with --resume)\n",
                                      tty ? "\n" : "", (long long)step, result.last_checkpoint.c_str());
            break;
        }
        auto stopped = [&] {
            return "The last good checkpoint is " +
                   (fs::exists(last_checkpoint_dir(o.out_dir)) ? last_checkpoint_dir(o.out_dir)
                                                               : std::string("(none yet)")) +
                   "; fix: lower --lr (or clip harder with --grad-clip), then --resume";
        };
        const OptimizerSteps::Result done_step = stepper.step(hooks.loss, step, stopped);
        const double loss_value = done_step.loss, units = done_step.units, norm = done_step.grad_norm,
                     lr = done_step.lr;
        result.last_loss = loss_value;
        window_units += units;
        const int64_t done = step + 1;
        if (done % o.log_every == 0 || done == o.steps) {
            const double now = elapsed(), rate = window_units / std::max(1e-9, now - window_start);
            json rec = {{"step", done}, {"loss", loss_value}, {"lr", lr}, {"grad_norm", norm},
                        {hooks.units_name + "_per_s", rate}, {"elapsed", now}};
            metrics << rec.dump() << "\n" << std::flush;
            if (tty) {
                const double frac = double(done) / double(o.steps);
                const double eta = (now / std::max<int64_t>(1, done - start)) * double(o.steps - done);
                std::string bar(size_t(frac * 24), '#');
                bar.resize(24, '.');
                std::printf("\r[%s] %3.0f%% step %lld/%lld loss %.4f lr %.2e gnorm %.3f %.0f %s/s ETA %s   ",
                            bar.c_str(), 100 * frac, (long long)done, (long long)o.steps, loss_value, lr, norm, rate,
                            hooks.units_name.c_str(), format_duration(eta).c_str());
                std::fflush(stdout);
            } else if (!o.quiet) {
                std::printf("step %lld/%lld loss %.4f lr %.3e grad_norm %.4f %s/s %.0f elapsed %.1fs\n", (long long)done,
                            (long long)o.steps, loss_value, lr, norm, hooks.units_name.c_str(), rate, now);
                std::fflush(stdout);  // one line per logging step, visible at once in a log file
            }
            window_units = 0;
            window_start = now;
        }
        const bool eval_now = o.eval_every > 0 && done % o.eval_every == 0 && done != o.steps;
        const bool save_now = o.save_every > 0 && done % o.save_every == 0 && done != o.steps;
        if (eval_now) {
            evaluate_and_save(done, false);
            if (stop_early()) {
                step = done;
                break;
            }
        } else if (save_now) {
            checkpoint(last_checkpoint_dir(o.out_dir), done);
            result.last_checkpoint = last_checkpoint_dir(o.out_dir);
        }
    }
    if (!result.interrupted && !result.early_stopped) {
        if (tty) std::printf("\n");
        if (o.resume && start == o.steps) {
            // Resumed from the final checkpoint (the only one at step == steps: written after the final evaluation,
            // whose record the log keeps; a kill fell after it): the metrics again for the caller, nothing logged or
            // counted twice. Until 2026-12-07 the evaluation ran again, a second record in metrics.jsonl and one more
            // evaluation without a gain for early stopping.
            if (hooks.evaluate) result.last_eval = hooks.evaluate();
            result.last_checkpoint = last_checkpoint_dir(o.out_dir);
        } else {
            evaluate_and_save(step, true);
        }
    }
    // HF's load_best_model_at_end: the caller saves and evaluates the weights of the best evaluation (`best` is
    // empty until this run, or the run it resumes, wrote checkpoints/best: an older run's directory is never read)
    const fs::path best_dir = best_checkpoint_dir(o.out_dir);
    if (!result.interrupted && o.load_best_at_end && !best.empty() && fs::exists(best_dir / "trainer_state.json")) {
        hooks.load_weights(best_dir.string());
        result.loaded_best = true;
        if (!o.quiet) {
            const json state = models::read_json_file((best_dir / "trainer_state.json").string());
            std::printf("loaded the best checkpoint (step %lld, %s %.4f)\n", (long long)state.at("step").get<int64_t>(),
                        o.best_metric.c_str(), best.value(o.best_metric, 0.0));
        }
    }
    result.steps_done = step;
    result.seconds = elapsed();
    return result;
}

}  // namespace ssmtune::tools
