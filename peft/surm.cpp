// SURM: structured unrestricted-rank matrices as PEFT (Sehanobish et al. 2024; reference/peft-methods.md §5).
//
// mode "lora" (default): out = W x + b + α·S(dropout(x)), S a structured ΔW [out, in] (mergeable: W += α·dense(S)):
//   circulant  C3A-style block circulant: c [out/b, in/b, b], b = block_size (default gcd(in, out)); c = 0 at start.
//              Products by FFT (ops::block_circulant_matmul).
//   toeplitz   product of two symmetric Toeplitz matrices T(t_b)·T(t_a) of size n = max(in, out), truncated to
//              [out, in] (x zero-padded to n, the output cut to out); t_a ~ N(0, 0.02²), t_b = 0.
//   kronecker  ΔW = (α/r)·(B ⊗ A), A [r, in/r] Kaiming-uniform, B [out/r, r] zero; r = kron_factor (default: the
//              largest divisor of gcd(in, out) that is ≤ 8).
//   ldr        low displacement rank: Σ_{i<k} circ(g_i)·skewcirc(s_i) of size n = max(in, out), truncated as
//              toeplitz; k = ldr_rank, g = 0, s ~ N(0, 0.02²).
// mode "adapter": a sequential adapter after the module, out ← out + act(S out) + bias with a square structured
// S over the output (structure as above at n = out; circulant uses one block), bias zero, act = `activation`
// (gelu by default, as the SURM adapters). S starts at zero so the output is unchanged; not mergeable.
// Tensor names: <module>.surm.{c | toeplitz_a, toeplitz_b | kron_A, kron_B | ldr_g, ldr_s}[, surm.bias].
// Targets: Linear modules and S4D's 1×1 output conv (channels first); default in_proj and out_proj (LMs),
// output_linear.0 (S4D).
// Not here: a trainable α, the "use_prod" circulant (c = a ⊙ b) of the official code (one zero-initialised
// c per block instead: same function class, half the parameters).
#include <cmath>
#include <numeric>

#include "autograd/node.h"
#include "engine/tensor_copy.h"
#include "ops/ops.h"
#include "ops/structured_matrix.h"
#include "peft/method.h"

namespace ssmtune::peft {

using json = nlohmann::json;

namespace {

struct SurmSettings {
    std::string structure, mode, activation;
    int64_t block_size = 0, ldr_rank = 1, kron_factor = 0;
    double alpha = 1.0, dropout = 0.0;
    bool random_init = false;
};

int64_t largest_divisor_at_most(int64_t g, int64_t cap) {
    for (int64_t d = std::min(g, cap); d >= 1; --d)
        if (g % d == 0) return d;
    return 1;
}

Tensor act(const std::string& name, const Tensor& x) {
    if (name == "gelu") return ops::gelu(x);
    if (name == "relu") return ops::relu(x);
    if (name == "silu") return ops::silu(x);
    return x;  // identity
}

// Pads the last dim of x from `in` to `n` with zeros.
Tensor pad_last(const Tensor& x, int64_t n) {
    const int64_t in = x.size(-1);
    if (in == n) return x;
    Shape zs = x.shape();
    zs.back() = n - in;
    return ops::concat({x, Tensor::zeros(zs, x.dtype(), x.device())}, x.dim() - 1);
}

class SurmDelta : public models::OutputDelta {
public:
    SurmDelta(int64_t in, int64_t out, bool channels_first, const SurmSettings& s, Generator& gen, DType dtype,
              const std::string& where)
        : s_(s), in_(in), out_(out), channels_first_(channels_first), drop_gen_(gen.seed() * 31 + gen.advance(1)) {
        const bool adapter = s.mode == "adapter";
        const int64_t fin = adapter ? out : in, fout = out;  // the structured map's input/output sizes
        n_ = std::max(fin, fout);
        auto normal = [&](const Shape& sh) { return Tensor::randn(sh, gen, DType::F64, 0.0, 0.02).to(dtype); };
        // the factor that makes ΔW = 0 at the start; "init": "random" draws it too (tests, warm starts)
        auto zero = [&](const Shape& sh) {
            return s.random_init ? Tensor::randn(sh, gen, DType::F64, 0.0, 0.1).to(dtype) : Tensor::zeros(sh, dtype);
        };
        if (s.structure == "circulant") {
            int64_t b = s.block_size > 0 ? s.block_size : std::gcd(fin, fout);
            if (adapter) b = fout;
            SSMTUNE_CHECK(fin % b == 0 && fout % b == 0, "SURM circulant on ", where, ": block_size ", b,
                          " must divide both in (", fin, ") and out (", fout, "); fix: a common divisor, e.g. ",
                          std::gcd(fin, fout));
            register_parameter("c", zero({fout / b, fin / b, b}));
        } else if (s.structure == "toeplitz") {
            register_parameter("toeplitz_a", normal({n_}));
            register_parameter("toeplitz_b", zero({n_}));
        } else if (s.structure == "kronecker") {
            const int64_t r = s.kron_factor > 0 ? s.kron_factor : largest_divisor_at_most(std::gcd(fin, fout), 8);
            SSMTUNE_CHECK(fin % r == 0 && fout % r == 0, "SURM kronecker on ", where, ": kron_factor ", r,
                          " must divide in (", fin, ") and out (", fout, ")");
            kron_r_ = r;
            const double bound = 1.0 / std::sqrt(double(fin / r));
            register_parameter("kron_A", Tensor::uniform({r, fin / r}, gen, -bound, bound).to(dtype));
            register_parameter("kron_B", zero({fout / r, r}));
        } else {
            register_parameter("ldr_g", zero({s.ldr_rank, n_}));
            register_parameter("ldr_s", normal({s.ldr_rank, n_}));
        }
        if (adapter) register_parameter("bias", zero({out}));
    }

