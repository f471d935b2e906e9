// S4D classifier golden test: the fused model (s4d_kernel, causal_conv, layernorm ops) against an independent
// float64 composite written with primitive ops only — the kernel from exp/sin/cos on real and imaginary parts
// (ZOH: K[h,l] = 2·Re Σ_n C̃_n e^{ΔA_n l}, C̃ = C·(e^{ΔA} − 1)/A; bilinear: Ā = (1 + ΔA/2)/(1 − ΔA/2),
// C̃ = C·Δ/(1 − ΔA/2), powers Ā^l by repeated complex multiplication), the causal convolution as a sum of
// shifted copies, D skip, GELU, 1×1 conv → GLU, residual, LayerNorm from means, mean over L, decoder. Logits,
// loss and every parameter gradient agree for post-norm and pre-norm, ZOH and bilinear, S4D-Lin and S4D-Inv.
#include "test_util.h"

#include "models/s4d_model.h"

using namespace ssmtune;
using namespace ssmtune::testing;
using namespace ssmtune::models;

namespace {

S4DConfig tiny(bool prenorm, const std::string& init, const std::string& disc) {
    S4DConfig c;
    c.d_input = 2;
    c.d_output = 3;
    c.d_model = 4;  // H
    c.d_state = 6;  // N: 3 complex modes
    c.n_layers = 2;
    c.prenorm = prenorm;
    c.dropout = 0.0;
    c.init = init;
    c.discretization = disc;
    return c;
}

// A complex tensor as its real and imaginary parts, with the few operations the kernel needs.
struct Cx {
    Tensor re, im;
};
Cx cmul(const Cx& a, const Cx& b) {
    return {ops::sub(ops::mul(a.re, b.re), ops::mul(a.im, b.im)), ops::add(ops::mul(a.re, b.im), ops::mul(a.im, b.re))};
}
Cx cdiv(const Cx& a, const Cx& b) {  // a / b = a·conj(b) / |b|²
    Tensor den = ops::add(ops::mul(b.re, b.re), ops::mul(b.im, b.im));
    return {ops::div(ops::add(ops::mul(a.re, b.re), ops::mul(a.im, b.im)), den),
            ops::div(ops::sub(ops::mul(a.im, b.re), ops::mul(a.re, b.im)), den)};
}

// K [H, L] from the kernel parameters, primitive ops only.
Tensor composite_kernel(S4DKernel& k, int64_t L, bool bilinear) {
    const DType f = DType::F64;
    Tensor dt = ops::exp(k.log_dt()).unsqueeze(1);                                // Δ [H, 1]
    Cx A{ops::neg(ops::exp(k.log_A_real())), k.A_imag()};                         // [H, M]
    Cx z{ops::mul(dt, A.re), ops::mul(dt, A.im)};                                 // ΔA
    Cx C{k.C().select(2, 0), k.C().select(2, 1)};                                 // [H, M]
    if (!bilinear) {
        // C̃ = C·(e^z − 1)/A;  K_l = 2 Σ_n e^{Re z·l} (Re C̃ cos(Im z·l) − Im C̃ sin(Im z·l))
        Tensor mag1 = ops::exp(z.re);
        Cx ez_minus_1{ops::add_scalar(ops::mul(mag1, ops::cos(z.im)), -1.0), ops::mul(mag1, ops::sin(z.im))};
        Cx Ct = cmul(C, cdiv(ez_minus_1, A));
        Tensor l = Tensor::arange(0.0, double(L), 1.0, f);                            // [L]
        Tensor mag = ops::exp(ops::mul(z.re.unsqueeze(2), l)), phase = ops::mul(z.im.unsqueeze(2), l);  // [H, M, L]
        Tensor terms = ops::sub(ops::mul(Ct.re.unsqueeze(2), ops::cos(phase)), ops::mul(Ct.im.unsqueeze(2), ops::sin(phase)));
        return ops::mul_scalar(ops::sum(ops::mul(mag, terms), {1}), 2.0);
    }
    // Bilinear: Ā = (1 + z/2)/(1 − z/2), C̃ = C·Δ/(1 − z/2);  K_l = 2 Σ_n Re(C̃ Ā^l), Ā^l by repeated products.
    Cx den{ops::add_scalar(ops::mul_scalar(z.re, -0.5), 1.0), ops::mul_scalar(z.im, -0.5)};
    Cx a_bar = cdiv({ops::add_scalar(ops::mul_scalar(z.re, 0.5), 1.0), ops::mul_scalar(z.im, 0.5)}, den);
    Cx Ct = cmul(C, cdiv({dt, Tensor::zeros({1, 1}, f)}, den));  // Δ as a complex number, broadcast
    Cx power{Tensor::ones(den.re.shape(), f), Tensor::zeros(den.re.shape(), f)};  // Ā^0
    std::vector<Tensor> columns;
    for (int64_t l = 0; l < L; ++l) {
        columns.push_back(ops::mul_scalar(ops::sum(cmul(Ct, power).re, {1}, true), 2.0));  // [H, 1]
        power = cmul(power, a_bar);
    }
    return ops::concat(columns, 1);
}

// y[b, h, t] = Σ_{l ≤ t} K[h, l] u[b, h, t − l]: a sum of copies of u shifted right by l.
Tensor composite_causal_conv(const Tensor& u, const Tensor& K) {
    const int64_t B = u.size(0), H = u.size(1), L = u.size(2);
    Tensor y = Tensor::zeros({B, H, L}, u.dtype());
    for (int64_t l = 0; l < L; ++l) {
        Tensor shifted = l == 0 ? u : ops::concat({Tensor::zeros({B, H, l}, u.dtype()), u.narrow(2, 0, L - l)}, 2);
        y = ops::add(y, ops::mul(shifted, K.narrow(1, l, 1)));  // K[:, l] as [H, 1]
    }
    return y;
}

// LayerNorm over the last dim from means: (x − μ)/√(σ² + ε)·w + b (biased variance, as PyTorch).
Tensor composite_layernorm(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
    Tensor xc = ops::sub(x, ops::mean(x, {-1}, true));
    Tensor var = ops::mean(ops::mul(xc, xc), {-1}, true);
    return ops::add(ops::mul(ops::mul(xc, ops::rsqrt(ops::add_scalar(var, eps))), w), b);
}

// LayerNorm over channels of x [B, H, L].
Tensor norm_channels(S4DClassifier& model, int64_t i, const Tensor& x) {
    const std::string n = "norms." + std::to_string(i);
    return composite_layernorm(x.transpose(1, 2), *model.find_parameter(n + ".weight"),
                               *model.find_parameter(n + ".bias"), 1e-5)
        .transpose(1, 2);
}

Tensor composite_layer(S4DLayer& layer, const Tensor& u, bool bilinear) {
    const int64_t H = u.size(1), L = u.size(2);
    Tensor K = composite_kernel(*layer.kernel, L, bilinear);
    Tensor y = ops::add(composite_causal_conv(u, K), ops::mul(u, layer.D().unsqueeze(1)));  // K * u + D u
    y = ops::gelu(y);
    Tensor w = layer.output_linear().weight().reshape({2 * H, H});
    Tensor v = ops::linear(y.transpose(1, 2), w, layer.output_linear().bias());  // [B, L, 2H]
    Tensor glu = ops::mul(v.narrow(2, 0, H), ops::sigmoid(v.narrow(2, H, H)));   // [B, L, H]
    return glu.transpose(1, 2);                                                  // [B, H, L]
}

Tensor composite_logits(S4DClassifier& model, const Tensor& x) {
    const S4DConfig& c = model.config();
    Tensor h = ops::linear(x, model.encoder().weight(), *model.encoder().bias()).transpose(1, 2);  // [B, H, L]
    for (int64_t i = 0; i < model.num_layers(); ++i) {
        Tensor z = c.prenorm ? norm_channels(model, i, h) : h;
        h = ops::add(composite_layer(model.layer(i), z, c.discretization == "bilinear"), h);
        if (!c.prenorm) h = norm_channels(model, i, h);
    }
    return ops::linear(ops::mean(h, {2}), model.decoder().weight(), *model.decoder().bias());
}

// Adds seeded noise to every parameter of an F64 model (in place, no graph), away from init symmetries.
void perturb(Module& model, uint64_t seed, double scale) {
    uint64_t k = 0;
    for (auto& [name, p] : model.named_parameters()) {
        Tensor noise = Tensor::randn(p.shape(), seed + 131 * ++k, DType::F64);
        double* d = p.data<double>();
        const double* n = noise.data<double>();
        for (int64_t i = 0; i < p.numel(); ++i) d[i] += scale * n[i];
    }
}

}  // namespace

