// S4D classifier: config, inits, convolution-mode forward and recurrent mode (see s4d_model.h; math in
// reference/ssm-models.md §2).
#include "models/s4d_model.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <iterator>

#include "autograd/checkpoint.h"
#include "autograd/node.h"
#include "engine/json_read.h"
#include "ops/ops.h"
#include "ops/ssm.h"

namespace ssmtune::models {

// ---------------------------------------------------------------- config
S4DConfig S4DConfig::from_json(const nlohmann::json& j, const std::string& source) {
    SSMTUNE_CHECK(j.is_object(), source, ": expected a JSON object");
    std::string type;
    read_json_field(j, "model_type", type, source);
    SSMTUNE_CHECK(type == "s4d", source, ": model_type \"", type, "\" is not \"s4d\"");
    // Our own format (example.py has no config file), so every field is ours and an unknown one is refused: a typo
    // ("n_layer") used to build the default model silently, and S4 options we do not build ("bidirectional") with it.
    static const char* const known[] = {"model_type", "d_input", "d_output", "d_model", "d_state", "n_layers",
                                        "prenorm", "dropout", "init", "discretization", "dt_min", "dt_max"};
    for (const auto& item : j.items()) {
        const std::string& key = item.key();
        if (std::find_if(std::begin(known), std::end(known), [&](const char* k) { return key == k; }) != std::end(known))
            continue;
        std::string valid;
        for (const char* k : known) valid += (valid.empty() ? "" : ", ") + std::string(k);
        SSMTUNE_FAIL(source, ": unknown S4D config field \"", key, "\"; valid: ", valid,
                     key == "lr" ? "; fix: the SSM tensors' learning rate (example.py's S4D lr) is the run config's "
                                   "train.ssm_lr"
                                 : "; fix: remove it or correct its name (this S4D builds example.py's S4Model only)");
    }
    S4DConfig c;
    read_json_field(j, "d_input", c.d_input, source);
    read_json_field(j, "d_output", c.d_output, source);
    read_json_field(j, "d_model", c.d_model, source);
    read_json_field(j, "d_state", c.d_state, source);
    read_json_field(j, "n_layers", c.n_layers, source);
    read_json_field(j, "prenorm", c.prenorm, source);
    read_json_field(j, "dropout", c.dropout, source);
    read_json_field(j, "init", c.init, source);
    read_json_field(j, "discretization", c.discretization, source);
    read_json_field(j, "dt_min", c.dt_min, source);
    read_json_field(j, "dt_max", c.dt_max, source);
    c.validate(source);
    return c;
}

nlohmann::json S4DConfig::to_json() const {
    return {{"model_type", "s4d"}, {"d_input", d_input}, {"d_output", d_output}, {"d_model", d_model},
            {"d_state", d_state}, {"n_layers", n_layers}, {"prenorm", prenorm}, {"dropout", dropout},
            {"init", init}, {"discretization", discretization}, {"dt_min", dt_min}, {"dt_max", dt_max}};
}

void S4DConfig::validate(const std::string& source) const {
    for (auto [v, name] : {std::pair<int64_t, const char*>{d_input, "d_input"}, {d_output, "d_output"},
                           {d_model, "d_model"}, {d_state, "d_state"}, {n_layers, "n_layers"}})
        SSMTUNE_CHECK(v > 0, source, ": field \"", name, "\" must be positive, got ", v);
    SSMTUNE_CHECK(d_state % 2 == 0, source, ": field \"d_state\" must be even (N/2 complex modes), got ", d_state);
    SSMTUNE_CHECK(dropout >= 0 && dropout < 1, source, ": field \"dropout\" must be in [0, 1), got ", dropout);
    SSMTUNE_CHECK(init == "lin" || init == "inv" || init == "real", source, ": field \"init\" must be lin, inv or real");
    SSMTUNE_CHECK(discretization == "zoh" || discretization == "bilinear", source,
                  ": field \"discretization\" must be zoh or bilinear");
    SSMTUNE_CHECK(dt_min > 0 && dt_max >= dt_min, source, ": dt_min/dt_max must satisfy 0 < dt_min <= dt_max");
}

double S4DConfig::num_parameters() const {
    const double H = double(d_model), M = double(d_state / 2);
    const double layer = H + (H + 2 * H * M + H * M + H * M) + (2 * H * H + 2 * H) + 2 * H;  // D, kernel, output_linear, norm
    return double(d_input) * H + H + double(n_layers) * layer + H * double(d_output) + double(d_output);
}

// ---------------------------------------------------------------- kernel
S4DKernel::S4DKernel(const S4DConfig& c, Generator& gen) : bilinear_(c.discretization == "bilinear") {
    const int64_t H = c.d_model, M = c.d_state / 2, N = c.d_state;
    Tensor u = Tensor::uniform({H}, gen, 0.0, 1.0, DType::F64);
    Tensor log_dt = Tensor::empty({H});
    for (int64_t h = 0; h < H; ++h)
        log_dt.data<float>()[h] =
            float(u.data<double>()[h] * (std::log(c.dt_max) - std::log(c.dt_min)) + std::log(c.dt_min));
    register_parameter("log_dt", log_dt);
    // C ~ complex standard normal: real and imaginary parts N(0, 1/2) (torch.randn with cfloat).
    register_parameter("C", Tensor::randn({H, M, 2}, gen, DType::F32, 0.0, std::sqrt(0.5)));
    Tensor log_a_real = Tensor::empty({H, M}), a_imag = Tensor::empty({H, M});
    for (int64_t h = 0; h < H; ++h) {
        for (int64_t n = 0; n < M; ++n) {
            double re = 0.5, im = 0.0;
            if (c.init == "lin") im = M_PI * double(n);
            else if (c.init == "inv") im = double(N) / M_PI * (double(N) / double(2 * n + 1) - 1.0);
            else re = double(n + 1);  // S4D-Real: A_n = −(n+1)
            log_a_real.data<float>()[h * M + n] = float(std::log(re));
            a_imag.data<float>()[h * M + n] = float(im);
        }
    }
    register_parameter("log_A_real", log_a_real);
    register_parameter("A_imag", a_imag);
}

Tensor S4DKernel::forward(int64_t L) {
    return ops::s4d_kernel(effective(size_t(0)), effective(size_t(1)), effective(size_t(2)), effective(size_t(3)), L,
                           bilinear_ ? ops::S4DDiscretization::Bilinear : ops::S4DDiscretization::ZOH);
}

// ---------------------------------------------------------------- layer

S4DLayer::S4DLayer(const S4DConfig& c, Generator& gen) : config_(c) {
    register_parameter("D", Tensor::randn({c.d_model}, gen));
    kernel = register_module("kernel", std::make_shared<S4DKernel>(c, gen));
    auto seq = register_module("output_linear", std::make_shared<ModuleGroup>("Sequential"));
    output_linear_ = seq->add("0", std::make_shared<PointwiseConv1d>(c.d_model, 2 * c.d_model, gen));
}

Tensor S4DLayer::output_conv(const Tensor& y) {
    Tensor v = output_linear_->forward(y);  // [B, 2H, L]
    const int64_t H = config_.d_model;
    return ops::mul(v.narrow(1, 0, H), ops::sigmoid(v.narrow(1, H, H)));  // GLU over channels
}

Tensor S4DLayer::forward(const Tensor& u, Generator& dropout_gen) {
    const int64_t L = u.size(2);
    Tensor K = kernel->forward(L);                                    // [H, L]
    Tensor y = ops::add(ops::causal_conv(u, K), ops::mul(u, effective(size_t(0)).unsqueeze(1)));  // K * u + D u
    if (has_state_offset()) y = ops::add(y, state_offset_response().unsqueeze(1));
    if (hook_initial_state.defined())  // + 2·Re Σ_n C_n Ā_n^{t+1} h0_n: the recurrence started from s_{−1} = h0
        y = ops::add(y, ops::s4d_initial_state_response(
                            kernel->effective("log_dt"), kernel->effective("C"), kernel->effective("log_A_real"),
                            kernel->effective("A_imag"), hook_initial_state, L,
                            config_.discretization == "bilinear" ? ops::S4DDiscretization::Bilinear
                                                                 : ops::S4DDiscretization::ZOH).unsqueeze(0));
    if (hook_output_offset.defined()) y = ops::add(y, hook_output_offset.unsqueeze(1));
    y = ops::gelu(y);
    if (is_training() && config_.dropout > 0) {  // DropoutNd: one mask value per (b, h), tied across L
        Tensor mask = ops::dropout(Tensor::ones({u.size(0), u.size(1), 1}, u.dtype(), u.device()), config_.dropout, true,
                                   dropout_gen);
        y = ops::mul(y, mask);
    }
    return output_conv(y);
}

// 2·Re Σ_n C_n h′_n per channel: the read-out of a constant state offset h′ [H, N/2, 2] → [H].
Tensor S4DLayer::state_offset_response() {
    Tensor C = kernel->effective("C");  // [H, N/2, 2]
    const int64_t H = config_.d_model, M = config_.d_state / 2;
    const Tensor& A = hook_state_offset_lora_A;  // low rank: [H, r] · [r, 2M] -> [H, M, 2]
    const Tensor h = hook_state_offset.defined()
                         ? hook_state_offset
                         : ops::matmul(hook_state_offset_lora_B, A.reshape({A.size(0), 2 * M})).reshape({H, M, 2});
    Tensor re = ops::sub(ops::mul(C.narrow(2, 0, 1), h.narrow(2, 0, 1)),
                         ops::mul(C.narrow(2, 1, 1), h.narrow(2, 1, 1)));  // [H, M, 1]
    return ops::mul_scalar(ops::sum(re.reshape({config_.d_model, M}), {1}), 2.0);
}

S4DState S4DLayer::initial_state(int64_t batch, DType dtype) const {
    const Shape shape{batch, config_.d_model, config_.d_state / 2, 2};
    if (!hook_initial_state.defined()) return {Tensor::zeros(shape, dtype)};
    return {hook_initial_state.detach().to(dtype).unsqueeze(0).expand(shape).contiguous()};
}

Tensor S4DLayer::step(const Tensor& u, S4DState& state) {
    // One frame of the diagonal recurrence, per channel h and mode n (complex on real pairs, in double):
    //   ZOH: Ā = exp(ΔA), B̄ = (exp(ΔA) − 1)/A;  bilinear: Ā = (1 + ΔA/2)/(1 − ΔA/2), B̄ = Δ/(1 − ΔA/2)
    //   s ← Ā s + B̄ u;  y = 2 Re(Σ_n C_n s_n) + D u
    const int64_t B = u.size(0), H = config_.d_model, M = config_.d_state / 2;
    const std::vector<double> log_dt = kernel->effective("log_dt").to_vector<double>(),
                              C = kernel->effective("C").to_vector<double>(),
                              lar = kernel->effective("log_A_real").to_vector<double>(),
                              ai = kernel->effective("A_imag").to_vector<double>(), Dv = effective("D").to_vector<double>(),
                              uv = u.to_vector<double>();
    std::vector<double> s = state.s.to_vector<double>(), y(size_t(B * H));
    for (int64_t h = 0; h < H; ++h) {
        const double dt = std::exp(log_dt[size_t(h)]);
        for (int64_t n = 0; n < M; ++n) {
            const std::complex<double> A(-std::exp(lar[size_t(h * M + n)]), ai[size_t(h * M + n)]);
            const std::complex<double> dtA = dt * A, c(C[size_t((h * M + n) * 2)], C[size_t((h * M + n) * 2 + 1)]);
            std::complex<double> a_bar, b_bar;
            if (config_.discretization == "bilinear") {
                a_bar = (1.0 + dtA / 2.0) / (1.0 - dtA / 2.0);
                b_bar = dt / (1.0 - dtA / 2.0);
            } else {
                a_bar = std::exp(dtA);
                b_bar = (a_bar - 1.0) / A;
            }
            for (int64_t b = 0; b < B; ++b) {
                const size_t si = size_t(((b * H + h) * M + n) * 2);
                std::complex<double> st(s[si], s[si + 1]);
                st = a_bar * st + b_bar * uv[size_t(b * H + h)];
                s[si] = st.real();
                s[si + 1] = st.imag();
                y[size_t(b * H + h)] += 2.0 * (c * st).real();
            }
        }
    }
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h) y[size_t(b * H + h)] += Dv[size_t(h)] * uv[size_t(b * H + h)];
    state.s = Tensor::from_vector<double>(s, state.s.shape()).to(u.dtype());
    Tensor yt = Tensor::from_vector<double>(y, {B, H}).to(u.dtype()).to(u.device());  // state.s stays on the host
    if (has_state_offset()) yt = ops::add(yt, state_offset_response().detach());
    if (hook_output_offset.defined()) yt = ops::add(yt, hook_output_offset);
    return output_conv(ops::gelu(yt).unsqueeze(2)).squeeze(2);
}