    // S applied to the last dim of v ([..., fin] -> [..., fout]).
    Tensor structured(const Tensor& v) {
        const int64_t fout = out_;
        if (s_.structure == "circulant") return ops::block_circulant_matmul(params_[0].second, v);
        if (s_.structure == "kronecker")
            return ops::mul_scalar(ops::kronecker_matmul(params_[1].second, params_[0].second, v), 1.0 / double(kron_r_));
        Tensor p = pad_last(v, n_), y;
        if (s_.structure == "toeplitz")
            y = ops::symmetric_toeplitz_matmul(params_[1].second, ops::symmetric_toeplitz_matmul(params_[0].second, p));
        else
            y = ops::ldr_matmul(params_[0].second, params_[1].second, p);
        return fout == n_ ? y : y.narrow(y.dim() - 1, 0, fout);
    }

    Tensor to_last(const Tensor& t) { return channels_first_ ? t.transpose(1, 2).contiguous() : t; }
    Tensor from_last(const Tensor& t) { return channels_first_ ? t.transpose(1, 2).contiguous() : t; }

    Tensor forward(const Tensor& x) override {  // lora mode
        Tensor in = is_training() && s_.dropout > 0 ? ops::dropout(x, s_.dropout, true, drop_gen_) : x;
        return from_last(ops::mul_scalar(structured(to_last(in)), s_.alpha));
    }
    Tensor apply(const Tensor& out, const Tensor& x) override {
        if (s_.mode != "adapter") return OutputDelta::apply(out, x);
        Tensor h = to_last(out);
        Tensor in = is_training() && s_.dropout > 0 ? ops::dropout(h, s_.dropout, true, drop_gen_) : h;
        Tensor d = ops::add(act(s_.activation, structured(in)), params_.back().second);
        return ops::add(out, from_last(d));
    }

