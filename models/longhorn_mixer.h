// The Longhorn mixer (Liu et al. 2024, "Longhorn: State Space Models are Amortized Online Learners"):
// Mamba's block with the scan replaced by the closed-form online-regression update (ssm-models.md §3):
//   [x; z] = in_proj(h);  u = SiLU(conv1d(x));  [dt; k; q] = x_proj(u);  β = σ(dt_proj(dt));
//   ε = β / (1 + β‖k‖²);  h_t = (1 − ε k²) ⊙ h_{t−1} + ε k u;  y = q·h + D u;  out = out_proj(y ⊙ SiLU(z)).
// Our layout, in Mamba's naming style (backbone.layers.{i}.mixer.): in_proj.weight [2E, D], conv1d.weight
// [E, 1, K], conv1d.bias [E], x_proj.weight [R+2N, E] (rows: dt, k, q), dt_proj.weight [E, R], dt_proj.bias [E]
// (zero init: β ≈ 0.5 at start, as the official code's _init_weights leaves it), D [E]. No A_log.
// PEFT scan hooks: initial state h0, state offset h′ (y = q·(h + h′) + D u), output offset y′ and prefix vectors
// (Mixer::hook_prefix), in both modes.
// Not here: Longhorn's official chunked Triton kernel (we use our own fused scan, same math).
#pragma once

#include "models/ssm_lm.h"

namespace ssmtune::models {

class LonghornMixer : public Mixer {
public:
    LonghornMixer(const LMConfig& config, Generator& gen);
    Tensor forward(const Tensor& hidden) override;
    Tensor step(const Tensor& hidden, MixerState& state) override;
    MixerState initial_state(int64_t batch, DType dtype) override;
    std::string type_name() const override { return "LonghornMixer"; }

    std::shared_ptr<Linear> in_proj, x_proj, dt_proj, out_proj;
    std::shared_ptr<DepthwiseConv1d> conv1d;
    Tensor& D() { return params_[0].second; }  // [E]

protected:
    Tensor step_inner(const Tensor& x, const Tensor& z, MixerState& state) override;

private:
    int64_t E_, N_, R_;
};

}  // namespace ssmtune::models
