// AdapterSet::add_weighted_adapter (HF's add_weighted_adapter): cat is exact (the pair active together, and
// Σ w_i s_i B_i A_i per module), linear merges A and B separately with HF's signed square-root weights, svd gives the
// leading singular part of Σ w_i s_i² B_i A_i (HF's double scale) with our sign rule and HF's quantile clamp, the
// merge functions (magnitude pruning, TIES, DARE) against hand-computed values, save → load, and every refusal leaves
// the set as it was. (The command: tests/tools/test_adapter_group.cpp; HF's formulas in PyTorch: the cross-check.)
#include "peft/lora.h"
#include "peft/weighted_adapter.h"

#include "tests/peft/peft_test_util.h"

using namespace ssmtune;
using namespace ssmtune::peft_test;
using nlohmann::json;

namespace {

const json kLoraC = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 4}, {"use_rslora", true}, {"target_modules", {"in_proj", "out_proj"}}};

// s·B A [m, n] of `module` in adapter `a` (an embedding's lora_embedding_B lora_embedding_A [D, V]); empty when the
// adapter has no LoRA there.
std::vector<double> delta(const peft::Adapter& a, const std::string& module, double s, int64_t& m, int64_t& n) {
    std::vector<double> A, B;
    int64_t r = 0;
    for (auto& [name, t] : a.named_parameters()) {
        if (name == module + ".lora_A.weight" || name == module + ".lora_embedding_A") {
            A = t.to_vector<double>();
            r = t.shape()[0];
            n = t.numel() / r;
        }
        if (name == module + ".lora_B.weight" || name == module + ".lora_embedding_B") B = t.to_vector<double>();
    }
    if (r == 0) return {};
    m = int64_t(B.size()) / r;
    std::vector<double> d(size_t(m * n), 0.0);
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < r; ++j)
            for (int64_t c = 0; c < n; ++c) d[size_t(i * n + c)] += s * B[size_t(i * r + j)] * A[size_t(j * n + c)];
    return d;
}

double scale_of(const peft::Adapter& a, const std::string& module) {
    return peft::LoraSettings::from_config(a.saved_config(), module).scale;
}

std::vector<double> factor(const peft::Adapter& a, const std::string& name) {
    for (auto& [n, t] : a.named_parameters())
        if (n == name) return t.to_vector<double>();
    FAIL("no tensor " << name);
    return {};
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const std::string& what) {
    REQUIRE_MESSAGE(got.size() == want.size(), what);
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
    CHECK_MESSAGE(worst <= tol, what << ": off by " << worst);
}

const std::string kInProj = "backbone.layers.0.mixer.in_proj";

}  // namespace

TEST_CASE("peft add_weighted_adapter cat: exact, the pair active together, and each module sums w s B A") {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    peft::AdapterSet set(s.module());
    randomize(set.add("a", peft::Config::from_json(kLoraA)), 1);
    randomize(set.add("b", peft::Config::from_json(kLoraB)), 2);
    set.set_active({"a", "b"});
    const Tensor both = s.output().detach();
    peft::WeightedAdapterOptions cat;
    cat.combination_type = "cat";
    peft::Adapter& ab = set.add_weighted_adapter({"a", "b"}, {1.0, 1.0}, "ab", cat);
    CHECK(set.active() == "a+b");  // added held, as add()
    const json c = ab.saved_config();
    CHECK(c["r"] == 5);  // 2 + max(3, rank_pattern 1)
    CHECK(c["lora_alpha"] == 5);
    CHECK(c["use_rslora"] == false);
    CHECK(c["rank_pattern"] == json::object());
    CHECK(c["target_modules"] == json({"embeddings", "in_proj", "x_proj", "out_proj", "dt_proj"}));
    set.set_active("ab");
    testing::expect_close(s.output(), both, 1e-12, 1e-12, "cat(a, b) vs a+b active");
    // general weights: per module B A = Σ w_i s_i B_i A_i, an adapter absent from a module contributing nothing
    const peft::Adapter& mixed = set.add_weighted_adapter({"a", "b"}, {0.7, -1.3}, "mixed", cat);
    for (const std::string& m : {kInProj, std::string("backbone.layers.1.mixer.dt_proj"), std::string("backbone.embeddings")}) {
        int64_t rows = 0, cols = 0;
        const auto got = delta(mixed, m, 1.0, rows, cols);
        std::vector<double> want(got.size(), 0.0);
        for (auto [name, w] : {std::pair<std::string, double>{"a", 0.7}, {"b", -1.3}}) {
            int64_t r2 = 0, c2 = 0;
            const auto d = delta(set.get(name), m, w * scale_of(set.get(name), m), r2, c2);
            for (size_t i = 0; i < d.size(); ++i) want[i] += d[i];
        }
        check_close(got, want, 1e-12, "cat " + m);
    }
    // saved and loaded (HF's layout): the same outputs on a fresh model
    const auto dir = testing::scratch_dir("peft_weighted_cat");
    set.set_active("mixed");
    const Tensor out = s.output().detach();
    set.get("mixed").save(dir.string());
    Subject fresh = make_subject("mamba", 3, /*tied=*/false);
    peft::load(fresh.module(), dir.string());
    testing::expect_close(fresh.output(), out, 1e-12, 1e-12, "loaded");
}