TEST_CASE("s4d golden: fused classifier equals the float64 composite (post/pre-norm, ZOH/bilinear, Lin/Inv)") {
    struct Variant {
        bool prenorm;
        const char* init;
        const char* disc;
    };
    double worst = 0;
    for (const Variant v : {Variant{false, "lin", "zoh"}, Variant{true, "lin", "zoh"}, Variant{false, "inv", "zoh"},
                            Variant{true, "inv", "bilinear"}, Variant{false, "lin", "bilinear"}}) {
        const std::string label = std::string(v.prenorm ? "pre-norm " : "post-norm ") + v.init + " " + v.disc;
        INFO(label);
        S4DClassifier model(tiny(v.prenorm, v.init, v.disc), 17);
        model.to(DType::F64);
        model.eval();
        perturb(model, 23, 0.05);
        Tensor x = Tensor::randn({2, 7, 2}, 29, DType::F64);
        Tensor labels = Tensor::from_vector<int64_t>({2, 0}, {2});

        Tensor logits = model.forward(x);
        Tensor loss = ops::cross_entropy(logits, labels);
        loss.backward();
        std::map<std::string, Tensor> fused;
        for (auto& [name, p] : model.named_parameters()) {
            fused[name] = p.grad();
            p.zero_grad();
        }
        Tensor ref_logits = composite_logits(model, x);
        Tensor ref_loss = ops::cross_entropy(ref_logits, labels);
        ref_loss.backward();
        expect_close(logits, ref_logits, 1e-10, 1e-12, "logits");
        expect_close(loss, ref_loss, 1e-10, 1e-12, "loss");
        CHECK(model.named_parameters().size() == 4 + 2 * 9);  // encoder 2, decoder 2, per layer 9 (incl. norm)
        for (auto& named : model.named_parameters()) {
            const std::string& name = named.first;  // not a structured binding: the messages capture it
            const Tensor& p = named.second;
            REQUIRE_MESSAGE(fused[name].defined(), name);
            REQUIRE_MESSAGE(p.grad().defined(), name);
            const CloseReport r = compare(fused[name], p.grad(), 1e-9, 1e-12);
            INFO(name << ": " << r.message);
            CHECK(r.ok);
            double max_ref = 0;
            for (double g : p.grad().to_vector<double>()) max_ref = std::max(max_ref, std::fabs(g));
            CHECK_MESSAGE(max_ref > 0, name << " has an all-zero gradient");
            worst = std::max(worst, r.max_abs / max_ref);
        }
    }
    MESSAGE("s4d golden: worst gradient difference / max |gradient| = " << worst);
}

TEST_CASE("s4d golden: the composite kernel equals ops::s4d_kernel at S4D-Inv scale and longer L") {
    // Independent of the classifier: N = 64 S4D-Inv imaginary parts (up to ≈ 1.3e3) and L = 300.
    for (const char* disc : {"zoh", "bilinear"}) {
        S4DConfig c = tiny(false, "inv", disc);
        c.d_state = 64;
        Generator gen(3);
        S4DKernel k(c, gen);
        k.to(DType::F64);
        const bool bilinear = std::string(disc) == "bilinear";
        const std::string label = disc;
        INFO(label);
        expect_close(composite_kernel(k, 300, bilinear), k.forward(300), 1e-9, 1e-10, "K");
    }
}
