// Several LoRA adapters active at once (AdapterSet::set_active with a list; peft::apply twice), as HF's
// set_adapter([a, b]): plain LoRA terms add (the model equals the base with both merged), DoRA scales the output
// so far as HF's variant does (checked on one Linear and on the embedding against the formula), all active adapters
// train (float64 gradcheck), switching between groups and single adapters is bit for bit, removing one keeps the
// others, and what cannot combine is refused before anything changes (the commands: tests/tools/test_adapter_group.cpp).
// One adapter per sample (set_batch_adapters, HF's mixed batch): each sample as alone with its adapter, step mode too,
// gradients from its own samples, refusals.
#include "tests/peft/peft_test_util.h"

using namespace ssmtune;
using namespace ssmtune::peft_test;
using nlohmann::json;

namespace {

models::Module* module_named(models::Module& root, const std::string& name) {
    for (auto& [n, m] : root.named_modules())
        if (n == name) return m;
    FAIL("no module " << name);
    return nullptr;
}


// The outputs of the base with each adapter of `dirs` loaded and merged in turn (plain LoRA: W + Σ s B A).
Tensor merged_outputs(const std::vector<std::string>& dirs) {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    for (auto& d : dirs) peft::load(s.module(), d).merge();
    return s.output().detach();
}

// kLoraA as "a" and kLoraB as "b" in `set`, randomised from seed, seed + 1.
void add_pair(peft::AdapterSet& set, uint64_t seed) {
    randomize(set.add("a", peft::Config::from_json(kLoraA)), seed);
    randomize(set.add("b", peft::Config::from_json(kLoraB)), seed + 1);
}

// Only the adapters' tensors train (`adapters_on`), or every base tensor does, as before any adapter.
void check_trainable(Subject& s, bool adapters_on) {
    for (auto& named : s.module().named_parameters())
        CHECK_MESSAGE(named.second.requires_grad() == (!adapters_on || named.first.find(".lora") != std::string::npos), named.first);
}

}  // namespace

TEST_CASE("peft several LoRA adapters active: the terms add, as with both merged, in either order") {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    const Tensor base = s.output().detach();
    peft::AdapterSet set(s.module());
    add_pair(set, 1);
    const auto dir = testing::scratch_dir("peft_multi_add");
    set.get("a").save((dir / "a").string());
    set.get("b").save((dir / "b").string());
    set.set_active("a");
    const Tensor out_a = s.output().detach();
    set.set_active({"a", "b"});
    CHECK(set.active() == "a+b");
    CHECK(set.active_names() == std::vector<std::string>{"a", "b"});
    const Tensor both = s.output().detach();
    CHECK_FALSE(bit_equal(both, out_a));
    testing::expect_close(both, merged_outputs({(dir / "a").string(), (dir / "b").string()}), 1e-12, 1e-12, "a+b vs merged");
    set.set_active(std::vector<std::string>{"b", "a"});
    testing::expect_close(s.output(), both, 1e-13, 1e-13, "b+a");
    // every active adapter trains, the base does not
    check_trainable(s, /*adapters_on=*/true);
    Tensor loss = s.loss();
    loss.backward();
    for (const char* name : {"a", "b"})
        for (auto& named : set.get(name).named_parameters()) CHECK_MESSAGE(named.second.grad().defined(), named.first);
    // switching: each single adapter, the base, the pair again, bit for bit
    set.set_active("a");
    CHECK(bit_equal(s.output(), out_a));
    set.set_active("");
    CHECK(bit_equal(s.output(), base));
    check_trainable(s, /*adapters_on=*/false);  // as before any adapter
    set.set_active({"a", "b"});
    CHECK(bit_equal(s.output(), both));
    // a plain LoRA merges beside another plain one (the terms add); the merged one is part of the base from then on
    set.get("a").merge();
    testing::expect_close(s.output(), both, 1e-12, 1e-12, "a merged, b active");
    const Tensor merged_a = s.output().detach();
    set.set_active("b");  // (re-attaches b: the base frozen again, which a's merge, out of order, had undone)
    CHECK(bit_equal(s.output(), merged_a));
    check_trainable(s, /*adapters_on=*/true);
    set.set_active("");
    CHECK_THROWS_WITH_AS(set.set_active("a"), doctest::Contains("was merged or detached"), Error);
    CHECK(set.active().empty());
}

