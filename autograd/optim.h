// Optimizers (SGD, AdamW) with parameter groups, gradient clipping and learning-rate schedules.
//
// The updates follow PyTorch's single-tensor (foreach=False) implementations operation by operation, in the
// parameter's dtype: SGD (torch.optim.SGD: coupled L2 decay, momentum buffer initialised to the first
// gradient, Nesterov) and AdamW (Loshchilov & Hutter 2019, torch.optim.AdamW: decoupled decay
// p ← p·(1 − lr·wd), bias-corrected moments, optional AMSGrad). Each parameter is updated by one fused
// elementwise loop, threaded with OpenMP, so results do not depend on the thread count. Optimizer state
// (moments, per-parameter step counts, hyper-parameters) saves to and loads from safetensors, so a resumed
// run is bit-identical to an uninterrupted one. Schedules follow HF transformers' get_*_schedule_with_warmup.
// Parameters on a GPU are updated by cuda/optim.cu with the same per-element code (optim_math.h).
// Not here: sparse gradients, `maximize`, closures (step() takes none).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/safetensors.h"
#include "engine/tensor.h"

namespace ssmtune::autograd {

// A set of parameters sharing a learning rate and a weight decay. Negative lr / weight_decay mean "the
// optimizer's default" and are replaced by it at construction. SSM parameters (A_log, D, dt bias) and norm
// weights usually go in a group with weight_decay 0. An empty name becomes "group<k>" (k its position);
// names must be unique: they appear in error messages and in the state file (`state.<name>.<index>.<buffer>`).
struct ParamGroup {
    std::string name;
    std::vector<Tensor> params;
    double lr = -1;
    double weight_decay = -1;
};

// Base class: parameter groups, per-parameter state, zero_grad, learning-rate factor, state save/load.
//
// Parameters must be F32/F64 contiguous leaves (CPU or GPU) with requires_grad, each listed once (an Error naming the
// group and index otherwise). step() skips parameters whose .grad is undefined (frozen or unused this step);
// their state and per-parameter step count do not advance, as in PyTorch. Parameters may be appended to a
// group after construction (they are checked at the next step); reordering them invalidates the state.
class Optimizer {
public:
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    // One update of every parameter that has a gradient, with lr = group.lr · lr_factor(). Runs without
    // recording a graph. Increments step_count().
    virtual void step() = 0;
    // "SGD" or "AdamW" (also written to, and checked in, the state file).
    virtual const char* name() const = 0;

    // Drops the .grad of every parameter (the next backward() starts from nothing, as set_to_none=True).
    void zero_grad();

    std::vector<ParamGroup>& param_groups() { return groups_; }
    const std::vector<ParamGroup>& param_groups() const { return groups_; }
    std::vector<Tensor> parameters() const;  // every parameter, group by group, in order

    // Sets the lr of every group to `lr` (PyTorch's `for g in param_groups: g["lr"] = lr`; per-group ratios
    // are lost). To scale all groups while keeping their ratios, use set_lr_factor.
    void set_lr(double lr);
    // Global multiplier applied to every group's lr at step() (1 by default). Schedules set it each step:
    //   opt.set_lr_factor(schedule.factor(opt.step_count())); opt.step();
    void set_lr_factor(double factor);
    double lr_factor() const { return lr_factor_; }
    // The lr group `group` will use at the next step: param_groups()[group].lr · lr_factor().
    double effective_lr(size_t group) const;

    // Number of step() calls so far (restored by load).
    int64_t step_count() const { return step_count_; }

    // The state as tensors named `state.<group name>.<index>.<buffer>` (exp_avg, exp_avg_sq, max_exp_avg_sq,
    // momentum_buffer) and `meta` as strings: optimizer name, step count, lr factor, every group's name, size,
    // lr and weight decay, the optimizer's options, and `state.<group>.<index>.step` per parameter that has
    // state. The tensors share storage with the live state: save them before the next step().
    TensorMap state_dict(Metadata& meta) const;
    // Restores what state_dict wrote, hyper-parameters included (as PyTorch's load_state_dict does), after
    // checking the optimizer name, the number of groups, their names and sizes, and every state tensor's
    // shape and dtype against its parameter. On an Error (which says exactly what mismatches) nothing changes.
    void load_state_dict(const TensorMap& tensors, const Metadata& meta);
    // The same from a source that reads each tensor when asked: `entries` names every tensor it holds and is checked
    // in full first; read(key, device) returns that tensor on the parameter's device, kept as the state itself.
    void load_state_dict(const std::map<std::string, TensorFile::Entry>& entries,
                         const std::function<Tensor(const std::string& key, Device device)>& read,
                         const Metadata& meta);
    // state_dict → save_safetensors (atomic write) / open_safetensors → load_state_dict, one tensor at a time (a
    // resumed AdamW holds its two moments once, not the file's copies beside them).
    void save(const std::string& path) const;
    void load(const std::string& path);

protected:
    Optimizer(std::vector<ParamGroup> groups, double default_lr, double default_weight_decay);

