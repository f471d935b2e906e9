// A whole Mamba and Longhorn training step on the GPU against the CPU: the same model (same seed) on both devices,
// the loss, every parameter's gradient, and the weights after AdamW steps; and PEFT methods moved to the GPU. Every
// op of the LMs runs on the device (embedding, rmsnorm, linear, conv1d, SiLU, softplus inside the scan, the
// selective and Longhorn scans, cross-entropy, AdamW).
#include "autograd/optim.h"
#include "engine/tensor_copy.h"
#include "gpu_compare.h"
#include "models/ssm_lm.h"
#include "ops/ops.h"
#include "peft/peft.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

models::LMConfig small_lm(const std::string& type = "mamba") {
    models::LMConfig c;
    c.model_type = type;
    c.vocab_size = 37;
    c.hidden_size = 32;
    c.num_hidden_layers = 2;
    c.state_size = 16;
    c.expand = 2;
    c.intermediate_size = 64;
    c.conv_kernel = 4;
    c.time_step_rank = 4;
    return c;
}

Tensor batch_ids(int64_t B, int64_t L, int64_t V) {
    std::vector<int64_t> v(size_t(B * L));
    for (size_t i = 0; i < v.size(); ++i) v[i] = int64_t((i * 13 + i / 7) % size_t(V));
    return Tensor::from_vector(v, {B, L});
}

}  // namespace

TEST_CASE("gpu: a Mamba and a Longhorn LM training step match the CPU (loss, every gradient, weights after AdamW)") {
    for (const char* type : {"mamba", "longhorn"}) {
        INFO(type);
        const models::LMConfig c = small_lm(type);
        models::LanguageModel cpu(c, 5), gpu(c, 5);
        gpu.to(Device::cuda());
        const Tensor ids = batch_ids(2, 600, c.vocab_size), ids_gpu = ids.to(Device::cuda());  // two scan chunks
        std::vector<Tensor> pc, pg;
        for (auto& [n, t] : cpu.named_parameters()) pc.push_back(t);
        for (auto& [n, t] : gpu.named_parameters()) pg.push_back(t);
        autograd::AdamW opt_cpu(pc, autograd::AdamWOptions().lr(1e-3)), opt_gpu(pg, autograd::AdamWOptions().lr(1e-3));
        for (int step = 0; step < 3; ++step) {
            opt_cpu.zero_grad();
            opt_gpu.zero_grad();
            const Tensor l_cpu = cpu.loss(ids), l_gpu = gpu.loss(ids_gpu);
            CHECK(l_gpu.item() == doctest::Approx(l_cpu.item()).epsilon(1e-4));
            l_cpu.backward();
            l_gpu.backward();
            const auto nc = cpu.named_parameters(), ng = gpu.named_parameters();
            for (size_t k = 0; k < nc.size(); ++k)
                expect_gpu_close(ng[k].second.grad(), nc[k].second.grad(), GpuTolerance{2e-3, 2e-5},
                                 "step " + std::to_string(step) + " gradient of " + nc[k].first);
            opt_cpu.step();
            opt_gpu.step();
        }
        const auto nc = cpu.named_parameters(), ng = gpu.named_parameters();
        for (size_t k = 0; k < nc.size(); ++k)
            expect_gpu_close(ng[k].second.detach(), nc[k].second.detach(), GpuTolerance{1e-4, 1e-5}, nc[k].first);
    }
}