TEST_CASE("peft add_weighted_adapter linear: A and B merged apart with signed square-root weights, one adapter as itself") {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    peft::AdapterSet set(s.module());
    randomize(set.add("a", peft::Config::from_json(kLoraA)), 3);
    randomize(set.add("c", peft::Config::from_json(kLoraC)), 4);
    set.set_active("a");
    const Tensor out_a = s.output().detach();
    // one adapter is always linear (HF): weight 1 gives the adapter back, s folded into A and B
    peft::WeightedAdapterOptions svd;  // HF's default type, turned linear
    set.add_weighted_adapter({"a"}, {1.0}, "a1", svd);
    set.set_active("a1");
    testing::expect_close(s.output(), out_a, 1e-12, 1e-12, "a alone");
    // c uses rsLoRA: the new adapter does not (HF since peft #3449), and c's scale is folded in
    set.add_weighted_adapter({"c"}, {-0.5}, "c_half");
    {
        int64_t m = 0, n = 0, m2 = 0, n2 = 0;
        const auto got = delta(set.get("c_half"), kInProj, 1.0, m, n);
        auto want = delta(set.get("c"), kInProj, -0.5 * scale_of(set.get("c"), kInProj), m2, n2);
        check_close(got, want, 1e-12, "c weighted -0.5");
    }
    peft::WeightedAdapterOptions linear;
    linear.combination_type = "linear";
    const peft::Adapter& ac = set.add_weighted_adapter({"a", "c"}, {0.6, -2.0}, "ac", linear);
    for (const std::string& m : {kInProj, std::string("backbone.layers.1.mixer.x_proj")}) {  // both, then a only
        for (const char* side : {".lora_A.weight", ".lora_B.weight"}) {
            const auto got = factor(ac, m + side);
            std::vector<double> want(got.size(), 0.0);
            for (auto [name, w] : {std::pair<std::string, double>{"a", 0.6}, {"c", -2.0}}) {
                const peft::Adapter& src = set.get(name);
                bool has = false;
                for (auto& [n, t] : src.named_parameters()) has = has || n == m + side;
                if (!has) continue;
                const double ws = w * scale_of(src, m);
                const double k = std::string(side).find("_A") != std::string::npos ? (ws >= 0 ? 1 : -1) * std::sqrt(std::abs(ws))
                                                                                    : std::sqrt(std::abs(ws));
                const auto f = factor(src, m + side);
                for (size_t i = 0; i < f.size(); ++i) want[i] += k * f[i];
            }
            check_close(got, want, 1e-12, "linear " + m + side);
        }
    }
}