    // α·dense(S) as [out, in] (lora mode).
    Tensor delta_weight() {
        Tensor dense;
        if (s_.structure == "circulant") dense = ops::block_circulant_dense(params_[0].second);
        else if (s_.structure == "kronecker")
            dense = ops::mul_scalar(ops::kronecker_dense(params_[1].second, params_[0].second), 1.0 / double(kron_r_));
        else {
            Tensor full = s_.structure == "toeplitz"
                              ? ops::matmul(ops::symmetric_toeplitz_dense(params_[1].second),
                                            ops::symmetric_toeplitz_dense(params_[0].second))
                              : ops::ldr_dense(params_[0].second, params_[1].second);
            dense = full.narrow(0, 0, out_).narrow(1, 0, in_).contiguous();
        }
        return ops::mul_scalar(dense, s_.alpha);
    }
    std::string type_name() const override { return "SurmLayer"; }
    Generator* training_generator() override { return s_.dropout > 0 ? &drop_gen_ : nullptr; }

private:
    SurmSettings s_;
    int64_t in_, out_, n_ = 0, kron_r_ = 1;
    bool channels_first_;
    Generator drop_gen_;
};

class SurmMethod : public Method {
public:
    SurmMethod(ModelView& model, const Config& config) {
        const json& c = config.json;
        SurmSettings s;
        s.structure = c["structure"];
        s.mode = c["mode"];
        s.activation = c["activation"];
        s.block_size = c["block_size"];
        s.ldr_rank = c["ldr_rank"];
        s.kron_factor = c["kron_factor"];
        s.alpha = c["surm_alpha"];
        s.dropout = c["surm_dropout"];
        s.random_init = c["init"] == "random";
        SSMTUNE_CHECK(s.structure == "circulant" || s.structure == "toeplitz" || s.structure == "kronecker" ||
                          s.structure == "ldr",
                      "SURM \"structure\" must be circulant, toeplitz, kronecker or ldr, got \"", s.structure, "\"");
        SSMTUNE_CHECK(s.mode == "lora" || s.mode == "adapter", "SURM \"mode\" must be lora or adapter, got \"", s.mode, "\"");
        SSMTUNE_CHECK(s.activation == "gelu" || s.activation == "relu" || s.activation == "silu" || s.activation == "identity",
                      "SURM \"activation\" must be gelu, relu, silu or identity, got \"", s.activation, "\"");
        mode_ = s.mode;
        json cfg = c;
        if (cfg["target_modules"].is_null())
            cfg["target_modules"] = model.s4d ? json::array({"output_linear.0"}) : json::array({"in_proj", "out_proj"});
        targets_ = cfg["target_modules"];
        Generator gen(c["init_seed"].get<uint64_t>());
        auto accept = [](models::Module* m) {
            return dynamic_cast<models::Linear*>(m) || dynamic_cast<models::PointwiseConv1d*>(m);
        };
        try {  // a module that fails (e.g. a block size that does not divide it) leaves none attached
            for (auto& [name, m] : match_targets(model, cfg, accept, "Linear and 1x1 Conv1d modules")) {
                auto* host = static_cast<models::DeltaHost*>(m);
                SSMTUNE_CHECK(!host->delta(), name, " already carries an adapter; fix: detach it first");
                int64_t in, out;
                bool conv = false;
                if (auto* lin = dynamic_cast<models::Linear*>(m)) {
                    in = lin->in_features();
                    out = lin->out_features();
                } else {
                    auto* pc = static_cast<models::PointwiseConv1d*>(m);
                    in = pc->weight().size(1);
                    out = pc->weight().size(0);
                    conv = true;
                }
                auto delta = std::make_shared<SurmDelta>(in, out, conv, s, gen, model.dtype(), name);
                for (auto& [pn, t] : delta->named_parameters()) trainable(t);
                host->attach_delta("surm", delta);
                hosts_.emplace_back(name, host);
            }
        } catch (...) {
            detach();
            throw;
        }
    }
    std::vector<std::pair<std::string, Tensor>> tensors() const override {
        std::vector<std::pair<std::string, Tensor>> out;
        for (auto& [name, host] : hosts_)
            for (auto& [pn, t] : host->delta()->named_parameters()) out.emplace_back(name + ".surm." + pn, t);
        return out;
    }
    std::string merge_refusal() const override {
        return mode_ == "adapter" ? "the SURM adapter applies a nonlinearity to the module output" : "";
    }
    void merge() override {
        for (auto& [name, host] : hosts_) {
            Tensor w = *host->find_parameter("weight");
            Tensor d = static_cast<SurmDelta*>(host->delta())->delta_weight().detach();
            if (w.dim() == 3) d = d.reshape(w.shape());
            Tensor merged = ops::add(w.detach(), d);
            copy_into(w, merged);
        }
    }
    void detach() override {
        for (auto& [name, host] : hosts_) host->detach_delta(host->delta());  // (alone on its host: LoRA shares only with LoRA)
        hosts_.clear();
    }
    json saved_config() const override { return {{"target_modules", targets_}}; }

private:
    std::string mode_;
    json targets_;
    std::vector<std::pair<std::string, models::DeltaHost*>> hosts_;
};

}  // namespace

std::unique_ptr<Method> make_surm(ModelView& model, const Config& config) {
    return std::make_unique<SurmMethod>(model, config);
}

}  // namespace ssmtune::peft