TEST_CASE("gpu: PEFT fine-tuning moved to the GPU (state offset, LoRA, prefix, trainable tokens, SDLoRA, SURM, additional scan) matches the CPU") {
    for (const char* method :
         {R"({"peft_type": "STATE_OFFSET", "init": "random"})",
          R"({"peft_type": "ADDITIONAL_SCAN", "d_state": 4, "init": "random"})",
          R"({"peft_type": "STATE_OFFSET", "r": 2, "init": "random"})",
          R"({"peft_type": "INITIAL_STATE", "conv_init_state": true, "init": "random"})",
          R"({"peft_type": "LORA", "r": 4, "target_modules": ["in_proj", "out_proj"]})",
          R"({"peft_type": "LORA", "r": 2, "target_modules": ["in_proj"], "modules_to_save": ["dt_proj"]})",
          R"({"peft_type": "LORA", "r": 2, "bias": "all", "lora_bias": true, "init_lora_weights": false,
              "target_modules": ["dt_proj", "out_proj"]})",
          R"({"peft_type": "LORA", "r": 2, "use_dora": true, "init_lora_weights": false,
              "target_modules": ["embeddings", "in_proj", "x_proj", "out_proj"]})",
          R"({"peft_type": "LORA", "r": 2, "init_lora_weights": "pissa", "use_dora": true,
              "target_modules": ["in_proj", "out_proj"]})",
          R"({"peft_type": "LORA", "r": 3, "init_lora_weights": "olora", "target_modules": ["x_proj", "dt_proj"]})",
          R"({"peft_type": "PREFIX", "num_virtual_tokens": 3})",
          R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [5, 1, 3], "init_weights": false})",
          R"({"peft_type": "LORA", "r": 2, "target_modules": [], "target_parameters": ["A_log", "conv1d.weight"],
              "init_lora_weights": false})",
          R"({"peft_type": "LORA", "r": 2, "target_modules": ["out_proj"], "trainable_token_indices": [2, 4]})",
          R"({"peft_type": "SDLORA", "r": 2, "lora_alpha": 4, "init": "random", "dimensions":
              {"0": {"channels": [1, 7, 12], "states": [[0, 3], [2], [1, 2, 3]]}, "1": {"channels": [4], "states": [[1]]}}})",
          R"({"peft_type": "SURM", "structure": "circulant"})",
          R"({"peft_type": "SURM", "structure": "circulant", "mode": "adapter"})",
          R"({"peft_type": "SURM", "structure": "toeplitz"})",
          R"({"peft_type": "SURM", "structure": "kronecker"})",
          R"({"peft_type": "SURM", "structure": "ldr", "ldr_rank": 2})"}) {
        const models::LMConfig c = small_lm();
        models::LanguageModel cpu(c, 6), gpu(c, 6);
        peft::Adapter a_cpu = peft::apply(cpu, peft::Config::parse(method));
        peft::Adapter a_gpu = peft::apply(gpu, peft::Config::parse(method));
        a_gpu.to(Device::cuda());  // the model and the adapter's tensors, hooks included
        const Tensor ids = batch_ids(3, 70, c.vocab_size);
        const Tensor l_cpu = cpu.loss(ids), l_gpu = gpu.loss(ids.to(Device::cuda()));
        CHECK(l_gpu.item() == doctest::Approx(l_cpu.item()).epsilon(1e-4));
        l_cpu.backward();
        l_gpu.backward();
        const auto pc = a_cpu.named_parameters(), pg = a_gpu.named_parameters();
        REQUIRE(pc.size() == pg.size());
        for (size_t k = 0; k < pc.size(); ++k) {
            REQUIRE(pg[k].second.device().is_cuda());
            expect_gpu_close(pg[k].second.grad(), pc[k].second.grad(), GpuTolerance{2e-3, 2e-5},
                             std::string(method) + " " + pc[k].first);
        }
    }
}

