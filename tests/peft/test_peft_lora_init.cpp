// LoRA inits that read the base weight (peft/lora_init.cpp): PiSSA, pissa_niter_K, OLoRA, orthogonal; the
// plain-LoRA form of a PiSSA / OLoRA adapter (Adapter::save_as_lora, `ssmtune convert`); the refusals.
#include <cmath>

#include "peft/lora_init.h"
#include "tests/peft/peft_test_util.h"
#include "tests/tools/cli_test_util.h"

using namespace ssmtune;
using namespace ssmtune::peft_test;
using json = nlohmann::json;

namespace {

Tensor weight_of(Subject& s, const std::string& name) {
    for (auto& [n, t] : s.module().named_parameters())
        if (n == name) return t;
    FAIL("no parameter " << name);
    return Tensor();
}

Tensor lora_tensor(const peft::Adapter& a, const std::string& name) {
    for (auto& [n, t] : a.named_parameters())
        if (n == name) return t.detach();
    FAIL("no adapter tensor " << name);
    return Tensor();
}

double max_abs(const Tensor& t) {
    double m = 0;
    for (double v : t.to_vector<double>()) m = std::max(m, std::abs(v));
    return m;
}

double frobenius2(const Tensor& t) {
    double m = 0;
    for (double v : t.to_vector<double>()) m += v * v;
    return m;
}

// Three AdamW steps on the adapter's tensors (so B A has moved from its start).
void train(Subject& s, peft::Adapter& a) {
    autograd::AdamW opt(a.parameters(), autograd::AdamW::Options().lr(1e-2).weight_decay(0.0));
    for (int step = 0; step < 3; ++step) {
        s.loss().backward();
        opt.step();
        opt.zero_grad();
    }
}

}  // namespace

TEST_CASE("peft battery: LORA with PiSSA, pissa_niter, OLoRA and orthogonal inits") {
    BatteryOptions o;
    o.mergeable = true;
    o.zero_init = false;  // W − s·B A + s·B A is the base to rounding, not bit for bit (checked below)
    for (const char* init : {"pissa", "olora", "pissa_niter_2", "orthogonal"}) {
        run_battery("mamba", {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"init_lora_weights", init}}, o);
        run_battery("longhorn", {{"peft_type", "LORA"}, {"r", 2}, {"init_lora_weights", init},
                                 {"target_modules", {"in_proj", "out_proj"}}}, o);
        run_battery("s4d", {{"peft_type", "LORA"}, {"r", 2}, {"init_lora_weights", init},
                            {"target_modules", {"encoder", "decoder"}}}, o);
    }
    o.gradcheck = false;  // DoRA holds its norm constant (tests/peft/test_peft_methods.cpp checks that)
    run_battery("mamba", {{"peft_type", "LORA"}, {"r", 2}, {"use_dora", true}, {"init_lora_weights", "pissa"}}, o);
}

TEST_CASE("peft PiSSA: s B A is the best rank-r part of W, the base becomes the rest, outputs start at the base") {
    for (const char* init : {"pissa", "pissa_niter_3"}) {
        INFO(std::string(init));
        Subject s = make_subject("mamba");
        const Tensor out0 = s.output().detach();
        const std::string module = "backbone.layers.1.mixer.in_proj";  // W [32, 8]
        const Tensor w = weight_of(s, module + ".weight").detach().clone();
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(
            {{"peft_type", "LORA"}, {"r", 3}, {"lora_alpha", 6}, {"init_lora_weights", init}, {"target_modules", {"in_proj", "x_proj"}}}));
        testing::expect_close(s.output(), out0, 0.0, 1e-12, "adapted output at the start");
        const Tensor A = lora_tensor(a, module + ".lora_A.weight"), B = lora_tensor(a, module + ".lora_B.weight");
        const Tensor res = weight_of(s, module + ".weight").detach();
        const double scale = 2.0;
        const Tensor sba = ops::mul_scalar(ops::matmul(B, A), scale);
        testing::expect_close(ops::add(res, sba), w, 0.0, 1e-12, "residual + s B A = W");
        // a truncated SVD: the residual is orthogonal to A's rows and B's columns, A Aᵀ = Bᵀ B = diag(S_r / s) in
        // descending order, and the residual's energy is what the truncation leaves. The randomized SVD (a tall W,
        // so torch's rule sketches Wᵀ) gives W P Pᵀ for an approximate right subspace P: A's side and the energy
        // split hold exactly, B's side only as well as P approximates (test "svd_lowrank" below)
        const double tol = 1e-12;
        CHECK(max_abs(ops::matmul(res, A.transpose(0, 1))) < tol * 10);
        if (std::string(init) == "pissa") CHECK(max_abs(ops::matmul(B.transpose(0, 1), res)) < tol * 10);
        const Tensor aat = ops::matmul(A, A.transpose(0, 1)), btb = ops::matmul(B.transpose(0, 1), B);
        testing::expect_close(aat, btb, 0.0, 1e-12, "A Aᵀ = Bᵀ B");
        const auto g = aat.to_vector<double>();
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j)
                if (i != j) CHECK(std::abs(g[size_t(i * 3 + j)]) < 1e-12);
        CHECK(g[0] >= g[4]);
        CHECK(g[4] >= g[8]);
        CHECK(std::abs(frobenius2(sba) + frobenius2(res) - frobenius2(w)) < tol * frobenius2(w));
        // detach: the original weight, bit for bit
        a.detach();
        CHECK(bit_equal(weight_of(s, module + ".weight"), w));
        CHECK(bit_equal(s.output(), out0));
    }
}

