// The training loop every training command shares (train, finetune, the main job): AdamW (parameter groups for
// the tensors without weight decay and S4D's kernel lr, as the references build them) with a schedule and
// gradient clipping, progress on a terminal (bar + ETA) or one plain line per logging step otherwise, a JSON-lines
// metrics log, evaluation every N steps, best and last checkpoints written atomically (weights, optimizer state,
// RNG states, step), early stopping and loading the best checkpoint at the end (HF's callback and option),
// bit-identical resume, a stop on the first non-finite loss or gradient naming the step and
// tensor, and a clean checkpoint-and-exit on Ctrl-C (SIGINT).
// What "weights" are is the caller's: a whole model, or an adapter directory.
// Not here: data loading (tools/data/), what the loss is (the commands), multi-process training.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "autograd/optim.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace ssmtune::tools {

struct TrainLoopOptions {
    int64_t steps = 1000;
    double lr = 1e-3;
    double weight_decay = 0.0;
    std::string schedule = "cosine";  // constant | warmup | linear | cosine
    int64_t warmup_steps = 0;
    double min_lr_ratio = 0.0;
    double grad_clip = 1.0;           // 0 = off
    double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;  // torch.optim.AdamW's defaults
    int64_t grad_accum_steps = 1;     // micro-batches per optimizer step (their gradients averaged)
    // Trained tensors whose name contains one of these as a run of whole dot-separated parts ("mixer.A_log" names
    // backbone.layers.3.mixer.A_log, not ...mixer.A_log_delta) train at weight decay 0. The run config's default is
    // kDefaultNoDecay; empty here = decay on every tensor (torch.optim.AdamW over all parameters).
    std::vector<std::string> no_decay;
    // > 0: S4D's kernel tensors (kernel.log_dt, kernel.log_A_real, kernel.A_imag) train at this lr and weight decay
    // 0, as state-spaces/s4 example.py registers them (lr = min(1e-3, lr) there). The schedule scales it as every
    // other group's lr. <= 0: the run's lr. Runs that train no kernel tensor (LoRA, ...) are unaffected.
    double ssm_lr = 0;
    int64_t log_every = 10;
    int64_t eval_every = 0;           // 0 = only at the end
    int64_t save_every = 0;           // 0 = at evaluations and at the end
    std::string out_dir;              // checkpoints/, metrics.jsonl
    bool resume = false;
    bool quiet = false;               // no progress output (tests)
    std::string best_metric = "loss"; // an evaluated metric; higher is better for accuracy, *f1*, mcc, else lower
    // Early stopping as HF's EarlyStoppingCallback: stop after this many evaluations in a row whose best_metric does
    // not beat the best so far by more than early_stopping_threshold (0 = never stop early). Resume keeps the count.
    int64_t early_stopping_patience = 0;
    double early_stopping_threshold = 0.0;
    // HF's load_best_model_at_end: after the last step, load the weights of the best evaluation (checkpoints/best),
    // so what the caller saves and evaluates next is that model.
    bool load_best_at_end = false;
};

// The references' no-decay sets: mamba_ssm's _no_weight_decay on the mixer's A_log and D (Longhorn's mixer D too, by
// analogy: its block builds on Mamba's), and the S4D kernel tensors example.py registers with weight_decay 0. S4D's
// own D, norms and biases decay, as there.
inline const std::vector<std::string> kDefaultNoDecay = {"mixer.A_log", "mixer.D", "kernel.log_dt", "kernel.log_A_real",
                                                          "kernel.A_imag"};

struct TrainHooks {
    std::vector<std::pair<std::string, Tensor>> params;  // trainable tensors, named
    // The training loss of step `step` (model in training mode). `units` = tokens or samples in the batch.
    std::function<Tensor(int64_t step, double& units)> loss;
    // Validation metrics (model in evaluation mode), e.g. {"loss", "accuracy"}; may be empty.
    std::function<std::map<std::string, double>()> evaluate;
    // Write / read the weights (model directory or adapter directory) in `dir`.
    std::function<void(const std::string& dir)> save_weights;
    std::function<void(const std::string& dir)> load_weights;
    // Generators whose state a resume must restore (data sampling, dropout).
    std::vector<Generator*> rngs;
    std::string units_name = "tokens";
};

struct TrainResult {
    int64_t steps_done = 0;
    double last_loss = 0;
    std::map<std::string, double> last_eval, best_eval;
    double seconds = 0;
    bool interrupted = false;
    bool early_stopped = false;  // stopped by early_stopping_patience (steps_done < steps)
    bool loaded_best = false;    // load_best_at_end loaded checkpoints/best
    std::string last_checkpoint, best_checkpoint;
};

// One optimizer step of the loop, on its own for SDLoRA's warm-up (tools/train_common.cpp), which trains the first
// steps of a run with the run's optimizer: AdamW over param_groups(o, params) with the run's betas and eps, the
// schedule over o.steps, k = grad_accum_steps micro-batch losses each scaled by 1/k before its backward (their
// mean: HF Trainer's accumulation), the gradient clipped to o.grad_clip, then step and zero_grad.
class OptimizerSteps {
public:
    OptimizerSteps(const TrainLoopOptions& o, const std::vector<std::pair<std::string, Tensor>>& params);
    struct Result {
        double loss = 0;       // the mean of the micro-batch losses
        double units = 0;      // tokens or samples, summed over the micro-batches
        double grad_norm = 0;  // before clipping
        double lr = 0;         // the run's lr at this step (o.lr × the schedule; a group may have its own)
    };
    // `stopped` ends the error on a non-finite loss or gradient: what was kept and the fix.
    Result step(const std::function<Tensor(int64_t step, double& units)>& loss, int64_t step,
                const std::function<std::string()>& stopped);
    autograd::AdamW& optimizer() { return opt_; }

private:
    TrainLoopOptions o_;
    std::vector<std::pair<std::string, Tensor>> params_;
    std::vector<Tensor> tensors_;
    autograd::AdamW opt_;
    autograd::LRSchedule schedule_;
};

// Runs the loop. Throws ssmtune::Error on a non-finite loss/gradient (after keeping the last good checkpoint)
// and on resume mismatches. On SIGINT it saves a checkpoint and returns with interrupted = true.
TrainResult run_training(const TrainLoopOptions& options, TrainHooks& hooks);

// A run started without --resume in a directory that already holds a run's log or checkpoints: moves that run's
// metrics.jsonl, checkpoints/, plots and sdlora_warmup.safetensors into OUT/previous/ (replacing an older one), so
// that the new run's log and plots are its own (they used to be appended to the earlier run's) and a later --resume
// can find only its checkpoints (it used to find the earlier run's when the new one was killed before its first).
// Its model, adapter and run_config.json stay, to be overwritten as before. Prints a warning naming what it moved
// (stderr). Call it before the run writes anything into OUT.
void set_aside_earlier_run(const std::string& out_dir);

// The checkpoint directory the loop writes under out_dir ("checkpoints/last", "checkpoints/best").
std::string last_checkpoint_dir(const std::string& out_dir);
std::string best_checkpoint_dir(const std::string& out_dir);

}  // namespace ssmtune::tools