TEST_CASE("peft add_weighted_adapter svd: the leading singular part of the sum with HF's double scale, sign rule, clamp") {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    peft::AdapterSet set(s.module());
    randomize(set.add("a", peft::Config::from_json(kLoraA)), 5);
    randomize(set.add("c", peft::Config::from_json(kLoraC)), 6);
    const double wa = 0.8, wc = 1.7;
    // the sum HF decomposes: Σ w_i s_i (s_i B_i A_i)
    auto target = [&](const std::string& m, int64_t& rows, int64_t& cols) {
        std::vector<double> d;
        for (auto [name, w] : {std::pair<std::string, double>{"a", wa}, {"c", wc}}) {
            const double si = scale_of(set.get(name), m);
            const auto part = delta(set.get(name), m, w * si * si, rows, cols);
            if (part.empty()) continue;
            if (d.empty()) d.assign(part.size(), 0.0);
            for (size_t i = 0; i < part.size(); ++i) d[i] += part[i];
        }
        return d;
    };
    // rank 4 = the sum's rank on in_proj (2 + 2): exact there
    peft::WeightedAdapterOptions full;
    full.svd_rank = 4;
    const peft::Adapter& exact = set.add_weighted_adapter({"a", "c"}, {wa, wc}, "exact", full);
    int64_t m = 0, n = 0;
    const auto want = target(kInProj, m, n);
    check_close(delta(exact, kInProj, 1.0, m, n), want, 1e-10, "svd rank 4 on in_proj");
    // the default rank (max r = 2): A's rows orthonormal, B = D Aᵀ, Dᵀ B = Aᵀ diag(|b_j|²) (singular pairs), |b_j|
    // descending, and nothing of D left above the smallest kept singular value (power iteration on the residual)
    const peft::Adapter& two = set.add_weighted_adapter({"a", "c"}, {wa, wc}, "two");
    const auto A = factor(two, kInProj + ".lora_A.weight"), B = factor(two, kInProj + ".lora_B.weight");
    const int64_t k = 2;
    REQUIRE(int64_t(A.size()) == k * n);
    std::vector<double> sigma2(k, 0.0);
    for (int64_t j = 0; j < k; ++j) {
        for (int64_t l = 0; l < k; ++l) {
            double dot = 0;
            for (int64_t c = 0; c < n; ++c) dot += A[size_t(j * n + c)] * A[size_t(l * n + c)];
            CHECK(dot == doctest::Approx(j == l ? 1.0 : 0.0).epsilon(1e-10));
        }
        double biggest = 0;
        for (int64_t i = 0; i < m; ++i) {
            sigma2[j] += B[size_t(i * k + j)] * B[size_t(i * k + j)];
            if (std::abs(B[size_t(i * k + j)]) > std::abs(biggest)) biggest = B[size_t(i * k + j)];
        }
        CHECK(biggest > 0);  // our sign rule
        for (int64_t i = 0; i < m; ++i) {
            double da = 0;
            for (int64_t c = 0; c < n; ++c) da += want[size_t(i * n + c)] * A[size_t(j * n + c)];
            CHECK(da == doctest::Approx(B[size_t(i * k + j)]).epsilon(1e-9));
        }
        for (int64_t c = 0; c < n; ++c) {
            double db = 0;
            for (int64_t i = 0; i < m; ++i) db += want[size_t(i * n + c)] * B[size_t(i * k + j)];
            CHECK(db == doctest::Approx(A[size_t(j * n + c)] * sigma2[j]).epsilon(1e-9));
        }
    }
    CHECK(sigma2[0] >= sigma2[1]);
    std::vector<double> residual = want, x(size_t(n), 1.0);
    const auto kept = delta(two, kInProj, 1.0, m, n);
    for (size_t i = 0; i < residual.size(); ++i) residual[i] -= kept[i];
    double top2 = 0;
    for (int it = 0; it < 300; ++it) {  // x <- Rᵀ R x / |...|
        std::vector<double> y(size_t(m), 0.0), z(size_t(n), 0.0);
        for (int64_t i = 0; i < m; ++i)
            for (int64_t c = 0; c < n; ++c) y[size_t(i)] += residual[size_t(i * n + c)] * x[size_t(c)];
        for (int64_t i = 0; i < m; ++i)
            for (int64_t c = 0; c < n; ++c) z[size_t(c)] += residual[size_t(i * n + c)] * y[size_t(i)];
        double norm = 0, xn = 0;
        for (int64_t c = 0; c < n; ++c) { norm += z[size_t(c)] * z[size_t(c)]; xn += x[size_t(c)] * x[size_t(c)]; }
        top2 = std::sqrt(norm / xn);  // the top eigenvalue of Rᵀ R = σ_max(R)²
        for (int64_t c = 0; c < n; ++c) x[size_t(c)] = z[size_t(c)] / std::sqrt(norm);
    }
    CHECK(top2 <= sigma2[1] * (1 + 1e-9));
    // svd_clamp: both factors clamped to ± the quantile of their entries before clamping
    peft::WeightedAdapterOptions clamped;
    clamped.svd_clamp = 0.8;
    const peft::Adapter& cl = set.add_weighted_adapter({"a", "c"}, {wa, wc}, "clamped", clamped);
    std::vector<double> all = B;
    all.insert(all.end(), A.begin(), A.end());
    const double hi = peft::torch_quantile(all, 0.8);
    auto clamp = [&](std::vector<double> v) {
        for (double& x2 : v) x2 = std::min(std::max(x2, -hi), hi);
        return v;
    };
    check_close(factor(cl, kInProj + ".lora_A.weight"), clamp(A), 1e-12, "clamped A");
    check_close(factor(cl, kInProj + ".lora_B.weight"), clamp(B), 1e-12, "clamped B");
}