TEST_CASE("peft svd_lowrank: the leading singular values of a matrix with a known spectrum") {
    // M = Q1 diag(σ) Q2ᵀ with orthonormal Q1 [9, 5], Q2 [6, 5] (from the exact PiSSA path on a random matrix)
    const std::vector<double> sigma = {10, 5, 1, 0.1, 0.01};
    Subject s = make_subject("mamba");
    peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(
        {{"peft_type", "LORA"}, {"r", 5}, {"lora_alpha", 5}, {"init_lora_weights", "pissa"}, {"target_modules", {"out_proj"}}}));
    const Tensor B = lora_tensor(a, "backbone.layers.0.mixer.out_proj.lora_B.weight");  // [8, 5], orthogonal columns
    const Tensor A = lora_tensor(a, "backbone.layers.0.mixer.out_proj.lora_A.weight");  // [5, 16]
    const Tensor bn = ops::div(B, ops::sqrt(ops::sum(ops::mul(B, B), {0})));             // orthonormal columns
    const Tensor an = ops::div(A, ops::sqrt(ops::sum(ops::mul(A, A), {1})).unsqueeze(1));  // orthonormal rows
    const Tensor m = ops::matmul(ops::mul(bn, Tensor::from_vector(sigma, {5})), an);      // [8, 16]
    for (int64_t niter : {2, 4}) {
        Generator gen(11);
        const auto low = peft::svd_lowrank(m.to_vector<double>(), 8, 16, 3, niter, gen);
        REQUIRE(low.s.size() == 3);
        for (size_t i = 0; i < 3; ++i) CHECK(low.s[i] == doctest::Approx(sigma[i]).epsilon(niter == 2 ? 1e-6 : 1e-10));
    }
    Generator gen(1);
    CHECK_THROWS_WITH_AS(peft::svd_lowrank(m.to_vector<double>(), 8, 16, 9, 2, gen), doctest::Contains("q = 9"), Error);
}

TEST_CASE("peft OLoRA: B = Q[:, :r] orthonormal, A = R[:r] upper triangular with LAPACK's signs, W = W_res + s B A") {
    Subject s = make_subject("longhorn");
    const std::string module = "backbone.layers.0.mixer.out_proj";  // W [8, 16]
    const Tensor w = weight_of(s, module + ".weight").detach().clone();
    peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(
        {{"peft_type", "LORA"}, {"r", 3}, {"lora_alpha", 3}, {"init_lora_weights", "olora"}, {"target_modules", {"out_proj"}}}));  // s = 1
    const Tensor A = lora_tensor(a, module + ".lora_A.weight"), B = lora_tensor(a, module + ".lora_B.weight");
    const auto btb = ops::matmul(B.transpose(0, 1), B).to_vector<double>();
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) CHECK(std::abs(btb[size_t(i * 3 + j)] - (i == j ? 1.0 : 0.0)) < 1e-13);  // Bᵀ B = I
    const auto av = A.to_vector<double>(), wv = w.to_vector<double>();
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < i; ++j) CHECK(av[size_t(i * 16 + j)] == 0.0);
    // Householder as geqrf: R[0, 0] = −sign(W[0, 0]) ‖W[:, 0]‖
    double col0 = 0;
    for (int i = 0; i < 8; ++i) col0 += wv[size_t(i * 16)] * wv[size_t(i * 16)];
    CHECK(av[0] == doctest::Approx(-std::copysign(std::sqrt(col0), wv[0])).epsilon(1e-12));
    // with s = 1 the first r columns of W are Q_r R_r[:, :r] exactly, so the residual's are zero
    const Tensor res = weight_of(s, module + ".weight").detach();
    CHECK(max_abs(ops::slice(res, 1, 0, 3)) < 1e-13);
    testing::expect_close(ops::add(res, ops::matmul(B, A)), w, 0.0, 1e-13, "W_res + s B A = W");
}