TEST_CASE("peft several LoRA adapters: removing the active ones keeps the others, and loads give the same outputs") {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    const Tensor base = s.output().detach();
    peft::AdapterSet set(s.module());
    add_pair(set, 3);
    const auto dir = testing::scratch_dir("peft_multi_remove");
    set.get("a").save((dir / "a").string());
    set.get("b").save((dir / "b").string());
    set.set_active("b");
    const Tensor out_b = s.output().detach();
    set.set_active({"a", "b"});
    const Tensor both = s.output().detach();
    {  // the saved adapters loaded into a fresh base, active together: the same outputs
        Subject fresh = make_subject("mamba", 3, /*tied=*/false);
        peft::AdapterSet again(fresh.module());
        again.load("x", (dir / "a").string());
        again.load("y", (dir / "b").string());
        again.set_active(std::vector<std::string>{"x", "y"});
        CHECK(bit_equal(fresh.output(), both));
    }
    set.remove("a");
    CHECK(set.active() == "b");
    CHECK(bit_equal(s.output(), out_b));
    check_trainable(s, /*adapters_on=*/true);
    set.remove("b");
    CHECK(bit_equal(s.output(), base));
    check_trainable(s, /*adapters_on=*/false);
}

TEST_CASE("peft several LoRA adapters with DoRA: each module scales the output so far, as HF's DoRA variant") {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    peft::AdapterSet set(s.module());
    const json plain = {{"peft_type", "LORA"}, {"r", 2}, {"target_modules", {"embeddings", "dt_proj"}}};
    const json dora = {{"peft_type", "LORA"}, {"r", 3}, {"lora_alpha", 6}, {"use_dora", true},
                       {"target_modules", {"embeddings", "dt_proj"}}};
    randomize(set.add("plain", peft::Config::from_json(plain)), 5);
    randomize(set.add("dora", peft::Config::from_json(dora)), 6);
    set.set_active(std::vector<std::string>{"plain", "dora"});
    auto tensor = [&](const char* adapter, const std::string& name) {
        for (auto& [n, t] : set.get(adapter).named_parameters())
            if (n == name) return t.detach();
        FAIL("no tensor " << name);
        return Tensor();
    };
    autograd::NoGradGuard no_grad;
    {  // dt_proj [E, R] with a bias: y1 = W x + b + s1 B1 A1 x; y = y1 + (m/n − 1)(y1 − b) + (m/n) s2 B2 A2 x
        const std::string m = "backbone.layers.1.mixer.dt_proj";
        auto* lin = static_cast<models::Linear*>(module_named(s.module(), m));
        const Tensor x = Tensor::randn({2, 4, lin->in_features()}, 9, DType::F64);
        const Tensor W = lin->weight().detach(), b = lin->bias()->detach();
        const Tensor A1 = tensor("plain", m + ".lora_A.weight"), B1 = tensor("plain", m + ".lora_B.weight");
        const Tensor A2 = tensor("dora", m + ".lora_A.weight"), B2 = tensor("dora", m + ".lora_B.weight"),
                     mag = tensor("dora", m + ".lora_magnitude_vector");
        const double s1 = 8.0 / 2, s2 = 6.0 / 3;
        const Tensor y1 = ops::add(ops::linear(x, W, b), ops::mul_scalar(ops::linear(ops::linear(x, A1), B1), s1));
        const Tensor dense = ops::add(W, ops::mul_scalar(ops::matmul(B2, A2), s2));
        const Tensor scale = ops::div(mag, ops::sqrt(ops::sum(ops::mul(dense, dense), {1})));  // m / n [E]
        const Tensor want = ops::add(ops::add(y1, ops::mul(ops::sub(y1, b), ops::add_scalar(scale, -1.0))),
                                     ops::mul(ops::mul_scalar(ops::linear(ops::linear(x, A2), B2), s2), scale));
        testing::expect_close(lin->forward(x), want, 1e-12, 1e-12, m);
    }
    {  // the embedding E [V, D]: y = (m/n) ⊙ (E[ids] + s1 A1ᵀ[ids] B1ᵀ + s2 A2ᵀ[ids] B2ᵀ), n the column norms of E + s2 (B2 A2)ᵀ
        auto* emb = static_cast<models::Embedding*>(module_named(s.module(), "backbone.embeddings"));
        const Tensor E = emb->weight().detach();
        const std::string m = "backbone.embeddings";
        const Tensor A1 = tensor("plain", m + ".lora_embedding_A"), B1 = tensor("plain", m + ".lora_embedding_B");
        const Tensor A2 = tensor("dora", m + ".lora_embedding_A"), B2 = tensor("dora", m + ".lora_embedding_B"),
                     mag = tensor("dora", m + ".lora_magnitude_vector");
        const double s1 = 8.0 / 2, s2 = 6.0 / 3;
        const Tensor d1 = ops::mul_scalar(ops::matmul(B1, A1).transpose(0, 1).contiguous(), s1);  // [V, D]
        const Tensor d2 = ops::mul_scalar(ops::matmul(B2, A2).transpose(0, 1).contiguous(), s2);
        const Tensor dense = ops::add(E, d2);
        const Tensor scale = ops::div(mag, ops::sqrt(ops::sum(ops::mul(dense, dense), {0})));  // [D]
        const Tensor want = ops::mul(ops::embedding(ops::add(ops::add(E, d1), d2), s.ids), scale);
        testing::expect_close(emb->forward(s.ids), want, 1e-12, 1e-12, m);
    }
    // merging beside a DoRA adapter would change the outputs: refused, for both
    for (const char* name : {"plain", "dora"})
        CHECK_THROWS_WITH_AS(set.get(name).merge(), doctest::Contains("one of them DoRA"), Error);
}

