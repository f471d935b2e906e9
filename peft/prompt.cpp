// PROMPT tuning (Lester et al. 2021) on the language models: P trainable virtual-token embeddings [P, D]
// prepended to every input sequence (LanguageModel::prompt_embeddings); their positions are dropped from the
// logits, and generation feeds them through the recurrent state first. On an SSM this can only reach an initial
// state (reference/peft-methods.md §4.3, §4.5). Init "SAMPLE_VOCAB" (default): rows of the embedding matrix at
// seeded random token ids; "RANDOM": N(0, 1) as HF's nn.Embedding. File name: base_model.model.prompt_embeddings.
// Not here: text-initialised prompts (needs a tokenizer; use SAMPLE_VOCAB), S4D (no token input).
#include "ops/ops.h"
#include "peft/method.h"

namespace ssmtune::peft {

namespace {
class PromptMethod : public Method {
public:
    PromptMethod(ModelView& model, const Config& config) : lm_(model.lm) {
        SSMTUNE_CHECK(lm_, "PROMPT needs a language model (virtual tokens are prepended to token embeddings); this "
                      "is an S4D classifier; fix: use STATE_OFFSET, INITIAL_STATE or LORA");
        SSMTUNE_CHECK(!lm_->prompt_embeddings.defined(), "this model already has prompt embeddings attached");
        const int64_t P = config.json["num_virtual_tokens"].get<int64_t>(), D = lm_->config().hidden_size,
                      V = lm_->config().vocab_size;
        Generator gen(config.json["init_seed"].get<uint64_t>());
        const std::string init = config.json["prompt_tuning_init"];
        Tensor p;
        if (init == "RANDOM") {
            p = Tensor::randn({P, D}, gen, model.dtype());
        } else {
            SSMTUNE_CHECK(init == "SAMPLE_VOCAB", "PROMPT \"prompt_tuning_init\" must be SAMPLE_VOCAB or RANDOM, got ", init);
            SSMTUNE_CHECK(!lm_->reads_frames(), "PROMPT SAMPLE_VOCAB copies token embeddings, but this model reads "
                          "real-valued frames; fix: \"prompt_tuning_init\": \"RANDOM\"");
            Tensor u = Tensor::uniform({P}, gen, 0.0, double(V), DType::F64);
            std::vector<int64_t> ids;
            for (double v : u.to_vector<double>()) ids.push_back(std::min<int64_t>(V - 1, int64_t(v)));
            const Tensor table = lm_->embeddings().weight().detach();  // on the model's device (CPU or GPU)
            p = ops::index_select(table, 0, Tensor::from_vector<int64_t>(ids, {P}).to(table.device())).clone();
        }
        lm_->prompt_embeddings = trainable(p);
    }
    std::vector<std::pair<std::string, Tensor>> tensors() const override {
        return {{"prompt_embeddings", lm_->prompt_embeddings}};
    }
    std::string merge_refusal() const override { return "virtual tokens are extra inputs, not weights"; }
    void detach() override { lm_->prompt_embeddings = Tensor(); }

private:
    models::LanguageModel* lm_;
};
}  // namespace

std::unique_ptr<Method> make_prompt(ModelView& model, const Config& config) {
    return std::make_unique<PromptMethod>(model, config);
}

}  // namespace ssmtune::peft