TEST_CASE("gpu: recurrent steps and generation on the GPU (states on the device) match the CPU") {
    for (const char* type : {"mamba", "longhorn"}) {
        INFO(type);
        const models::LMConfig c = small_lm(type);
        models::LanguageModel cpu(c, 8), gpu(c, 8);
        gpu.to(Device::cuda());
        autograd::NoGradGuard no_grad;
        std::vector<models::MixerState> sc = cpu.initial_states(2), sg = gpu.initial_states(2);
        for (const models::MixerState& s : sg) CHECK(s.ssm_state.device().is_cuda());
        for (int64_t t = 0; t < 6; ++t) {
            const Tensor ids = Tensor::from_vector<int64_t>({t % c.vocab_size, (3 * t + 1) % c.vocab_size}, {2});
            expect_gpu_close(gpu.step(ids.to(Device::cuda()), sg), cpu.step(ids, sc), GpuTolerance{1e-4, 1e-5},
                             "logits of step " + std::to_string(t));
        }
        models::GenerationOptions greedy;
        greedy.temperature = 0;
        greedy.max_new_tokens = 12;
        CHECK(gpu.generate({3, 1, 4, 1, 5}, greedy) == cpu.generate({3, 1, 4, 1, 5}, greedy));
        // a PEFT prompt: initial_states runs its virtual tokens on the device, broadcast over the batch
        const peft::Config prompt = peft::Config::parse(R"({"peft_type": "PROMPT", "num_virtual_tokens": 3})");
        peft::Adapter pc = peft::apply(cpu, prompt), pg = peft::apply(gpu, prompt);
        pg.to(Device::cuda());
        sc = cpu.initial_states(2);
        sg = gpu.initial_states(2);
        const Tensor ids = Tensor::from_vector<int64_t>({1, 2}, {2});
        expect_gpu_close(gpu.step(ids.to(Device::cuda()), sg), cpu.step(ids, sc), GpuTolerance{1e-4, 1e-5},
                         "logits after the prompt's virtual tokens");
        CHECK(gpu.generate({3, 1, 4}, greedy) == cpu.generate({3, 1, 4}, greedy));
    }
}

TEST_CASE("gpu: adapters disabled and switched on the device (AdapterSet) give the same outputs again") {
    const models::LMConfig c = small_lm();
    models::LanguageModel m(c, 9);
    m.to(Device::cuda());
    const Tensor ids = batch_ids(2, 40, c.vocab_size).to(Device::cuda());
    autograd::NoGradGuard no_grad;
    const Tensor base = m.forward(ids).to(Device::cpu());
    peft::AdapterSet set(m);
    set.add("lora", peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "init_lora_weights": false, "bias": "all"})"));
    set.add("offset", peft::Config::parse(R"({"peft_type": "STATE_OFFSET", "init": "random"})"));
    // PiSSA rewrites the base weights on the device (the init computed on the host from the device's values)
    set.add("pissa", peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "init_lora_weights": "pissa_niter_2"})"));
    CHECK(m.forward(ids).to(Device::cpu()).to_vector<double>() == base.to_vector<double>());  // held: the base again
    set.set_active("pissa");
    set.get("pissa").to(Device::cuda());
    for (auto& [n, t] : set.get("pissa").named_parameters()) {
        CHECK(t.device().is_cuda());
        copy_into(t, ops::mul_scalar(t, 1.5));  // away from the start, so the adapted model differs from the base
    }
    const Tensor out_pissa = m.forward(ids).to(Device::cpu());
    CHECK(out_pissa.to_vector<double>() != base.to_vector<double>());
    set.set_active("lora");
    set.get("lora").to(Device::cuda());  // applied on the host, moved with the model
    const Tensor out_lora = m.forward(ids).to(Device::cpu());
    set.set_active("offset");
    set.get("offset").to(Device::cuda());
    const Tensor out_offset = m.forward(ids).to(Device::cpu());
    set.set_active("lora");  // held on the device while disabled: enabled there again
    for (auto& [n, t] : set.get("lora").named_parameters()) CHECK(t.device().is_cuda());
    CHECK(m.forward(ids).to(Device::cpu()).to_vector<double>() == out_lora.to_vector<double>());
    set.set_active("offset");
    CHECK(m.forward(ids).to(Device::cpu()).to_vector<double>() == out_offset.to_vector<double>());
    set.set_active("pissa");
    CHECK(m.forward(ids).to(Device::cpu()).to_vector<double>() == out_pissa.to_vector<double>());
    set.set_active("");
    CHECK(m.forward(ids).to(Device::cpu()).to_vector<double>() == base.to_vector<double>());
    // LoRA adapters active together on the device (PiSSA first, then DoRA), against the same pair on the host
    set.add("dora", peft::Config::parse(R"({"peft_type": "LORA", "r": 3, "use_dora": true, "init_lora_weights": false})"));
    set.set_active({"pissa", "dora"});
    set.get("dora").to(Device::cuda());
    const Tensor out_pair = m.forward(ids).to(Device::cpu());
    models::LanguageModel host(c, 9);
    peft::AdapterSet host_set(host);
    for (const char* name : {"pissa", "dora"}) {
        const auto values = set.get(name).named_parameters();
        auto held = host_set.add(name, set.get(name).config()).named_parameters();  // held: enable() puts them back
        REQUIRE(values.size() == held.size());
        for (size_t i = 0; i < held.size(); ++i) copy_into(held[i].second, values[i].second.to(Device::cpu()));
    }
    host_set.set_active({"pissa", "dora"});
    expect_gpu_close(m.forward(ids), host.forward(ids.to(Device::cpu())), GpuTolerance{1e-4, 1e-5}, "PiSSA + DoRA active together");
    set.set_active("");
    CHECK(m.forward(ids).to(Device::cpu()).to_vector<double>() == base.to_vector<double>());
    set.set_active({"pissa", "dora"});
    CHECK(m.forward(ids).to(Device::cpu()).to_vector<double>() == out_pair.to_vector<double>());
    // one adapter per sample on the device (the masks follow the adapter's tensors there)
    set.add("plain", peft::Config::parse(R"({"peft_type": "LORA", "r": 2, "init_lora_weights": false})"));
    set.set_active("plain");
    set.get("plain").to(Device::cuda());
    const Tensor out_plain = m.forward(ids).to(Device::cpu());
    set.set_batch_adapters({"plain", peft::AdapterSet::kBaseAdapter});
    const Tensor mixed = m.forward(ids);
    expect_gpu_close(mixed.narrow(0, 0, 1).contiguous(), out_plain.narrow(0, 0, 1).contiguous(), GpuTolerance{1e-5, 1e-6},
                     "per-sample: sample 0 with the adapter");
    expect_gpu_close(mixed.narrow(0, 1, 1).contiguous(), base.narrow(0, 1, 1).contiguous(), GpuTolerance{1e-5, 1e-6},
                     "per-sample: sample 1 on the base");
    // adapters on the device combined (add_weighted_adapter, cat): the new one, moved there, computes as the pair
    set.add("plain2", peft::Config::parse(R"({"peft_type": "LORA", "r": 3, "lora_alpha": 5, "init_lora_weights": false})"));
    set.set_active({"plain", "plain2"});
    set.get("plain2").to(Device::cuda());
    const Tensor out_two = m.forward(ids).to(Device::cpu());
    peft::WeightedAdapterOptions cat;
    cat.combination_type = "cat";
    set.add_weighted_adapter({"plain", "plain2"}, {1.0, 1.0}, "both", cat);
    set.set_active("both");
    set.get("both").to(Device::cuda());
    expect_gpu_close(m.forward(ids), out_two, GpuTolerance{1e-5, 1e-6}, "cat of two adapters on the device");
}