// ---------------------------------------------------------------- classifier
S4DClassifier::S4DClassifier(const S4DConfig& config, uint64_t seed) : config_(config), dropout_gen_(seed ^ 0x5d4dull) {
    config_.validate();
    Generator gen(seed);
    encoder_ = register_module("encoder", std::make_shared<Linear>(config.d_input, config.d_model, true, gen));
    auto layers = register_module("s4_layers", std::make_shared<ModuleGroup>("Sequential"));
    auto norms = register_module("norms", std::make_shared<ModuleGroup>("Sequential"));
    for (int64_t i = 0; i < config.n_layers; ++i) {
        layers_.push_back(layers->add(std::to_string(i), std::make_shared<S4DLayer>(config, gen)));
        norms_.push_back(norms->add(std::to_string(i), std::make_shared<LayerNorm>(config.d_model)));
    }
    decoder_ = register_module("decoder", std::make_shared<Linear>(config.d_model, config.d_output, true, gen));
}

namespace {
// LayerNorm over channels of x [B, H, L].
Tensor norm_channels(LayerNorm& norm, const Tensor& x) { return norm.forward(x.transpose(1, 2)).transpose(1, 2); }

// Dropout1d after each layer: one mask value per (b, h), tied across L.
Tensor channel_dropout(const Tensor& z, double p, bool training, Generator& gen) {
    if (!training || p == 0) return z;
    return ops::mul(z, ops::dropout(Tensor::ones({z.size(0), z.size(1), 1}, z.dtype(), z.device()), p, true, gen));
}
}  // namespace

