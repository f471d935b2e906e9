// `ssmtune gradcheck --op NAME | --model-type mamba|longhorn|s4d | --model DIR`: a float64 finite-difference check
// printed as a table (tensor, elements checked, max abs error, max rel error, verdict) — a teaching tool: it shows
// that every hand-written backward in the project (the fused scans included) matches central differences.
// Ops are checked on small seeded inputs; models (a tiny one of the type, or a model directory converted to
// float64) are checked for every parameter, sampling --max-per-tensor elements of each.
// Exit status 0 when every tensor passes, 1 otherwise.
#include <cstdio>
#include <functional>
#include <map>

#include "autograd/gradcheck.h"
#include "models/checkpoint.h"
#include "ops/ops.h"
#include "ops/ssm.h"
#include "tools/commands.h"

namespace ssmtune::tools {

namespace {

using Fn = autograd::TensorFn;
struct Case {
    std::vector<std::string> names;
    std::vector<Tensor> inputs;
    Fn f;
};

Tensor r(const Shape& s, uint64_t seed, double scale = 1.0) {
    return ops::mul_scalar(Tensor::randn(s, seed, DType::F64), scale).detach().set_requires_grad(true);
}

// A weighted sum makes every output element matter with a different weight.
Tensor weighted(const Tensor& y) { return ops::sum(ops::mul(y, Tensor::randn(y.shape(), 999, DType::F64))); }

const std::map<std::string, std::function<Case()>>& op_cases() {
    static const std::map<std::string, std::function<Case()>> m = {
        {"selective_scan", [] {
             // u, delta (pre-softplus), A (negative), B, C, D, z, delta_bias
             Case c{{"u", "delta", "A", "B", "C", "D", "z", "delta_bias"},
                    {r({2, 3, 6}, 1), r({2, 3, 6}, 2, 0.5), ops::neg(ops::exp(r({3, 4}, 3, 0.3))).detach().set_requires_grad(true),
                     r({2, 4, 6}, 4), r({2, 4, 6}, 5), r({3}, 6), r({2, 3, 6}, 7), r({3}, 8, 0.3)},
                    nullptr};
             c.f = [](const std::vector<Tensor>& x) {
                 ops::SelectiveScanOptions o;
                 o.D = x[5]; o.z = x[6]; o.delta_bias = x[7]; o.delta_softplus = true; o.checkpoint_every = 2;
                 return weighted(ops::selective_scan(x[0], x[1], x[2], x[3], x[4], o).out);
             };
             return c;
         }},
        {"longhorn_scan", [] {
             Case c{{"x", "dt", "k", "q", "D", "z"},
                    {r({2, 3, 6}, 1), r({2, 3, 6}, 2), r({2, 4, 6}, 3, 0.5), r({2, 4, 6}, 4), r({3}, 5), r({2, 3, 6}, 6)},
                    nullptr};
             c.f = [](const std::vector<Tensor>& x) {
                 ops::LonghornScanOptions o;
                 o.D = x[4]; o.z = x[5]; o.checkpoint_every = 2;
                 return weighted(ops::longhorn_scan(x[0], x[1], x[2], x[3], o).out);
             };
             return c;
         }},
        {"s4d_kernel", [] {
             Case c{{"log_dt", "C", "log_A_real", "A_imag"}, {r({3}, 1, 0.5), r({3, 2, 2}, 2), r({3, 2}, 3, 0.3), r({3, 2}, 4)}, nullptr};
             c.f = [](const std::vector<Tensor>& x) { return weighted(ops::s4d_kernel(x[0], x[1], x[2], x[3], 9)); };
             return c;
         }},
        {"causal_conv", [] {  // the long convolution y = K * u
             Case c{{"u", "K"}, {r({2, 3, 10}, 1), r({3, 10}, 2)}, nullptr};
             c.f = [](const std::vector<Tensor>& x) { return weighted(ops::causal_conv(x[0], x[1])); };
             return c;
         }},
        {"conv1d", [] {  // Mamba's depthwise causal conv
             Case c{{"x", "weight", "bias"}, {r({2, 3, 7}, 1), r({3, 1, 4}, 2), r({3}, 3)}, nullptr};
             c.f = [](const std::vector<Tensor>& x) { return weighted(ops::causal_conv1d(x[0], x[1], x[2])); };
             return c;
         }},
        {"linear", [] {
             Case c{{"x", "weight", "bias"}, {r({2, 3, 5}, 1), r({4, 5}, 2), r({4}, 3)}, nullptr};
             c.f = [](const std::vector<Tensor>& x) { return weighted(ops::linear(x[0], x[1], x[2])); };
             return c;
         }},
        {"rmsnorm", [] {
             Case c{{"x", "weight"}, {r({3, 6}, 1), r({6}, 2)}, nullptr};
             c.f = [](const std::vector<Tensor>& x) { return weighted(ops::rmsnorm(x[0], x[1], 1e-5)); };
             return c;
         }},
        {"layernorm", [] {
             Case c{{"x", "weight", "bias"}, {r({3, 6}, 1), r({6}, 2), r({6}, 3)}, nullptr};
             c.f = [](const std::vector<Tensor>& x) { return weighted(ops::layernorm(x[0], x[1], x[2], 1e-5)); };
             return c;
         }},
        {"cross_entropy", [] {
             Case c{{"logits"}, {r({4, 5}, 1)}, nullptr};
             c.f = [](const std::vector<Tensor>& x) {
                 return ops::cross_entropy(x[0], Tensor::from_vector<int64_t>({0, 3, -100, 4}, {4}));
             };
             return c;
         }},
        {"softplus", [] {
             Case c{{"x"}, {r({12}, 1, 5.0)}, nullptr};
             c.f = [](const std::vector<Tensor>& x) { return weighted(ops::softplus(x[0])); };
             return c;
         }},
        {"silu", [] {
             Case c{{"x"}, {r({12}, 1, 3.0)}, nullptr};
             c.f = [](const std::vector<Tensor>& x) { return weighted(ops::silu(x[0])); };
             return c;
         }},
        {"gelu", [] {
             Case c{{"x"}, {r({12}, 1, 3.0)}, nullptr};
             c.f = [](const std::vector<Tensor>& x) { return weighted(ops::gelu(x[0])); };
             return c;
         }},
    };
    return m;
}

// A tiny model of the type, or a model directory; in float64, evaluation mode.
models::AnyModel model_for(const Flags& flags) {
    if (flags.is_set("model")) return models::load_model(flags.str("model"));
    const std::string type = flags.str("model-type");
    nlohmann::json cfg;
    if (type == "s4d")
        cfg = {{"model_type", "s4d"}, {"d_input", 2}, {"d_output", 3}, {"d_model", 4}, {"d_state", 4}, {"n_layers", 2},
               {"dropout", 0.0}};
    else if (type == "mamba" || type == "longhorn")
        cfg = {{"model_type", type}, {"vocab_size", 11}, {"hidden_size", 8}, {"num_hidden_layers", 2},
               {"state_size", 4}, {"intermediate_size", 16}, {"conv_kernel", 3}, {"time_step_rank", 2}};
    else
        throw UsageError("gradcheck: --model-type must be mamba, longhorn or s4d, got '" + type + "'");
    return models::create_model(cfg, 1, "--model-type " + type);
}

}  // namespace

int run_gradcheck(int argc, char** argv) {
    Flags flags(argc, argv, {{"op", ""}, {"model", ""}, {"model-type", ""}, {"max-per-tensor", "16"},
                             {"eps", "1e-6"}, {"atol", "1e-6"}, {"rtol", "1e-5"}}, "gradcheck");
    std::string ops_list;
    for (auto& [n, _] : op_cases()) ops_list += (ops_list.empty() ? "" : ", ") + n;
    if (flags.help()) {
        std::printf("usage: ssmtune gradcheck (--op NAME | --model-type mamba|longhorn|s4d | --model DIR)\n"
                    "                         [--max-per-tensor 16] [--eps 1e-6] [--atol 1e-6] [--rtol 1e-5]\n"
                    "Compares autograd's gradients with central finite differences in float64 and prints a table.\n"
                    "ops: %s\n", ops_list.c_str());
        return 0;
    }
    const int given = int(flags.is_set("op")) + int(flags.is_set("model")) + int(flags.is_set("model-type"));
    if (given != 1) throw UsageError("gradcheck: give exactly one of --op, --model-type and --model");
    autograd::GradcheckOptions opt;
    opt.eps = flags.number("eps");
    opt.atol = flags.number("atol");
    opt.rtol = flags.number("rtol");
    // found by fuzzing the flags: --eps -1 ran a finite difference of step 1 and reported FAILs
    if (!(opt.eps > 0)) throw UsageError("gradcheck: --eps must be a positive step (e.g. 1e-6)");
    if (!(opt.atol >= 0 && opt.rtol >= 0)) throw UsageError("gradcheck: --atol and --rtol must be >= 0");
    Case c;
    std::string title;
    models::AnyModel model;
    if (flags.is_set("op")) {
        auto it = op_cases().find(flags.str("op"));
        if (it == op_cases().end()) throw UsageError("gradcheck: unknown op '" + flags.str("op") + "'; known: " + ops_list);
        c = it->second();
        title = "op " + flags.str("op");
    } else {
        model = model_for(flags);
        model.module().to(DType::F64);
        model.module().eval();
        opt.max_checked_per_input = flags.integer("max-per-tensor", 0, Flags::kMaxSize);  // 0: every element
        for (auto& [name, t] : model.module().named_parameters()) {
            c.names.push_back(name);
            c.inputs.push_back(t);
        }
        if (model.lm && model.lm->reads_frames()) {
            const auto& lc = model.lm->config();
            Tensor x = Tensor::randn({2, 5, lc.input_size}, 5, DType::F64);
            Tensor y = Tensor::from_vector<int64_t>({0, lc.vocab_size - 1}, {2});
            c.f = [model, x, y](const std::vector<Tensor>&) { return ops::cross_entropy(model.lm->classify_frames(x), y); };
        } else if (model.lm) {
            const int64_t V = model.lm->config().vocab_size;
            std::vector<int64_t> ids;
            for (int64_t i = 0; i < 12; ++i) ids.push_back((i * 7 + 3) % V);
            Tensor batch = Tensor::from_vector<int64_t>(ids, {2, 6});
            c.f = [model, batch](const std::vector<Tensor>&) { return model.lm->loss(batch); };
        } else {
            const auto& sc = model.s4d->config();
            Tensor x = Tensor::randn({2, 5, sc.d_input}, 5, DType::F64);
            Tensor y = Tensor::from_vector<int64_t>({0, sc.d_output - 1}, {2});
            c.f = [model, x, y](const std::vector<Tensor>&) { return model.s4d->loss(x, y); };
        }
        title = model.model_type + " model loss";
    }
    const autograd::GradcheckReport rep = autograd::gradcheck(c.f, c.inputs, opt);
    std::printf("gradcheck of %s (float64, eps %g, atol %g, rtol %g)\n", title.c_str(), opt.eps, opt.atol, opt.rtol);
    std::printf("%-44s %8s %14s %14s  %s\n", "tensor", "checked", "max abs err", "max rel err", "verdict");
    for (const auto& in : rep.inputs)
        std::printf("%-44s %8lld %14.3e %14.3e  %s\n", c.names.at(size_t(in.index)).c_str(), (long long)in.checked,
                    in.max_abs_error, in.max_rel_error, in.ok ? "ok" : "FAIL");
    std::printf("%s\n", rep.ok ? "all gradients match" : "some gradients do NOT match finite differences");
    if (!rep.ok) {  // exit 1 like every failure, with its one error line for scripts that read stderr
        int64_t failed = 0;
        for (const auto& in : rep.inputs) failed += !in.ok;
        std::fprintf(stderr, "error: gradcheck of %s: %lld of %zu tensors do not match finite differences (the table "
                     "above); fix: check the backward, or a smaller --eps / looser --atol --rtol if the function is "
                     "not smooth at this step\n", title.c_str(), (long long)failed, rep.inputs.size());
    }
    return rep.ok ? 0 : 1;
}

}  // namespace ssmtune::tools
