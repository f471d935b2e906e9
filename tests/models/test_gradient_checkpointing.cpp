// Activation checkpointing (autograd/checkpoint.h, LanguageModel::set_gradient_checkpointing): the same loss and
// the same gradients to the bit as without it — for a block with dropout, for Mamba and Longhorn LMs trained whole
// and under every PEFT method that hooks into a layer — and less memory held at the peak of a training step.
#include "test_util.h"

#include "autograd/checkpoint.h"
#include "autograd/node.h"
#include "engine/storage.h"
#include "models/module.h"
#include "ops/ops.h"
#include "peft/peft.h"
#include "tests/models/tiny_models.h"

using namespace ssmtune;

namespace {

// name → the gradient of every parameter that requires grad (as doubles, compared bit for bit), plus the loss and
// the dropout generators' offsets after the step.
using GradBits = std::map<std::string, std::vector<double>>;

std::vector<double> grad_bits(const Tensor& t) {
    return t.grad().defined() ? t.grad().to(DType::F64).to_vector<double>() : std::vector<double>{};
}

GradBits lm_step(const std::string& kind, const std::string& peft_json, bool checkpointing, int64_t L = 7) {
    models::LMConfig c = testing::tiny_lm_config(kind);
    auto lm = std::make_shared<models::LanguageModel>(c, 5);
    if (!peft_json.empty()) peft::apply(*lm, peft::Config::parse(peft_json));
    lm->train();
    lm->set_gradient_checkpointing(checkpointing);
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < 2 * L; ++i) ids.push_back((i * 7 + 3) % c.vocab_size);
    Tensor loss = lm->loss(Tensor::from_vector<int64_t>(ids, {2, L}));
    loss.backward();
    GradBits out{{"loss", {loss.item()}}};
    for (auto& [name, t] : lm->named_parameters())
        if (t.requires_grad()) out[name] = grad_bits(t);
    for (Generator* g : models::training_generators(*lm)) out["generator offset"].push_back(double(g->offset()));
    return out;
}

void check_same(const GradBits& a, const GradBits& b) {
    REQUIRE(a.size() == b.size());
    for (const auto& entry : a) {  // (not a structured binding: clang 14 cannot capture one in INFO's lambda)
        const std::string& name = entry.first;
        INFO(name);
        REQUIRE(b.count(name));
        CHECK(entry.second == b.at(name));  // bit-identical, not close
    }
}

}  // namespace

TEST_CASE("checkpoint: a block with dropout gives the plain block's output and gradients, bit for bit") {
    Generator gen_plain(9), gen_ckpt(9);
    Tensor w1 = Tensor::randn({6, 6}, 1).set_requires_grad(true), w2 = Tensor::randn({6, 6}, 1).set_requires_grad(true);
    const auto block = [](const Tensor& w, Generator& g) {
        return [&w, &g](const Tensor& x) { return ops::gelu(ops::dropout(ops::matmul(x, w), 0.3, true, g)); };
    };
    Tensor x1 = Tensor::randn({4, 6}, 2).set_requires_grad(true), x2 = Tensor::randn({4, 6}, 2).set_requires_grad(true);
    Tensor y1 = block(w1, gen_plain)(ops::mul(x1, x1));
    Tensor y2 = autograd::checkpoint(block(w2, gen_ckpt), ops::mul(x2, x2), {&gen_ckpt});
    CHECK(y1.to_vector<float>() == y2.to_vector<float>());
    ops::sum(ops::mul(y1, y1)).backward();
    ops::sum(ops::mul(y2, y2)).backward();
    CHECK(w1.grad().to_vector<float>() == w2.grad().to_vector<float>());
    CHECK(x1.grad().to_vector<float>() == x2.grad().to_vector<float>());
    CHECK(gen_plain.offset() == gen_ckpt.offset());  // the recomputation drew its masks again from the rewound state

    // without grad mode it is the block itself; a block whose output needs no gradient records nothing
    {
        autograd::NoGradGuard no_grad;
        CHECK_FALSE(autograd::checkpoint(block(w2, gen_ckpt), x2, {&gen_ckpt}).requires_grad());
    }
    Tensor frozen = Tensor::randn({6, 6}, 3);
    CHECK_FALSE(autograd::checkpoint([&frozen](const Tensor& x) { return ops::matmul(x, frozen); },
                                     Tensor::randn({4, 6}, 4), {}).requires_grad());
}

TEST_CASE("checkpoint: a block reading a recorded tensor from outside runs plainly, with the right gradients") {
    Tensor p = Tensor::randn({6}, 5).set_requires_grad(true), q = Tensor::randn({6}, 5).set_requires_grad(true);
    const auto run = [](Tensor& param, bool checkpointed) {
        Tensor outside = ops::mul(param, param);  // recorded, needs a gradient, not the block's input
        const auto block = [&outside](const Tensor& x) { return ops::mul(x, outside); };
        Tensor x = Tensor::randn({3, 6}, 6);
        Tensor y = checkpointed ? autograd::checkpoint(block, x, {}) : block(x);
        ops::sum(y).backward();
    };
    run(p, false);
    run(q, true);
    CHECK(p.grad().to_vector<float>() == q.grad().to_vector<float>());
}

