// Trainable tokens (TRAINABLE_TOKENS and LoRA's trainable_token_indices, HF's TrainableTokensLayer): the battery on
// Mamba and Longhorn (a no-op at init, only the rows train, save → load, merge, float64 gradcheck), the model equal to
// the base with those rows written into the matrix (the tied head reading them too, an untied head not; the
// lm_head as a target), the step mode, HF's file names, LoRA beside its own trainable tokens, and the refusals.
#include "peft/trainable_tokens.h"

#include "tests/peft/peft_test_util.h"

using namespace ssmtune;
using namespace ssmtune::peft_test;
using nlohmann::json;

namespace {

// `rows` [n, D] written into `matrix` at `indices` (a copy of what merge does, by hand).
void write_rows(Tensor& matrix, const std::vector<int64_t>& indices, const Tensor& rows) {
    autograd::NoGradGuard no_grad;
    const auto r = rows.to_vector<double>();
    const int64_t D = matrix.size(1);
    for (size_t j = 0; j < indices.size(); ++j) {
        Tensor row = matrix.select(0, indices[j]);
        copy_into(row, Tensor::from_vector<double>(std::vector<double>(r.begin() + int64_t(j) * D, r.begin() + int64_t(j + 1) * D),
                                                   {D}).to(matrix.dtype()));
    }
}

}  // namespace

TEST_CASE("peft trainable tokens battery: TRAINABLE_TOKENS on mamba and longhorn (tied heads)") {
    BatteryOptions opt;
    opt.mergeable = true;
    opt.random_init = {{"init_weights", false}};
    for (const char* kind : {"mamba", "longhorn"})
        run_battery(kind, {{"peft_type", "TRAINABLE_TOKENS"}, {"token_indices", {2, 9, 4}}}, opt);
}

TEST_CASE("peft trainable tokens: the model equals the base with the rows written in, tied head included") {
    for (bool tied : {true, false}) {
        INFO("tied " << tied);
        Subject s = make_subject("mamba", 3, tied);
        Subject ref = make_subject("mamba", 3, tied);
        const std::vector<int64_t> idx = {4, 1, 10};
        peft::Adapter a = peft::apply(s.module(), peft::Config::parse(
            R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [4, 1, 10]})"));
        REQUIRE(a.named_parameters().size() == 1);
        CHECK(a.named_parameters()[0].first == "backbone.embeddings.trainable_tokens_delta");
        CHECK(a.num_trainable() == 3 * 8);
        randomize(a, 5);
        const Tensor rows = a.named_parameters()[0].second;
        write_rows(ref.any.lm->embeddings().weight(), idx, rows);  // tied: the head reads them too; untied: it does not
        testing::expect_close(s.output(), ref.output(), 0.0, 1e-13, "adapted vs rows written in");
        check_lm_recurrent(s, 1e-12);
        // the head of an untied model keeps its rows; lm_head as a target replaces its rows of those tokens
        if (!tied) {
            Subject h = make_subject("mamba", 3, false);
            Subject href = make_subject("mamba", 3, false);
            peft::Adapter ha = peft::apply(h.module(), peft::Config::parse(
                R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [4, 1, 10], "target_modules": ["embeddings", "lm_head"]})"));
            CHECK(ha.named_parameters()[1].first == "lm_head.trainable_tokens_delta");
            randomize(ha, 6);
            write_rows(href.any.lm->embeddings().weight(), idx, ha.named_parameters()[0].second);
            write_rows(href.any.lm->lm_head()->weight(), idx, ha.named_parameters()[1].second);
            const Tensor out = h.output().detach();
            testing::expect_close(out, href.output(), 0.0, 1e-13, "embedding and head rows");
            ha.merge();  // writes both matrices: the model computes the same without hooks
            testing::expect_close(h.output(), out, 0.0, 1e-13, "merged");
            CHECK(h.any.lm->config().tie_word_embeddings == false);
        } else {
            const Tensor out = s.output().detach();
            a.merge();  // the embedding's rows; the tied head follows (the same matrix), the model stays tied
            CHECK(s.any.lm->config().tie_word_embeddings);
            CHECK_FALSE(s.any.lm->tied_head_delta);
            testing::expect_close(s.output(), out, 0.0, 1e-13, "merged, tied");
        }
    }
}