Tensor S4DClassifier::forward(const Tensor& x) {
    return decoder_->forward(ops::mean(features(x), {2}));  // mean over L, then [B, d_output]
}

Tensor S4DClassifier::forward_sequence(const Tensor& x) {
    return decoder_->forward(features(x).transpose(1, 2));  // [B, L, d_output]
}

Tensor S4DClassifier::features(const Tensor& x) {
    SSMTUNE_CHECK(x.dim() == 3 && x.size(2) == config_.d_input, "S4D classifier input must be [B, L, d_input=",
                  config_.d_input, "], got ", x.describe());
    Tensor h = encoder_->forward(x).transpose(1, 2);  // [B, H, L]
    const bool checkpointing = gradient_checkpointing() && is_training() && autograd::grad_enabled();
    std::vector<Generator*> generators;
    if (checkpointing) {
        generators = training_generators(*this);
        generators.push_back(&dropout_gen_);
    }
    for (size_t i = 0; i < layers_.size(); ++i) {
        const auto layer = [this, i](const Tensor& in) {
            Tensor z = config_.prenorm ? norm_channels(*norms_[i], in) : in;
            Tensor o = layers_[i]->add_delta(layers_[i]->forward(z, dropout_gen_), z);  // + Δ(z) with an adapter
            z = channel_dropout(o, config_.dropout, is_training(), dropout_gen_);
            Tensor out = ops::add(z, in);
            return config_.prenorm ? out : norm_channels(*norms_[i], out);
        };
        h = checkpointing ? autograd::checkpoint(layer, h, generators) : layer(h);
    }
    return h;
}