TEST_CASE("gradient checkpointing: Mamba and Longhorn LMs give the same loss and gradients to the bit") {
    for (const std::string kind : {"mamba", "longhorn"}) {
        for (const std::string peft : {std::string(),
                                       std::string(R"({"peft_type": "LORA", "r": 2, "lora_dropout": 0.25,
                                           "target_modules": ["in_proj", "x_proj", "dt_proj", "out_proj"]})"),
                                       std::string(R"({"peft_type": "LORA", "r": 2, "use_dora": true,
                                           "init_lora_weights": false, "target_modules": ["in_proj", "out_proj"]})"),
                                       std::string(R"({"peft_type": "STATE_OFFSET"})"),
                                       std::string(R"({"peft_type": "INITIAL_STATE", "conv_init_state": true})"),
                                       std::string(R"({"peft_type": "PREFIX", "num_virtual_tokens": 2})"),
                                       std::string(R"({"peft_type": "PROMPT", "num_virtual_tokens": 2})"),
                                       std::string(R"({"peft_type": "PARALLEL_ADAPTER"})"),
                                       std::string(R"({"peft_type": "ADDITIONAL_SCAN", "d_state": 2})"),
                                       kind == "mamba" ? std::string(R"({"peft_type": "SDLORA", "dimensions": {
                                           "0": {"channels": [3, 7], "states": [[0, 1], [2, 3]]},
                                           "1": {"channels": [0], "states": [[1]]}}})")
                                                       : std::string(R"({"peft_type": "SDLORA", "dimensions": {
                                           "0": {"channels": [3, 7]}, "1": {"channels": [0]}}})"),
                                       std::string(R"({"peft_type": "BITFIT"})"),
                                       std::string(R"({"peft_type": "SURM", "structure": "toeplitz", "mode": "lora",
                                           "target_modules": ["in_proj"]})")}) {
            if (kind == "longhorn" && peft.find("ADDITIONAL_SCAN") != std::string::npos) continue;  // Mamba only
            INFO(kind << " " << (peft.empty() ? "full" : peft));
            check_same(lm_step(kind, peft, false), lm_step(kind, peft, true));
        }
    }
}

TEST_CASE("gradient checkpointing: the S4D classifier (dropout, pre- and post-norm, adapters) to the bit") {
    for (const bool prenorm : {false, true}) {
        for (const std::string peft : {std::string(), std::string(R"({"peft_type": "LORA", "r": 2, "lora_dropout": 0.25,
                                           "target_modules": ["output_linear.0", "decoder"]})"),
                                       std::string(R"({"peft_type": "INITIAL_STATE"})"),
                                       std::string(R"({"peft_type": "PARALLEL_ADAPTER"})")}) {
            const auto step = [&](bool checkpointing) {
                models::S4DConfig c = testing::tiny_s4d_config();
                c.dropout = 0.2;
                c.prenorm = prenorm;
                auto model = std::make_shared<models::S4DClassifier>(c, 7);
                if (!peft.empty()) peft::apply(*model, peft::Config::parse(peft));
                model->train();
                model->set_gradient_checkpointing(checkpointing);
                Tensor loss = model->loss(Tensor::randn({3, 9, 3}, 8), Tensor::from_vector<int64_t>({0, 3, 1}, {3}));
                loss.backward();
                GradBits out{{"loss", {loss.item()}}};
                for (auto& [name, t] : model->named_parameters())
                    if (t.requires_grad()) out[name] = grad_bits(t);
                out["dropout offset"] = {double(model->dropout_generator().offset())};
                return out;
            };
            INFO((prenorm ? "prenorm " : "postnorm ") << (peft.empty() ? "full" : peft));
            check_same(step(false), step(true));
        }
    }
}

TEST_CASE("gradient checkpointing: a training step holds less memory at its peak") {
    const auto peak = [](bool checkpointing) {
        models::LMConfig c = testing::tiny_lm_config("mamba");
        c.hidden_size = 16;
        c.intermediate_size = 64;
        c.num_hidden_layers = 6;
        auto lm = std::make_shared<models::LanguageModel>(c, 5);
        lm->train();
        lm->set_gradient_checkpointing(checkpointing);
        std::vector<int64_t> ids(4 * 256);
        for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t(i * 5 % 11);
        const Tensor batch = Tensor::from_vector<int64_t>(ids, {4, 256});
        cpu_empty_cache();
        reset_cpu_peak_bytes();
        const size_t start = cpu_bytes_in_use();
        lm->loss(batch).backward();
        return cpu_peak_bytes() - start;
    };
    const size_t plain = peak(false), checkpointed = peak(true);
    MESSAGE("peak bytes of a 6-layer step: " << plain << " plain, " << checkpointed << " checkpointed");
    CHECK(checkpointed < plain / 2);
}