    struct ParamState {
        int64_t step = 0;                       // updates applied to this parameter
        std::map<std::string, Tensor> buffers;  // same shape and dtype as the parameter
    };
    // What parse_options found in a state file: the buffers each stepped parameter must have under those
    // options, and how to apply them (called only once every check has passed).
    struct LoadedOptions {
        std::vector<std::string> buffers;
        std::function<void()> apply;
    };
    virtual void write_options(Metadata& meta) const = 0;
    virtual LoadedOptions parse_options(const Metadata& meta) = 0;

    // Checks every parameter (appended ones too) and sizes state_ to match groups_.
    void sync_state();
    // Gradient of parameter i of group g as a contiguous tensor of the parameter's kind, or undefined.
    Tensor checked_grad(size_t g, size_t i) const;
    // state_[g][i].buffers[name], created as zeros of the parameter's shape and dtype when missing.
    Tensor& buffer(size_t g, size_t i, const std::string& name);

    std::vector<ParamGroup> groups_;
    std::vector<std::vector<ParamState>> state_;
    int64_t step_count_ = 0;
    double lr_factor_ = 1.0;
};

// Options of SGD (SGD::Options), set with a builder: SGD::Options().lr(0.1).momentum(0.9).
class SGDOptions {
public:
    SGDOptions& lr(double v) { lr_ = v; return *this; }
    SGDOptions& momentum(double v) { momentum_ = v; return *this; }
    SGDOptions& dampening(double v) { dampening_ = v; return *this; }
    SGDOptions& weight_decay(double v) { weight_decay_ = v; return *this; }
    SGDOptions& nesterov(bool v) { nesterov_ = v; return *this; }
    double lr() const { return lr_; }
    double momentum() const { return momentum_; }
    double dampening() const { return dampening_; }
    double weight_decay() const { return weight_decay_; }
    bool nesterov() const { return nesterov_; }
    // Error unless lr, momentum, weight_decay ≥ 0 and nesterov has momentum > 0 and dampening 0.
    void validate() const;

private:
    double lr_ = 1e-3, momentum_ = 0, dampening_ = 0, weight_decay_ = 0;
    bool nesterov_ = false;
};

// Stochastic gradient descent, exactly torch.optim.SGD (maximize=False):
//   g ← g + wd·p;  buf ← g (first step) or momentum·buf + (1 − dampening)·g;
//   g ← g + momentum·buf (nesterov) or buf;  p ← p − lr·g.
class SGD : public Optimizer {
public:
    using Options = SGDOptions;

    explicit SGD(std::vector<Tensor> params, Options options = Options());
    explicit SGD(std::vector<ParamGroup> groups, Options options = Options());
    void step() override;
    const char* name() const override { return "SGD"; }
    const Options& options() const { return options_; }
    // Changing options after construction is allowed (checked at the next step). Groups keep their lr and
    // weight decay: set those through param_groups().
    Options& options() { return options_; }

private:
    void write_options(Metadata& meta) const override;
    LoadedOptions parse_options(const Metadata& meta) override;
    Options options_;
};

// Options of AdamW (AdamW::Options): AdamW::Options().lr(1e-3).weight_decay(0.1).
class AdamWOptions {
public:
    AdamWOptions& lr(double v) { lr_ = v; return *this; }
    AdamWOptions& betas(double beta1, double beta2) { beta1_ = beta1; beta2_ = beta2; return *this; }
    AdamWOptions& eps(double v) { eps_ = v; return *this; }
    AdamWOptions& weight_decay(double v) { weight_decay_ = v; return *this; }
    AdamWOptions& amsgrad(bool v) { amsgrad_ = v; return *this; }
    double lr() const { return lr_; }
    double beta1() const { return beta1_; }
    double beta2() const { return beta2_; }
    double eps() const { return eps_; }
    double weight_decay() const { return weight_decay_; }
    bool amsgrad() const { return amsgrad_; }
    // Error unless lr, eps, weight_decay ≥ 0 and 0 ≤ β1, β2 < 1.
    void validate() const;

private:
    double lr_ = 1e-3, beta1_ = 0.9, beta2_ = 0.999, eps_ = 1e-8, weight_decay_ = 0.01;
    bool amsgrad_ = false;
};

// AdamW, exactly torch.optim.AdamW (maximize=False), per parameter, with t its step count:
//   p ← p·(1 − lr·wd);  m ← lerp(m, g, 1 − β1);  v ← β2·v + (1 − β2)·g·g;  v̂max ← max(v̂max, v) (amsgrad);
//   denom ← √v / √(1 − β2^t) + eps;  p ← p + (−lr / (1 − β1^t))·m / denom.
class AdamW : public Optimizer {
public:
    using Options = AdamWOptions;