TEST_CASE("peft several LoRA adapters: float64 gradcheck of every active adapter's tensors together") {
    for (const char* kind : {"mamba", "s4d"}) {
        INFO(std::string(kind));
        Subject s = make_subject(kind);
        peft::AdapterSet set(s.module());
        const json a = {{"peft_type", "LORA"}, {"r", 1}, {"lora_bias", true}};
        // (not DoRA: its gradients hold the norms constant, so they are not the exact derivative gradcheck measures)
        const json b = {{"peft_type", "LORA"}, {"r", 2}, {"lora_alpha", 3}, {"use_rslora", true}};
        randomize(set.add("a", peft::Config::from_json(a)), 7);
        randomize(set.add("b", peft::Config::from_json(b)), 8);
        set.set_active({"a", "b"});
        std::vector<Tensor> inputs = set.get("a").parameters();
        for (Tensor& t : set.get("b").parameters()) inputs.push_back(t);
        autograd::GradcheckOptions opt;
        opt.max_checked_per_input = 6;
        const auto r = autograd::gradcheck([&](const std::vector<Tensor>&) { return s.loss(); }, inputs, opt);
        INFO(r.summary());
        CHECK(r.ok);
    }
}

TEST_CASE("peft several adapters: what cannot be active together is refused, and the set stays as it was") {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    peft::AdapterSet set(s.module());
    add_pair(set, 1);
    set.add("offset", peft::Config::parse(R"({"peft_type": "STATE_OFFSET"})"));
    set.add("bias", peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "bias": "all"})"));
    set.add("save", peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "modules_to_save": ["lm_head"]})"));
    set.add("pissa", peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "init_lora_weights": "pissa",
                                             "target_modules": ["in_proj"]})"));
    set.set_active({"a", "b"});
    const Tensor both = s.output().detach();
    const std::vector<std::pair<std::vector<std::string>, const char*>> refused = {
        {{"a", "offset"}, "only LORA adapters are active together"},
        {{"a", "bias"}, "trains base tensors in place"},
        {{"save", "b"}, "trains base tensors in place"},
        {{"a", "pissa"}, "fix: list it first"},
        {{"a", "a"}, "listed twice"},
        {{"a", "nope"}, "no adapter named \"nope\""},
    };
    for (auto& entry : refused) {
        INFO(entry.second);
        CHECK_THROWS_WITH_AS(set.set_active(entry.first), doctest::Contains(entry.second), Error);
        CHECK(set.active() == "a+b");
        CHECK(bit_equal(s.output(), both));
    }
    // a base-rewriting init first is fine: it starts from the base, and the model starts as the other adapter alone
    set.set_active("b");
    const Tensor out_b = s.output().detach();
    set.set_active(std::vector<std::string>{"pissa", "b"});
    testing::expect_close(s.output(), out_b, 1e-12, 1e-12, "pissa + b at the PiSSA start");
    CHECK_THROWS_WITH_AS(set.add("x+y", peft::Config::from_json(kLoraA)), doctest::Contains("without '+'"), Error);
}