TEST_CASE("gpu: gradient checkpointing on the device gives the gradients of the plain GPU step, bit for bit") {
    // the recomputation runs the same kernels in the same order (the LoRA dropout masks drawn again from the rewound
    // generator), so even the device's rounding repeats
    for (const char* type : {"mamba", "longhorn"}) {
        INFO(type);
        const models::LMConfig c = small_lm(type);
        std::vector<std::vector<float>> grads[2];
        for (int with = 0; with < 2; ++with) {
            models::LanguageModel lm(c, 5);
            peft::Adapter adapter = peft::apply(lm, peft::Config::parse(
                R"({"peft_type": "LORA", "r": 4, "lora_dropout": 0.2, "target_modules": ["in_proj", "x_proj", "out_proj"]})"));
            adapter.to(Device::cuda());  // the model and the adapter's tensors
            lm.train();
            lm.set_gradient_checkpointing(with == 1);
            lm.loss(batch_ids(2, 600, c.vocab_size).to(Device::cuda())).backward();
            for (auto& [n, t] : lm.named_parameters())
                if (t.requires_grad()) grads[with].push_back(t.grad().to(Device::cpu()).to_vector<float>());
        }
        REQUIRE(grads[0].size() == 6 * size_t(c.num_hidden_layers));
        CHECK(grads[1] == grads[0]);
    }
}