    explicit AdamW(std::vector<Tensor> params, Options options = Options());
    explicit AdamW(std::vector<ParamGroup> groups, Options options = Options());
    void step() override;
    const char* name() const override { return "AdamW"; }
    const Options& options() const { return options_; }
    Options& options() { return options_; }

private:
    void write_options(Metadata& meta) const override;
    LoadedOptions parse_options(const Metadata& meta) override;
    Options options_;
};

// Global L2 norm of the gradients of `params` (those without a gradient are skipped), accumulated in double
// in a fixed order (fixed-size chunks, partial sums added in order), so it does not depend on thread count.
double grad_norm(const std::vector<Tensor>& params);
// PyTorch's clip_grad_norm_: returns the norm before clipping; when max_norm / (norm + 1e-6) < 1 every
// gradient is multiplied by that coefficient (in place). A non-finite norm is returned without touching the
// gradients (the caller decides: skip the step, stop). max_norm must be finite and ≥ 0.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

// Learning-rate multiplier as a function of the optimizer step (counted from 0: the factor used by the first
// step() is factor(0)), following HF transformers (LambdaLR lambdas):
//   constant:  1
//   warmup:    step / max(1, W) for step < W, then 1                     (get_constant_schedule_with_warmup)
//   linear:    warmup, then m + (1 − m)·max(0, (T − step) / max(1, T − W))  (get_linear_schedule_with_warmup)
//   cosine:    warmup, then m + (1 − m)·0.5·(1 + cos(π·p)), p = (step − W) / max(1, T − W) clamped to ≤ 1
//              (get_cosine_schedule_with_warmup; with m > 0, get_cosine_with_min_lr_schedule_with_warmup)
// W = warmup steps, T = total steps, m = min ratio. With m = 0 the factors equal HF's exactly; unlike HF,
// cosine stays at m after T steps instead of rising again.
class LRSchedule {
public:
    enum class Kind { Constant, Warmup, Linear, Cosine };

    LRSchedule() = default;  // constant
    static LRSchedule constant();
    static LRSchedule warmup(int64_t warmup_steps);
    static LRSchedule linear(int64_t warmup_steps, int64_t total_steps, double min_ratio = 0);
    static LRSchedule cosine(int64_t warmup_steps, int64_t total_steps, double min_ratio = 0);
    // By name: "constant", "warmup" (also "constant_with_warmup"), "linear", "cosine"; an Error lists them.
    // "constant" with warmup_steps > 0 is an Error (use "warmup").
    static LRSchedule parse(const std::string& name, int64_t warmup_steps = 0, int64_t total_steps = 0,
                            double min_ratio = 0);
    static std::vector<std::string> names();

    double factor(int64_t step) const;  // step ≥ 0
    double lr(int64_t step, double base_lr) const { return base_lr * factor(step); }

    Kind kind() const { return kind_; }
    std::string name() const;
    int64_t warmup_steps() const { return warmup_; }
    int64_t total_steps() const { return total_; }
    double min_ratio() const { return min_ratio_; }

private:
    LRSchedule(Kind kind, int64_t warmup, int64_t total, double min_ratio);
    Kind kind_ = Kind::Constant;
    int64_t warmup_ = 0, total_ = 0;
    double min_ratio_ = 0;
};

}  // namespace ssmtune::autograd