TEST_CASE("peft merge_task_tensors: magnitude pruning, TIES and DARE as HF's merge_utils, quantile as torch's") {
    Generator gen(7);
    const std::vector<std::vector<double>> t = {{1, -2, 3, -0.5}, {-1, 1, 2, 4}};
    const std::vector<double> w = {1, 2};
    auto merge = [&](const std::string& how, double density, const std::string& sign = "total") {
        return peft::merge_task_tensors(how, t, w, density, sign, gen);
    };
    CHECK(merge("linear", -1) == std::vector<double>{-1, 0, 7, 7.5});
    CHECK(merge("magnitude_prune", 0.5) == std::vector<double>{0, -2, 7, 8});
    CHECK(merge("magnitude_prune", 1.0) == merge("linear", -1));  // density ≥ 1: no pruning
    CHECK(merge("ties", 0.5) == std::vector<double>{0, -2, 3.5, 8});
    CHECK(merge("ties", 1.0, "frequency") == std::vector<double>{1, 2, 3.5, 8});
    CHECK(merge("ties", 1.0, "total") == std::vector<double>{1, -2, 3.5, 8});
    CHECK(peft::prune_by_magnitude({1, -1, 1, 0.5}, 0.5) == std::vector<double>{1, -1, 0, 0});  // lower index first
    CHECK(peft::prune_by_magnitude({1, -1, 1, 0.5}, 0.0) == std::vector<double>{0, 0, 0, 0});
    // the count is Python's int(density * n) of the product rounded to a double: int(0.7 * 10) = 7 and int(0.3 * 10)
    // = 3, also on x87 (i686), whose unrounded 80-bit products gave 6 and 2
    const std::vector<double> ten = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    CHECK(peft::prune_by_magnitude(ten, 0.7) == std::vector<double>{0, 0, 0, 4, 5, 6, 7, 8, 9, 10});
    CHECK(peft::prune_by_magnitude(ten, 0.3) == std::vector<double>{0, 0, 0, 0, 0, 0, 0, 8, 9, 10});
    // DARE: each entry kept with probability density and divided by it; the draws follow the seed
    std::vector<double> big(4000);
    for (size_t i = 0; i < big.size(); ++i) big[i] = 1.0 + double(i % 7);
    Generator g1(11), g2(11), g3(12);
    const auto d1 = peft::merge_task_tensors("dare_linear", {big}, {1.0}, 0.25, "total", g1);
    CHECK(d1 == peft::merge_task_tensors("dare_linear", {big}, {1.0}, 0.25, "total", g2));
    CHECK(d1 != peft::merge_task_tensors("dare_linear", {big}, {1.0}, 0.25, "total", g3));
    size_t kept = 0;
    for (size_t i = 0; i < big.size(); ++i) {
        CHECK((d1[i] == 0.0 || d1[i] == big[i] / 0.25));
        kept += d1[i] != 0.0;
    }
    CHECK(double(kept) / double(big.size()) == doctest::Approx(0.25).epsilon(0.1));
    // dare_ties on signs only: with density 1 it is ties
    CHECK(merge("dare_ties", 1.0) == merge("ties", 1.0));
    CHECK_THROWS_WITH_AS(merge("ties", -1), doctest::Contains("needs a density"), Error);
    CHECK_THROWS_WITH_AS(merge("dare_linear", 0.0), doctest::Contains("NaN"), Error);
    CHECK_THROWS_WITH_AS(merge("ties", 0.5, "most"), doctest::Contains("majority_sign_method"), Error);
    CHECK_THROWS_WITH_AS(merge("average", 0.5), doctest::Contains("unknown"), Error);
    CHECK(peft::torch_quantile({4, 1, 3, 2}, 0.5) == 2.5);
    CHECK(peft::torch_quantile({4, 1, 3, 2}, 0.0) == 1.0);
    CHECK(peft::torch_quantile({4, 1, 3, 2}, 1.0) == 4.0);
    CHECK(peft::torch_quantile({4, 1, 3, 2}, 1.0 / 3.0) == doctest::Approx(2.0));
}