TEST_CASE("peft trainable tokens in LoRA (trainable_token_indices): HF's names, beside the LoRA, list and object forms") {
    Subject s = make_subject("mamba", 3, /*tied=*/true);
    Subject ref = make_subject("mamba", 3, true);
    peft::Adapter a = peft::apply(s.module(), peft::Config::parse(
        R"({"peft_type": "LORA", "r": 2, "target_modules": ["in_proj"], "trainable_token_indices": [3, 7]})"));
    auto named = a.named_parameters();
    REQUIRE(named.back().first == "backbone.embeddings.token_adapter.trainable_tokens_delta");
    const Tensor zero_init = s.output().detach();
    CHECK(bit_equal(zero_init, ref.output()));  // B = 0 and the rows as they were
    randomize(a, 8);
    // the reference: the same LoRA (its tensors copied) on a base with the rows written in
    write_rows(ref.any.lm->embeddings().weight(), {3, 7}, named.back().second);
    peft::Adapter b = peft::apply(ref.module(), peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "target_modules": ["in_proj"]})"));
    {
        autograd::NoGradGuard no_grad;
        auto mine = b.named_parameters();
        for (size_t i = 0; i < mine.size(); ++i) copy_into(mine[i].second, named[i].second);
    }
    const Tensor out = s.output().detach();
    testing::expect_close(out, ref.output(), 0.0, 1e-13, "LoRA + trainable tokens");
    // saved with HF's names, loaded back bit for bit
    const auto dir = testing::scratch_dir("peft_lora_tokens");
    a.save(dir.string());
    Subject fresh = make_subject("mamba", 3, true);
    peft::load(fresh.module(), dir.string());
    CHECK(bit_equal(fresh.output(), out));
    a.merge();
    testing::expect_close(s.output(), out, 0.0, 1e-12, "merged");
    // the object form names modules by suffix, the LM head of an untied model too
    Subject u = make_subject("mamba", 3, /*tied=*/false);
    peft::Adapter ua = peft::apply(u.module(), peft::Config::parse(
        R"({"peft_type": "LORA", "target_modules": ["out_proj"], "trainable_token_indices": {"embeddings": [1], "lm_head": [2, 5]}})"));
    named = ua.named_parameters();
    CHECK(named[named.size() - 2].first == "backbone.embeddings.token_adapter.trainable_tokens_delta");
    CHECK(named.back().first == "lm_head.token_adapter.trainable_tokens_delta");
    CHECK(named.back().second.size(0) == 2);
}

TEST_CASE("peft trainable tokens: what cannot work is refused, with the fix") {
    Subject s = make_subject("mamba", 3, true);
    CHECK(apply_error(s.module(), R"({"peft_type": "TRAINABLE_TOKENS"})").find("non-empty list") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [1, 11]})").find("[0, 11)") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [1, 1]})").find("twice") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [1], "target_modules": ["in_proj"]})")
              .find("Embedding modules and the LM head") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "target_modules": ["embeddings"], "trainable_token_indices": [1]})")
              .find("keep a module to themselves") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "trainable_token_indices": {"nope": [1]}})").find("names no Embedding") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "use_qalora": true})").find("use_qalora") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "alora_invocation_tokens": [5]})").find("alora") != std::string::npos);
    CHECK(apply_error(s.module(), R"({"peft_type": "LORA", "ensure_weight_tying": true})").find("ensure_weight_tying") != std::string::npos);
    Subject s4d = make_subject("s4d");
    CHECK(apply_error(s4d.module(), R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [1]})").find("S4D") != std::string::npos);
    // nothing was left attached by the refusals
    for (auto& [name, m] : s.module().named_modules())
        if (auto* host = dynamic_cast<models::DeltaHost*>(m)) CHECK(host->deltas().empty());
    CHECK_FALSE(s.any.lm->tied_head_delta);
    // a LoRA that trains tokens does not join others, nor a combination
    peft::AdapterSet set(s.module());
    set.add("tok", peft::Config::parse(R"({"peft_type": "LORA", "target_modules": ["in_proj"], "trainable_token_indices": [1]})"));
    set.add("plain", peft::Config::parse(R"({"peft_type": "LORA", "target_modules": ["in_proj"]})"));
    CHECK_THROWS_WITH_AS(set.set_active({"plain", "tok"}), doctest::Contains("trains tokens"), Error);
    CHECK_THROWS_WITH_AS(set.add_weighted_adapter({"plain", "tok"}, {1.0, 1.0}, "x"), doctest::Contains("trains tokens"), Error);
}