TEST_CASE("peft apply twice: LoRA beside LoRA on one module, other kinds keep a module to themselves") {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    const Tensor base = s.output().detach();
    peft::Adapter a = peft::apply(s.module(), peft::Config::from_json(kLoraA));
    randomize(a, 1);
    peft::Adapter b = peft::apply(s.module(), peft::Config::from_json(kLoraB));
    randomize(b, 2);
    for (auto& named : a.named_parameters()) CHECK_FALSE(named.second.requires_grad());  // apply froze the model, a included
    CHECK(apply_error(s.module(), R"({"peft_type": "PARALLEL_ADAPTER", "target_modules": ["in_proj"]})")
              .find("already carries an adapter") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "bias": "lora_only"})").find("trains base tensors in place") !=
          std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "init_lora_weights": "olora", "target_modules": ["out_proj"]})")
              .find("attach (or activate) this adapter first") != std::string::npos);
    b.detach();
    a.detach();
    CHECK(bit_equal(s.output(), base));
    check_trainable(s, /*adapters_on=*/false);
    peft::Adapter p = peft::apply(s.module(), peft::Config::parse(R"({"peft_type": "SURM", "target_modules": ["out_proj"]})"));
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "target_modules": ["out_proj"]})")
              .find("already carries a") != std::string::npos);
    p.detach();
    CHECK(bit_equal(s.output(), base));
}

TEST_CASE("peft per-sample adapters: each sample computes as with its own adapter alone, in the step mode too") {
    for (const char* kind : {"mamba", "longhorn", "s4d"}) {
        INFO(std::string(kind));
        Subject s = make_subject(kind, 3, /*tied=*/false);
        if (s.any.lm)
            s.ids = Tensor::from_vector<int64_t>({1, 4, 2, 9, 0, 3, 7, 5, 5, 10, 2, 1, 8, 6, 3, 3, 0, 9, 4, 1, 2}, {3, 7});
        else
            s.x = Tensor::randn({3, 5, 3}, 11, DType::F64);
        const json a = s.any.lm ? kLoraA : json{{"peft_type", "LORA"}, {"r", 2}};
        const json b = s.any.lm ? json{{"peft_type", "LORA"}, {"r", 3}, {"lora_bias", true}, {"target_modules", {"in_proj", "dt_proj"}}}
                                : json{{"peft_type", "LORA"}, {"r", 3}, {"lora_bias", true}, {"target_modules", {"output_linear.0", "decoder"}}};
        peft::AdapterSet set(s.module());
        randomize(set.add("a", peft::Config::from_json(a)), 21);
        randomize(set.add("b", peft::Config::from_json(b)), 22);
        const std::vector<std::string> per_sample = {"a", peft::AdapterSet::kBaseAdapter, "b"};
        set.set_batch_adapters(per_sample);
        const Tensor mixed = s.output().detach();
        if (s.any.lm) check_lm_recurrent(s, 1e-10);
        for (int64_t i = 0; i < 3; ++i) {
            set.set_active(per_sample[size_t(i)] == peft::AdapterSet::kBaseAdapter ? "" : per_sample[size_t(i)]);
            const Tensor alone = s.any.lm ? s.any.lm->forward(s.ids.narrow(0, i, 1)) : s.any.s4d->forward(s.x.narrow(0, i, 1));
            testing::expect_close(mixed.narrow(0, i, 1), alone, 1e-12, 1e-12, "sample " + std::to_string(i));
        }
        // add() keeps the per-sample mode; set_active ends it: "a" for the whole batch again
        set.set_batch_adapters(per_sample);
        set.add("c", peft::Config::from_json(b));
        CHECK(bit_equal(s.output(), mixed));
        set.set_batch_adapters({"b", "a", "a"});
        set.set_active("a");
        const Tensor all_a = s.output().detach();
        set.set_active("");
        set.set_active("a");
        CHECK(bit_equal(s.output(), all_a));
    }
}

