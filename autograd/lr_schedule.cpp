// LRSchedule (declared in autograd/optim.h): HF transformers' warmup / linear / cosine lr multipliers.
//
// factor(step) is the multiplier of the step-th optimizer step (counted from 0), the lambdas of
// get_constant_schedule_with_warmup, get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup
// (num_cycles 0.5) and get_cosine_with_min_lr_schedule_with_warmup. Not here: restarts, polynomial,
// inverse-sqrt or WSD schedules; the optimizer applies the factor (Optimizer::set_lr_factor).
#include <algorithm>
#include <cmath>

#include "autograd/optim.h"

namespace ssmtune::autograd {

namespace {
constexpr double kPi = 3.14159265358979323846;
}  // namespace

LRSchedule::LRSchedule(Kind kind, int64_t warmup, int64_t total, double min_ratio)
    : kind_(kind), warmup_(warmup), total_(total), min_ratio_(min_ratio) {
    SSMTUNE_CHECK(warmup >= 0 && total >= 0, "lr schedule '", name(), "': warmup steps (", warmup,
                  ") and total steps (", total, ") must be >= 0");
    SSMTUNE_CHECK(min_ratio >= 0 && min_ratio <= 1, "lr schedule '", name(), "': min ratio ", min_ratio,
                  " must lie in [0, 1]");
    if (kind == Kind::Linear || kind == Kind::Cosine)
        SSMTUNE_CHECK(total > 0 && total >= warmup, "lr schedule '", name(), "' needs total steps (", total,
                      ") > 0 and >= warmup steps (", warmup, "); fix: set the total number of training steps");
}

LRSchedule LRSchedule::constant() { return LRSchedule(Kind::Constant, 0, 0, 0); }
LRSchedule LRSchedule::warmup(int64_t warmup_steps) { return LRSchedule(Kind::Warmup, warmup_steps, 0, 0); }
LRSchedule LRSchedule::linear(int64_t warmup_steps, int64_t total_steps, double min_ratio) {
    return LRSchedule(Kind::Linear, warmup_steps, total_steps, min_ratio);
}
LRSchedule LRSchedule::cosine(int64_t warmup_steps, int64_t total_steps, double min_ratio) {
    return LRSchedule(Kind::Cosine, warmup_steps, total_steps, min_ratio);
}

std::vector<std::string> LRSchedule::names() { return {"constant", "warmup", "linear", "cosine"}; }

LRSchedule LRSchedule::parse(const std::string& name, int64_t warmup_steps, int64_t total_steps, double min_ratio) {
    if (name == "constant") {
        SSMTUNE_CHECK(warmup_steps == 0, "lr schedule 'constant' takes no warmup (got ", warmup_steps,
                      " steps); fix: use 'warmup' for a warmup followed by a constant rate");
        return constant();
    }
    if (name == "warmup" || name == "constant_with_warmup") return warmup(warmup_steps);
    if (name == "linear") return linear(warmup_steps, total_steps, min_ratio);
    if (name == "cosine") return cosine(warmup_steps, total_steps, min_ratio);
    SSMTUNE_FAIL("unknown lr schedule '", name, "'; known: constant, warmup, linear, cosine");
}

std::string LRSchedule::name() const {
    switch (kind_) {
        case Kind::Constant: return "constant";
        case Kind::Warmup: return "warmup";
        case Kind::Linear: return "linear";
        default: return "cosine";
    }
}

double LRSchedule::factor(int64_t step) const {
    SSMTUNE_CHECK(step >= 0, "lr schedule '", name(), "': step ", step, " must be >= 0");
    if (kind_ == Kind::Constant) return 1.0;
    if (step < warmup_) return double(step) / double(std::max<int64_t>(1, warmup_));
    if (kind_ == Kind::Warmup) return 1.0;
    const double span = double(std::max<int64_t>(1, total_ - warmup_));
    double decay;
    if (kind_ == Kind::Linear) {
        decay = std::max(0.0, double(total_ - step) / span);
    } else {
        const double progress = std::min(1.0, double(step - warmup_) / span);
        decay = std::max(0.0, 0.5 * (1.0 + std::cos(kPi * progress)));
    }
    return min_ratio_ == 0 ? decay : decay * (1 - min_ratio_) + min_ratio_;
}

}  // namespace ssmtune::autograd