TEST_CASE("peft add_weighted_adapter: what HF would combine wrongly or drop is refused, and the set stays as it was") {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    peft::AdapterSet set(s.module());
    randomize(set.add("a", peft::Config::from_json(kLoraA)), 1);
    randomize(set.add("b", peft::Config::from_json(kLoraB)), 2);
    randomize(set.add("c", peft::Config::from_json(kLoraC)), 3);
    set.add("dora", peft::Config::parse(R"({"peft_type": "LORA", "use_dora": true, "target_modules": ["in_proj"]})"));
    set.add("lbias", peft::Config::parse(R"({"peft_type": "LORA", "lora_bias": true, "target_modules": ["dt_proj"]})"));
    set.add("bias", peft::Config::parse(R"({"peft_type": "LORA", "bias": "all", "target_modules": ["in_proj"]})"));
    set.add("mts", peft::Config::parse(R"({"peft_type": "LORA", "modules_to_save": ["lm_head"], "target_modules": ["in_proj"]})"));
    set.add("pissa", peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "init_lora_weights": "pissa", "target_modules": ["out_proj"]})"));
    set.add("offset", peft::Config::parse(R"({"peft_type": "STATE_OFFSET"})"));
    set.add("layer0", peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "target_modules": ["in_proj"], "layers_to_transform": [0]})"));
    set.add("regex", peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "target_modules": ".*in_proj"})"));
    set.set_active("a");
    const Tensor out_a = s.output().detach();
    const auto names = set.names();
    peft::WeightedAdapterOptions linear;
    linear.combination_type = "linear";
    peft::WeightedAdapterOptions big_svd;
    big_svd.svd_rank = 9;
    peft::WeightedAdapterOptions unknown;
    unknown.combination_type = "average";
    const std::vector<std::tuple<std::vector<std::string>, peft::WeightedAdapterOptions, std::string>> refused = {
        {{"a", "dora"}, {}, "uses DoRA"},
        {{"a", "lbias"}, {}, "lora_bias"},
        {{"a", "bias"}, {}, "in place"},
        {{"mts", "a"}, {}, "in place"},
        {{"a", "pissa"}, {}, "ssmtune convert"},
        {{"a", "offset"}, {}, "only LORA adapters combine"},
        {{"a", "b"}, linear, "needs adapters of one rank"},
        {{"b"}, {}, "has rank 1 on backbone.layers.0.mixer.dt_proj"},  // one adapter: linear, and its rank_pattern
        {{"a", "c"}, big_svd, "exceeds"},
        {{"a", "a"}, {}, "listed twice"},
        {{"a", "nope"}, {}, "no adapter named \"nope\""},
        {{"a", "c"}, unknown, "unknown combination_type"},
        {{"layer0", "c"}, {}, "does not reach"},  // c's layer-1 in_proj would be dropped (HF drops it silently)
        {{"a", "regex"}, {}, "regular expression"},
    };
    for (const auto& item : refused) {
        const std::vector<std::string>& sources = std::get<0>(item);
        const std::vector<double> weights(sources.size(), 1.0);
        CHECK_THROWS_WITH_AS(set.add_weighted_adapter(sources, weights, "new", std::get<1>(item)),
                             doctest::Contains(std::get<2>(item).c_str()), Error);
        CHECK(set.names() == names);
        CHECK(set.active() == "a");
    }
    CHECK_THROWS_WITH_AS(set.add_weighted_adapter({"a", "c"}, {1.0}, "new"), doctest::Contains("one weight per adapter"), Error);
    CHECK_THROWS_WITH_AS(set.add_weighted_adapter({"a", "c"}, {1.0, 1.0}, "b"), doctest::Contains("exists already"), Error);
    CHECK(bit_equal(s.output(), out_a));
    // layer0 listed second is fine: c's config reaches every layer, and layer 1's in_proj holds c's part only
    set.add_weighted_adapter({"c", "layer0"}, {1.0, 1.0}, "ok");
    CHECK(set.get("ok").saved_config()["r"] == 2);
}