TEST_CASE("peft orthogonal init: B A = 0 with both factors non-zero, odd ranks refused") {
    Subject s = make_subject("mamba");
    const Tensor out0 = s.output().detach();
    const Tensor w = weight_of(s, "backbone.layers.0.mixer.x_proj.weight").detach().clone();
    peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(
        {{"peft_type", "LORA"}, {"r", 4}, {"init_lora_weights", "orthogonal"}}));
    CHECK(bit_equal(weight_of(s, "backbone.layers.0.mixer.x_proj.weight"), w));  // the base stays
    const Tensor A = lora_tensor(a, "backbone.layers.0.mixer.x_proj.lora_A.weight");
    const Tensor B = lora_tensor(a, "backbone.layers.0.mixer.x_proj.lora_B.weight");
    CHECK(max_abs(A) > 1e-3);
    CHECK(max_abs(B) > 1e-3);
    CHECK(max_abs(ops::matmul(B, A)) < 1e-15);
    testing::expect_close(s.output(), out0, 0.0, 1e-14, "output at the start");
    a.detach();
    Subject t = make_subject("mamba");
    CHECK(apply_error(t.module(), R"({"peft_type": "LORA", "r": 3, "init_lora_weights": "orthogonal"})")
              .find("even rank") != std::string::npos);
    CHECK(apply_error(t.module(), R"({"peft_type": "LORA", "r": 65536, "init_lora_weights": "orthogonal"})")
              .find("4096 allowed") != std::string::npos);  // refused before the r × r draw
}

TEST_CASE("peft LoRA inits: what is refused, and why") {
    Subject s = make_subject("mamba");
    // dt_proj [16, 2]: PiSSA cannot take 3 components of a rank-2 weight
    const std::string big = apply_error(s.module(), R"({"peft_type": "LORA", "r": 3, "init_lora_weights": "pissa"})");
    CHECK(big.find("dt_proj") != std::string::npos);
    CHECK(big.find("min(16, 2) = 2") != std::string::npos);
    for (auto& [n, t] : s.module().named_parameters()) CHECK(t.requires_grad());  // left as it was
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "r": 2, "lora_alpha": -2, "init_lora_weights": "pissa"})")
              .find("positive scale") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "init_lora_weights": "loftq"})").find("quantised") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "init_lora_weights": "eva"})").find("activation") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "init_lora_weights": "pissa_niter_"})").find("pissa_niter_K") != std::string::npos);
    // a huge iteration count is refused before any work (it would run for hours)
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "init_lora_weights": "pissa_niter_1001"})").find("0 to 1000") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "init_lora_weights": "pissa_niter_99999999"})").find("0 to 1000") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "init_lora_weights": "pissa", "lora_bias": true})")
              .find("lora_bias needs") != std::string::npos);
    Subject c = make_subject("s4d");  // the default targets include output_linear.0, a 1x1 Conv1d
    CHECK(apply_error(c.module(), R"({"peft_type": "LORA", "r": 2, "init_lora_weights": "olora"})").find("1x1 Conv1d") != std::string::npos);
    // a failed apply leaves no rewritten weight behind
    Subject fresh = make_subject("s4d");
    for (auto& [n, t] : c.module().named_parameters()) CHECK(bit_equal(t, weight_of(fresh, n)));
}

