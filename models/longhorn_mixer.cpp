// Longhorn mixer: init, parallel forward through the fused Longhorn scan, one-token step (see longhorn_mixer.h).
#include "models/longhorn_mixer.h"

#include <cmath>

#include "ops/ops.h"
#include "ops/ssm.h"

namespace ssmtune::models {

LonghornMixer::LonghornMixer(const LMConfig& c, Generator& gen)
    : E_(c.intermediate_size), N_(c.state_size), R_(c.time_step_rank) {
    const int64_t D = c.hidden_size;
    register_parameter("D", Tensor::ones({E_}));
    in_proj = register_module("in_proj", std::make_shared<Linear>(D, 2 * E_, c.use_bias, gen));
    conv1d = register_module("conv1d", std::make_shared<DepthwiseConv1d>(E_, c.conv_kernel, c.use_conv_bias, gen));
    x_proj = register_module("x_proj", std::make_shared<Linear>(E_, R_ + 2 * N_, false, gen));
    dt_proj = register_module("dt_proj", std::make_shared<Linear>(R_, E_, true, gen));
    out_proj = register_module("out_proj", std::make_shared<Linear>(E_, D, c.use_bias, gen));
    *dt_proj->bias() = Tensor::zeros({E_}).set_requires_grad(true);
    if (c.use_bias) {
        *in_proj->bias() = Tensor::zeros({2 * E_}).set_requires_grad(true);
        *out_proj->bias() = Tensor::zeros({D}).set_requires_grad(true);
    }
    if (c.rescale_prenorm_residual) {
        const double bound = 1.0 / std::sqrt(double(E_)) / std::sqrt(double(c.num_hidden_layers));
        out_proj->weight() = Tensor::uniform({D, E_}, gen, -bound, bound).set_requires_grad(true);
    }
}

Tensor LonghornMixer::forward(const Tensor& hidden) {
    Tensor xz = in_proj->forward(hidden);                           // [B, L, 2E]
    Tensor x = xz.narrow(2, 0, E_).transpose(1, 2).contiguous();    // [B, E, L]
    Tensor z = xz.narrow(2, E_, E_).transpose(1, 2).contiguous();   // [B, E, L]
    const int64_t P = prepend_prefix(x, z);                         // PEFT prefix: x, z [B, E, P + L]
    Tensor u = ops::silu(causal_conv(*conv1d, x));                  // [B, E, L]
    Tensor x_dbl = x_proj->forward(u.transpose(1, 2));              // [B, L, R + 2N]
    Tensor k = x_dbl.narrow(2, R_, N_).transpose(1, 2).contiguous();       // [B, N, L]
    Tensor q = x_dbl.narrow(2, R_ + N_, N_).transpose(1, 2).contiguous();  // [B, N, L]
    Tensor dt = dt_proj->forward(x_dbl.narrow(2, 0, R_)).transpose(1, 2).contiguous();  // [B, E, L] β-logits
    ops::LonghornScanOptions opt;
    opt.D = effective("D");
    opt.z = z;
    opt.h0 = hook_initial_state;
    opt.state_offset = state_offset();
    opt.output_offset = hook_output_offset;
    Tensor y = ops::longhorn_scan(u, dt, k, q, opt).out;            // [B, E, L]
    if (P > 0) y = y.narrow(2, P, y.size(2) - P);                   // drop the prefix positions
    return out_proj->forward(y.transpose(1, 2));
}

MixerState LonghornMixer::initial_state(int64_t batch, DType dtype) {
    return start_state(batch, dtype, E_, N_, conv1d->kernel(), in_proj->weight().device());  // states with the weights
}

Tensor LonghornMixer::step(const Tensor& hidden, MixerState& state) {
    Tensor xz = in_proj->forward(hidden);  // [B, 2E]
    return out_proj->forward(step_inner(xz.narrow(1, 0, E_), xz.narrow(1, E_, E_), state));  // [B, D]
}

Tensor LonghornMixer::step_inner(const Tensor& x, const Tensor& z, MixerState& state) {
    // x, z [B, E] (after in_proj, or a prefix row with z = 0) -> y ⊙ SiLU(z) [B, E]
    const int64_t K = conv1d->kernel();
    state.conv_state = ops::concat({state.conv_state.narrow(2, 1, K - 1), x.unsqueeze(2)}, 2);
    Tensor xc = ops::sum(ops::mul(state.conv_state, conv1d->effective_weight().reshape({E_, K})), {2});
    if (conv1d->bias()) xc = ops::add(xc, conv1d->effective_bias());
    Tensor u = ops::silu(xc);                             // [B, E]
    Tensor x_dbl = x_proj->forward(u);                    // [B, R + 2N]
    Tensor k = x_dbl.narrow(1, R_, N_), q = x_dbl.narrow(1, R_ + N_, N_);  // [B, N]
    Tensor beta = ops::sigmoid(dt_proj->forward(x_dbl.narrow(1, 0, R_)));  // [B, E]
    Tensor k2 = ops::mul(k, k);                                           // [B, N]
    Tensor eps = ops::div(beta, ops::add_scalar(ops::mul(beta, ops::sum(k2, {1}, true)), 1.0));  // [B, E]
    Tensor forget = ops::add_scalar(ops::neg(ops::mul(eps.unsqueeze(2), k2.unsqueeze(1))), 1.0);  // 1 − ε k²
    Tensor write = ops::mul(ops::mul(eps, u).unsqueeze(2), k.unsqueeze(1));  // [B, E, N]
    state.ssm_state = ops::add(ops::mul(forget, state.ssm_state), write);
    const Tensor offset = state_offset();
    Tensor h = offset.defined() ? ops::add(state.ssm_state, offset) : state.ssm_state;
    Tensor y = ops::add(ops::sum(ops::mul(h, q.unsqueeze(1)), {2}), ops::mul(effective("D"), u));  // [B, E]
    if (hook_output_offset.defined()) y = ops::add(y, hook_output_offset);
    return ops::mul(y, ops::silu(z));  // [B, E]
}

}  // namespace ssmtune::models
