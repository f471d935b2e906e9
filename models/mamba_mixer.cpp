// Mamba-1 mixer: init, parallel forward through the fused selective scan, and the one-token step
// (see mamba_mixer.h; math in reference/ssm-models.md §1.3 and §1.7).
#include "models/mamba_mixer.h"

#include <cmath>

#include "autograd/node.h"
#include "ops/ops.h"
#include "ops/ssm.h"

namespace ssmtune::models {

MambaMixer::MambaMixer(const LMConfig& c, Generator& gen)
    : E_(c.intermediate_size), N_(c.state_size), R_(c.time_step_rank) {
    const int64_t D = c.hidden_size;
    // A_log = log(1..N) for every channel (S4D-Real), D = 1.
    Tensor a_log = Tensor::empty({E_, N_});
    for (int64_t e = 0; e < E_; ++e)
        for (int64_t n = 0; n < N_; ++n) a_log.data<float>()[e * N_ + n] = float(std::log(double(n + 1)));
    register_parameter("A_log", a_log);
    register_parameter("D", Tensor::ones({E_}));

    in_proj = register_module("in_proj", std::make_shared<Linear>(D, 2 * E_, c.use_bias, gen));
    conv1d = register_module("conv1d", std::make_shared<DepthwiseConv1d>(E_, c.conv_kernel, c.use_conv_bias, gen));
    x_proj = register_module("x_proj", std::make_shared<Linear>(E_, R_ + 2 * N_, false, gen));
    dt_proj = register_module("dt_proj", std::make_shared<Linear>(R_, E_, true, gen));
    out_proj = register_module("out_proj", std::make_shared<Linear>(E_, D, c.use_bias, gen));

    // dt_proj.weight: U(±R^-1/2 · scale) ("random") or the constant R^-1/2 · scale.
    const double dt_std = std::pow(double(R_), -0.5) * c.time_step_scale;
    dt_proj->weight() = c.time_step_init_scheme == "constant"
                            ? Tensor::full({E_, R_}, dt_std)
                            : Tensor::uniform({E_, R_}, gen, -dt_std, dt_std);
    dt_proj->weight().set_requires_grad(true);
    // dt_proj.bias = softplus⁻¹(dt), dt = exp(U(log dt_min, log dt_max)) clamped at dt_floor;
    // softplus⁻¹(dt) = dt + log(−expm1(−dt)) (expm1 keeps small dt accurate).
    Tensor u = Tensor::uniform({E_}, gen, 0.0, 1.0, DType::F64);
    Tensor bias = Tensor::empty({E_});
    for (int64_t e = 0; e < E_; ++e) {
        double dt = std::exp(u.data<double>()[e] * (std::log(c.time_step_max) - std::log(c.time_step_min)) +
                             std::log(c.time_step_min));
        dt = std::max(dt, c.time_step_floor);
        bias.data<float>()[e] = float(dt + std::log(-std::expm1(-dt)));
    }
    *dt_proj->bias() = bias.set_requires_grad(true);
    // Linear biases start at zero (mamba_ssm's _init_weights), except dt_proj's.
    if (c.use_bias) {
        *in_proj->bias() = Tensor::zeros({2 * E_}).set_requires_grad(true);
        *out_proj->bias() = Tensor::zeros({D}).set_requires_grad(true);
    }
    // out_proj re-drawn with kaiming-uniform(a=√5) = U(±1/√E) and divided by √n_layer (rescale_prenorm_residual).
    if (c.rescale_prenorm_residual) {
        const double bound = 1.0 / std::sqrt(double(E_)) / std::sqrt(double(c.num_hidden_layers));
        out_proj->weight() = Tensor::uniform({D, E_}, gen, -bound, bound).set_requires_grad(true);
    }
}

Tensor MambaMixer::forward(const Tensor& hidden) {
    // hidden [B, L, D]
    Tensor xz = in_proj->forward(hidden);                           // [B, L, 2E]
    Tensor x = xz.narrow(2, 0, E_).transpose(1, 2).contiguous();    // [B, E, L]
    Tensor z = xz.narrow(2, E_, E_).transpose(1, 2).contiguous();   // [B, E, L]
    const int64_t P = prepend_prefix(x, z);                         // PEFT prefix: x, z [B, E, P + L]
    Tensor u = ops::silu(causal_conv(*conv1d, x));                  // [B, E, L]
    Tensor x_dbl = x_proj->forward(u.transpose(1, 2));              // [B, L, R + 2N]
    Tensor dt = x_dbl.narrow(2, 0, R_);                             // [B, L, R]
    Tensor B = x_dbl.narrow(2, R_, N_).transpose(1, 2).contiguous();       // [B, N, L]
    Tensor C = x_dbl.narrow(2, R_ + N_, N_).transpose(1, 2).contiguous();  // [B, N, L]
    // dt_proj with its bias; the bias sits inside the softplus either way (mamba_ssm passes it as delta_bias).
    Tensor delta = dt_proj->forward(dt).transpose(1, 2).contiguous();      // [B, E, L]
    Tensor A = ops::neg(ops::exp(effective(size_t(0))));                                // [E, N]
    ops::SelectiveScanOptions opt;
    opt.D = effective(size_t(1));
    opt.z = z;
    opt.delta_softplus = true;
    opt.h0 = hook_initial_state;
    opt.state_offset = state_offset();
    opt.output_offset = hook_output_offset;
    Tensor y = ops::selective_scan(u, delta, A, B, C, opt).out;            // [B, E, L]
    if (hook_A_log_ext.defined()) {  // the k added states: their own scan, same u, Δ and gate, no D (already in y)
        Tensor ut = u.transpose(1, 2);                                     // [B, L, E]
        ops::SelectiveScanOptions ext;
        ext.z = z;
        ext.delta_softplus = true;
        Tensor B_ext = ops::linear(ut, hook_B_ext).transpose(1, 2).contiguous();  // [B, k, L]
        Tensor C_ext = ops::linear(ut, hook_C_ext).transpose(1, 2).contiguous();  // [B, k, L]
        Tensor A_ext = ops::neg(ops::exp(hook_A_log_ext));                        // [E, k]
        y = ops::add(y, ops::selective_scan(u, delta, A_ext, B_ext, C_ext, ext).out);
    }
    if (P > 0) y = y.narrow(2, P, y.size(2) - P);                          // drop the prefix positions
    return out_proj->forward(y.transpose(1, 2));                           // [B, L, D]
}

MixerState MambaMixer::initial_state(int64_t batch, DType dtype) {
    const int64_t k = hook_A_log_ext.defined() ? hook_A_log_ext.size(1) : 0;  // Additional-scan's states after the N
    return start_state(batch, dtype, E_, N_ + k, conv1d->kernel(), in_proj->weight().device());  // with the weights
}

Tensor MambaMixer::step(const Tensor& hidden, MixerState& state) {
    // hidden [B, D]; the same math as forward for one time step, with the conv window and h carried over.
    Tensor xz = in_proj->forward(hidden);                    // [B, 2E]
    return out_proj->forward(step_inner(xz.narrow(1, 0, E_), xz.narrow(1, E_, E_), state));  // [B, D]
}

Tensor MambaMixer::step_inner(const Tensor& x, const Tensor& z, MixerState& state) {
    // x, z [B, E] (after in_proj, or a prefix row with z = 0) -> y ⊙ SiLU(z) [B, E]
    const int64_t K = conv1d->kernel();
    state.conv_state = ops::concat({state.conv_state.narrow(2, 1, K - 1), x.unsqueeze(2)}, 2);  // [B, E, K]
    Tensor xc = ops::sum(ops::mul(state.conv_state, conv1d->effective_weight().reshape({E_, K})), {2});  // [B, E]
    if (conv1d->bias()) xc = ops::add(xc, conv1d->effective_bias());
    Tensor u = ops::silu(xc);                                         // [B, E]
    Tensor x_dbl = x_proj->forward(u);                                // [B, R + 2N]
    Tensor dt = x_dbl.narrow(1, 0, R_);
    Tensor B = x_dbl.narrow(1, R_, N_), C = x_dbl.narrow(1, R_ + N_, N_);  // [B, N]
    Tensor delta = ops::softplus(dt_proj->forward(dt));               // [B, E]
    Tensor A = ops::neg(ops::exp(effective(size_t(0))));                           // [E, N]
    if (hook_A_log_ext.defined()) {  // Additional-scan: one recurrence over N + k states
        A = ops::concat({A, ops::neg(ops::exp(hook_A_log_ext))}, 1);                // [E, N + k]
        B = ops::concat({B, ops::linear(u, hook_B_ext)}, 1);                         // [B, N + k]
        C = ops::concat({C, ops::linear(u, hook_C_ext)}, 1);
    }
    Tensor dA = ops::exp(ops::mul(delta.unsqueeze(2), A));            // [B, E, N]
    Tensor dBu = ops::mul(ops::mul(delta, u).unsqueeze(2), B.unsqueeze(1));
    state.ssm_state = ops::add(ops::mul(dA, state.ssm_state), dBu);  // h_t
    const Tensor offset = state_offset();
    Tensor h = offset.defined() ? ops::add(state.ssm_state, offset) : state.ssm_state;
    Tensor y = ops::add(ops::sum(ops::mul(h, C.unsqueeze(1)), {2}), ops::mul(effective(size_t(1)), u));  // [B, E]
    if (hook_output_offset.defined()) y = ops::add(y, hook_output_offset);
    return ops::mul(y, ops::silu(z));                                 // [B, E]
}

}  // namespace ssmtune::models