TEST_CASE("peft save_as_lora: a trained PiSSA / OLoRA adapter as a rank-2r plain LoRA of the original base") {
    struct Variant {
        json config;
        std::string probe;  // a module whose tensors double
    };
    const std::vector<Variant> variants = {
        {{{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"init_lora_weights", "pissa"}}, "backbone.layers.0.mixer.in_proj"},
        {{{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 3}, {"use_rslora", true}, {"init_lora_weights", "olora"},
          {"rank_pattern", {{"out_proj", 1}}}, {"alpha_pattern", {{"in_proj", 5}}}}, "backbone.layers.1.mixer.out_proj"},
        // the embedding keeps HF's embedding init (A zero), its B0 rides along; DoRA's magnitude is kept
        {{{"peft_type", "LORA"}, {"r", 2}, {"init_lora_weights", "pissa_niter_2"}, {"use_dora", true},
          {"target_modules", {"embeddings", "x_proj"}}}, "backbone.embeddings"},
    };
    for (const Variant& v : variants) {
        INFO(v.config.dump());
        Subject s = make_subject("mamba");
        const Tensor out0 = s.output().detach();
        peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(v.config));
        train(s, a);
        const Tensor adapted = s.output().detach();
        const auto dir = testing::scratch_dir("peft_save_as_lora");
        a.save_as_lora((dir / "plain").string());
        a.save((dir / "native").string());
        a.detach();
        CHECK(bit_equal(s.output(), out0));  // the original base again

        const json cfg = models::read_json_file((dir / "plain" / "adapter_config.json").string());
        CHECK(cfg["init_lora_weights"] == true);
        CHECK(cfg["r"] == 2 * v.config["r"].get<int64_t>());
        const double factor = v.config.value("use_rslora", false) ? std::sqrt(2.0) : 2.0;
        CHECK(cfg["lora_alpha"].get<double>() == doctest::Approx(factor * v.config.value("lora_alpha", 8.0)));
        if (v.config.contains("rank_pattern")) {
            CHECK(cfg["rank_pattern"]["out_proj"] == 2);
            CHECK(cfg["alpha_pattern"]["in_proj"].get<double>() == doctest::Approx(5 * std::sqrt(2.0)));
        }
        // the plain LoRA on the unmodified base computes the adapted model
        peft::Adapter plain = peft::load(s.module(), (dir / "plain").string());
        testing::expect_close(s.output(), adapted, 0.0, 1e-12, "plain LoRA on the original base");
        const std::string a_name = v.probe + (v.probe == "backbone.embeddings" ? ".lora_embedding_A" : ".lora_A.weight");
        const int64_t r = lora_tensor(plain, a_name).size(0);
        CHECK(r == 2 * (v.probe.find("out_proj") != std::string::npos ? 1 : 2));
        plain.merge();
        testing::expect_close(s.output(), adapted, 0.0, 1e-12, "merged plain LoRA");

        // and the native form loads onto the original base too (the init runs again, as HF's from_pretrained)
        Subject t = make_subject("mamba");
        peft::Adapter native = peft::load(t.module(), (dir / "native").string());
        CHECK(bit_equal(t.output(), adapted));
    }
    // an adapter that never touched the base has nothing to convert
    Subject s = make_subject("mamba");
    peft::Adapter plain = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 2})"));
    CHECK_THROWS_WITH_AS(plain.save_as_lora(testing::scratch_dir("peft_no_convert").string()),
                         doctest::Contains("save() it"), Error);
}

TEST_CASE("peft PiSSA: disable gives the base bit for bit, enable the adapted model bit for bit") {
    Subject s = make_subject("mamba");
    const Tensor out0 = s.output().detach();
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(
        R"({"peft_type": "LORA", "r": 2, "init_lora_weights": "pissa_niter_1", "target_modules": ["in_proj", "out_proj"]})"));
    train(s, a);
    const Tensor adapted = s.output().detach();
    a.disable();
    CHECK(bit_equal(s.output(), out0));
    a.enable();
    CHECK(bit_equal(s.output(), adapted));
}

TEST_CASE("peft commands: convert writes a PiSSA adapter as a plain LoRA, other adapters are refused") {
    const auto dir = testing::scratch_dir("peft_cli_convert");
    Subject s = make_subject("longhorn");
    s.module().to(DType::F32);
    models::save_model((dir / "base").string(), s.any);
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(
        R"({"peft_type": "LORA", "r": 2, "init_lora_weights": "pissa", "target_modules": ["x_proj", "out_proj"]})"));
    train(s, a);
    const Tensor adapted = s.output().detach();
    a.save((dir / "pissa").string());
    a.detach();
    const auto ok = testing::cli_captured({"convert", "--model", (dir / "base").string(), "--adapter",
                                           (dir / "pissa").string(), "--out", (dir / "plain").string()}, 1);
    REQUIRE(ok.first == 0);
    CHECK(ok.second.find("plain LoRA of rank 4") != std::string::npos);
    peft::Adapter plain = peft::load(s.module(), (dir / "plain").string());
    testing::expect_close(s.output(), adapted, 1e-5, 1e-5, "converted adapter (float32)");
    plain.detach();
    a = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 2})"));
    a.save((dir / "lora").string());
    CHECK(testing::cli({"convert", "--model", (dir / "base").string(), "--adapter", (dir / "lora").string(), "--out",
                        (dir / "never").string()}) == 1);
    CHECK_FALSE(std::filesystem::exists(dir / "never"));
    CHECK(testing::cli({"convert", "--model", (dir / "base").string()}) == 2);
}