TEST_CASE("peft per-sample adapters: float64 gradcheck, each adapter learns from its own samples") {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    s.ids = Tensor::from_vector<int64_t>({1, 4, 2, 9, 0, 3, 7, 5, 5, 10, 2, 1, 8, 6, 3, 3, 0, 9, 4, 1, 2}, {3, 7});
    peft::AdapterSet set(s.module());
    add_pair(set, 31);
    set.set_batch_adapters({"b", "a", "b"});
    std::vector<Tensor> inputs = set.get("a").parameters();
    for (Tensor& t : set.get("b").parameters()) inputs.push_back(t);
    autograd::GradcheckOptions opt;
    opt.max_checked_per_input = 5;
    const auto r = autograd::gradcheck([&](const std::vector<Tensor>&) { return s.loss(); }, inputs, opt);
    INFO(r.summary());
    CHECK(r.ok);
    // a's gradient is that of sample 1 alone (the loss is a mean over the B·(L−1) positions: sample 1 holds a third)
    for (Tensor& t : inputs) t.zero_grad();
    s.loss().backward();
    const auto mixed_grads = set.get("a").named_parameters();
    std::vector<Tensor> g_mixed;
    for (auto& named : mixed_grads) g_mixed.push_back(named.second.grad().detach().clone());
    set.set_active("a");
    const Tensor one = s.ids.narrow(0, 1, 1);
    for (auto& named : set.get("a").named_parameters()) named.second.zero_grad();
    ops::mul_scalar(s.any.lm->loss(one), 1.0 / 3.0).backward();
    const auto alone = set.get("a").named_parameters();
    for (size_t i = 0; i < alone.size(); ++i)
        testing::expect_close(g_mixed[i], alone[i].second.grad(), 1e-12, 1e-12, alone[i].first);
}

TEST_CASE("peft per-sample adapters: what cannot serve single samples is refused, and a batch must match the names") {
    Subject s = make_subject("mamba", 3, /*tied=*/false);
    peft::AdapterSet set(s.module());
    randomize(set.add("a", peft::Config::from_json(kLoraA)), 1);
    set.add("dora", peft::Config::parse(R"({"peft_type": "LORA", "use_dora": true})"));
    set.add("pissa", peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "init_lora_weights": "olora", "target_modules": ["out_proj"]})"));
    set.add("bias", peft::Config::parse(R"({"peft_type": "LORA", "bias": "lora_only"})"));
    set.add("offset", peft::Config::parse(R"({"peft_type": "STATE_OFFSET"})"));
    const std::vector<std::pair<std::string, const char*>> refused = {
        {"dora", "uses DoRA"}, {"pissa", "rewrites the base weights"}, {"bias", "trains base tensors in place"},
        {"offset", "per-sample adapters are LORA"}, {"nope", "no adapter named \"nope\""}};
    for (auto& entry : refused) {
        INFO(entry.first);
        CHECK_THROWS_WITH_AS(set.set_batch_adapters({"a", entry.first}), doctest::Contains(entry.second), Error);
        CHECK(set.active().empty());
    }
    set.set_batch_adapters({"a", "a", peft::AdapterSet::kBaseAdapter});  // 3 names, a batch of 2
    CHECK_THROWS_WITH_AS(s.output(), doctest::Contains("set for a batch of 3 samples, but this batch holds 2"), Error);
    CHECK_THROWS_AS(set.set_batch_adapters({}), Error);
}
