// The Mamba-1 mixer, exactly as mamba_ssm's mamba_simple.Mamba (and HF's MambaMixer):
//   [x; z] = in_proj(h);  u = SiLU(conv1d(x));  [dt; B; C] = x_proj(u);  Δ = softplus(dt_proj(dt));
//   y = selective_scan(u, Δ, A = −exp(A_log), B, C, D, gate z);  out = out_proj(y).
// Parameters (HF names under backbone.layers.{i}.mixer.): in_proj.weight [2E, D] (+bias if use_bias),
// conv1d.weight [E, 1, K], conv1d.bias [E], x_proj.weight [R+2N, E], dt_proj.weight [E, R], dt_proj.bias [E],
// A_log [E, N], D [E], out_proj.weight [D, E] (+bias). Init as mamba_ssm (reference/ssm-models.md §1.2, §1.5).
// PEFT hooks (Mixer): h0, h′, y′ on the scan, prefix vectors prepended to x after in_proj, and Additional-scan's
// k extra states (a second scan in the parallel mode, one N + k recurrence in the step), in both modes.
// Not here: the fused "inner" kernel path of mamba_ssm (we go through the generic ops and the fused scan).
#pragma once

#include "models/ssm_lm.h"

namespace ssmtune::models {

class MambaMixer : public Mixer {
public:
    MambaMixer(const LMConfig& config, Generator& gen);
    Tensor forward(const Tensor& hidden) override;
    Tensor step(const Tensor& hidden, MixerState& state) override;
    MixerState initial_state(int64_t batch, DType dtype) override;
    std::string type_name() const override { return "MambaMixer"; }

    std::shared_ptr<Linear> in_proj, x_proj, dt_proj, out_proj;
    std::shared_ptr<DepthwiseConv1d> conv1d;
    Tensor& A_log() { return params_[0].second; }  // [E, N]
    Tensor& D() { return params_[1].second; }      // [E]

protected:
    Tensor step_inner(const Tensor& x, const Tensor& z, MixerState& state) override;

private:
    int64_t E_, N_, R_;
};

}  // namespace ssmtune::models