Tensor S4DClassifier::loss(const Tensor& x, const Tensor& labels) {
    SSMTUNE_CHECK(labels.dim() == 1 && labels.size(0) == x.size(0), "labels must be [B=", x.size(0), "], got ",
                  labels.describe());
    return ops::cross_entropy(forward(x), labels);
}

Tensor S4DClassifier::forward_recurrent(const Tensor& x) {
    SSMTUNE_CHECK(!is_training(), "forward_recurrent runs in evaluation mode; fix: call eval() first");
    autograd::NoGradGuard no_grad;
    const int64_t B = x.size(0), L = x.size(1);
    std::vector<S4DState> states;
    for (auto& l : layers_) states.push_back(l->initial_state(B, x.dtype()));
    Tensor sum = Tensor::zeros({B, config_.d_model}, x.dtype(), x.device());
    for (int64_t t = 0; t < L; ++t) {
        Tensor h = encoder_->forward(x.select(1, t));  // [B, H]
        for (size_t i = 0; i < layers_.size(); ++i) {
            Tensor z = config_.prenorm ? norms_[i]->forward(h) : h;
            h = ops::add(layers_[i]->add_delta(layers_[i]->step(z, states[i]), z), h);
            if (!config_.prenorm) h = norms_[i]->forward(h);
        }
        sum = ops::add(sum, h);
    }
    return decoder_->forward(ops::mul_scalar(sum, 1.0 / double(L)));
}

}  // namespace ssmtune::models
