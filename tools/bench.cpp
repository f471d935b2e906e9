// `ssmtune bench`: printed speed figures (never asserted by tests).
//   scan  — selective_scan forward and backward on the CPU: time, effective GB/s (bytes the op must read and
//           write once: u, Δ, z, out [B·E·L] and B, C [B·N·L] forward; plus gout, du, dΔ, dz, dB, dC backward),
//           the bandwidth bound (those bytes at the machine's measured triad bandwidth) and how far forward +
//           backward are from it, and the speed-up over the plain sequential reference (double precision).
//   mamba — one training step of a Mamba LM (default D=256, 4 layers, B=8, L=256, vocab 256, AdamW):
//           tokens/s and peak CPU memory, without and with gradient checkpointing.
//   --device cuda — the general CUDA kernels against the CPU path (tools/bench_cuda.cpp).
#include <chrono>
#include <cstdio>

#ifdef __linux__
#include <sys/resource.h>
#include <unistd.h>
#endif

#include "autograd/node.h"
#include "autograd/optim.h"
#include "engine/cpu_isa.h"
#include "engine/storage.h"
#include "engine/version.h"
#include "models/ssm_lm.h"
#include "ops/ops.h"
#include "ops/scan_common.h"
#include "ops/ssm.h"
#include "peft/peft.h"
#include "tools/bench_cuda.h"
#include "tools/commands.h"

namespace ssmtune::tools {

namespace {

using clock_type = std::chrono::steady_clock;

// Process memory as the OS sees it (what tools/bench/mamba_torch.py measures for PyTorch): the resident set now
// and its peak so far, in bytes; 0 where /proc and getrusage are not available.
double rss_bytes() {
#ifdef __linux__
    long pages_total = 0, pages_resident = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
        if (std::fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = 0;
        std::fclose(f);
    }
    return double(pages_resident) * double(::sysconf(_SC_PAGESIZE));
#else
    return 0;
#endif
}
double peak_rss_bytes() {
#ifdef __linux__
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return double(usage.ru_maxrss) * 1024.0;  // Linux reports KiB
#else
    return 0;
#endif
}

template <class F>
double best_seconds(int repeats, F&& f) {
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
        const auto t0 = clock_type::now();
        f();
        best = std::min(best, std::chrono::duration<double>(clock_type::now() - t0).count());
    }
    return best;
}

// Sustainable memory bandwidth of this machine, STREAM-triad style: a[i] = b[i] + 3·c[i] over three 64 MiB float
// arrays (far beyond the caches), all threads, best of 5; bytes counted as 3 arrays moved once (read b, c; write a).
double triad_gb_per_s() {
    const int64_t n = int64_t(64) << 18;  // 16 Mi floats = 64 MiB per array
    std::vector<float> a(size_t(n), 0.0f), b(size_t(n), 1.0f), c(size_t(n), 2.0f);
    const double seconds = best_seconds(5, [&] {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; ++i) a[size_t(i)] = b[size_t(i)] + 3.0f * c[size_t(i)];
    });
    volatile float sink = a[size_t(n / 2)];
    (void)sink;
    return 3.0 * 4.0 * double(n) / seconds / 1e9;
}

// `rounds` passes of y[i] += scan_exp(x[i]·(r + 1)) over one 4096-element block, vectorised as in the scans.
void exp_block(const float* xb, float* yb, int64_t rounds) {
    for (int64_t r = 0; r < rounds; ++r) {
#pragma omp simd
        for (int64_t i = 0; i < 4096; ++i) yb[i] += ops::scan_detail::scan_exp(xb[i] * float(r + 1));
    }
}
#if SSMTUNE_CPU_DISPATCH
SSMTUNE_AVX2_KERNEL void exp_block_avx2(const float* xb, float* yb, int64_t rounds) { exp_block(xb, yb, rounds); }
#endif

// Throughput of the scans' float exp (scan_exp) on this machine: exponentials per second over a 1 Mi-element
// cache-resident buffer, all threads, vectorised as in the scans and at the CPU level they use (best of 5).
double scan_exps_per_s() {
    const int64_t n = int64_t(1) << 20, rounds = 16;
    std::vector<float> x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[size_t(i)] = -0.001f * float(i % 4096);
    const bool avx2 = cpu_isa() == CpuIsa::avx2;
    (void)avx2;
    const double seconds = best_seconds(5, [&] {
#pragma omp parallel for schedule(static)
        for (int64_t block = 0; block < n; block += 4096) {
#if SSMTUNE_CPU_DISPATCH
            if (avx2) {
                exp_block_avx2(x.data() + block, y.data() + block, rounds);
                continue;
            }
#endif
            exp_block(x.data() + block, y.data() + block, rounds);
        }
    });
    volatile float sink = y[size_t(n / 3)];
    (void)sink;
    return double(n * rounds) / seconds;
}

void bench_scan(int64_t B, int64_t E, int64_t N, const std::vector<int64_t>& lengths, int repeats, bool reference) {
    const double bandwidth = triad_gb_per_s(), exps = scan_exps_per_s();
    std::printf("selective_scan, float32, B=%lld E=%lld N=%lld, %d threads (best of %d); memory bandwidth (triad) "
                "%.1f GB/s; scan_exp %.2f G/s\n", (long long)B, (long long)E, (long long)N, cpu_threads(), repeats,
                bandwidth, exps / 1e9);
    std::printf("%7s | %10s %8s | %10s %8s | %9s %9s | %9s %9s | %12s %8s\n", "L", "fwd ms", "GB/s", "bwd ms", "GB/s",
                "bound ms", "x bound", "exp ms", "x exp", "reference ms", "speed-up");
    for (int64_t L : lengths) {
        Tensor u = Tensor::randn({B, E, L}, 1).set_requires_grad(true), d = Tensor::randn({B, E, L}, 2).set_requires_grad(true);
        Tensor z = Tensor::randn({B, E, L}, 3).set_requires_grad(true);
        Tensor A = ops::neg(ops::exp(Tensor::randn({E, N}, 4) * 0.5)).detach().set_requires_grad(true);
        Tensor Bm = Tensor::randn({B, N, L}, 5).set_requires_grad(true), Cm = Tensor::randn({B, N, L}, 6).set_requires_grad(true);
        ops::SelectiveScanOptions o;
        o.z = z;
        o.delta_softplus = true;
        Tensor out;
        const double fwd = best_seconds(repeats, [&] { out = ops::selective_scan(u, d, A, Bm, Cm, o).out; });
        Tensor g = Tensor::ones(out.shape());
        const double bwd = best_seconds(repeats, [&] {
            for (Tensor* t : {&u, &d, &z, &A, &Bm, &Cm}) t->zero_grad();
            out.backward(g);
        });
        const double elem = 4.0, lanes = double(B * E * L), bc = double(B * N * L);
        const double fwd_bytes = elem * (4 * lanes + 2 * bc), bwd_bytes = elem * (8 * lanes + 4 * bc);
        double ref = 0;
        if (reference) {
            autograd::NoGradGuard no_grad;
            ref = best_seconds(1, [&] { ops::selective_scan_reference(u, d, A, Bm, Cm, o); });
        }
        // bound: the time forward + backward would take if they only had to move their bytes once at triad speed;
        // exp: the time of the exponentials alone, exp(Δ_t A) once per (b, e, n, t) in the forward and once more in
        // the backward's recomputation, at scan_exp's measured rate (a floor for any kernel that keeps them)
        const double bound = (fwd_bytes + bwd_bytes) / (bandwidth * 1e9), exp_floor = 2.0 * lanes * double(N) / exps;
        std::printf("%7lld | %10.2f %8.2f | %10.2f %8.2f | %9.2f %8.1fx | %9.2f %8.1fx | ", (long long)L, fwd * 1e3,
                    fwd_bytes / fwd / 1e9, bwd * 1e3, bwd_bytes / bwd / 1e9, bound * 1e3, (fwd + bwd) / bound,
                    exp_floor * 1e3, (fwd + bwd) / exp_floor);
        if (reference) std::printf("%12.1f %7.1fx\n", ref * 1e3, ref / fwd);
        else std::printf("%12s %8s\n", "-", "-");  // --no-reference
    }
}

void bench_mamba(int64_t D, int64_t layers, int64_t B, int64_t L, int64_t V, int steps) {
    const double rss_start = rss_bytes();
    models::LMConfig c;
    c.vocab_size = V;
    c.hidden_size = D;
    c.num_hidden_layers = layers;
    c.state_size = 16;
    c.intermediate_size = 2 * D;
    c.time_step_rank = (D + 15) / 16;
    models::LanguageModel model(c, 0);
    autograd::AdamW opt(model.parameters(), autograd::AdamW::Options().lr(1e-3));
    Tensor ids = Tensor::uniform({B, L}, 7, 0, double(V)).to(DType::I64);
    reset_cpu_peak_bytes();
    const size_t base = cpu_bytes_in_use();
    const auto step = [&] {
        Tensor loss = model.loss(ids);
        loss.backward();
        opt.step();
        opt.zero_grad();
    };
    step();  // warm-up (allocates optimizer state)
    const double seconds = best_seconds(steps, step);
    std::printf("mamba training step: D=%lld layers=%lld E=%lld N=16 B=%lld L=%lld vocab=%lld, %lld params, %d threads\n",
                (long long)D, (long long)layers, (long long)(2 * D), (long long)B, (long long)L, (long long)V,
                (long long)model.num_parameters(), cpu_threads());
    std::printf("  %.1f ms/step, %.0f tokens/s, peak tensor memory %.1f MiB (model + optimizer %.1f MiB)\n", seconds * 1e3,
                double(B * L) / seconds, double(cpu_peak_bytes()) / 1048576.0, double(base) / 1048576.0);
    std::printf("  peak RSS %.1f MiB, %.1f MiB over the RSS before the model was built\n", peak_rss_bytes() / 1048576.0,
                (peak_rss_bytes() - rss_start) / 1048576.0);
    // the same step with activation checkpointing per layer (train.gradient_checkpointing): the same gradients, less
    // tensor memory at the peak, one more forward pass per layer
    model.set_gradient_checkpointing(true);
    step();
    cpu_empty_cache();
    reset_cpu_peak_bytes();
    const double seconds_ckpt = best_seconds(steps, step);
    std::printf("  with gradient checkpointing: %.1f ms/step (%.2fx), %.0f tokens/s, peak tensor memory %.1f MiB\n",
                seconds_ckpt * 1e3, seconds_ckpt / seconds, double(B * L) / seconds_ckpt,
                double(cpu_peak_bytes()) / 1048576.0);
}

// Step time and peak tensor memory of each PEFT method against full fine-tuning, same model and batch.
void bench_peft(int64_t D, int64_t layers, int64_t B, int64_t L, int64_t V, int steps) {
    models::LMConfig c;
    c.vocab_size = V;
    c.hidden_size = D;
    c.num_hidden_layers = layers;
    c.state_size = 16;
    c.intermediate_size = 2 * D;
    c.time_step_rank = (D + 15) / 16;
    Tensor ids = Tensor::uniform({B, L}, 7, 0, double(V)).to(DType::I64);
    const std::vector<std::pair<std::string, std::string>> methods = {
        {"FULL", R"({"peft_type": "FULL"})"},
        {"LORA r=8 (in/x/dt/out_proj)", R"({"peft_type": "LORA", "r": 8})"},
        {"LORA r=8 DoRA", R"({"peft_type": "LORA", "r": 8, "use_dora": true})"},
        {"STATE_OFFSET h", R"({"peft_type": "STATE_OFFSET", "variant": "h"})"},
        {"STATE_OFFSET h r=4", R"({"peft_type": "STATE_OFFSET", "variant": "h", "r": 4})"},
        {"STATE_OFFSET y", R"({"peft_type": "STATE_OFFSET", "variant": "y"})"},
        {"INITIAL_STATE", R"({"peft_type": "INITIAL_STATE"})"},
        {"ADDITIONAL_SCAN k=8", R"({"peft_type": "ADDITIONAL_SCAN"})"},
        {"PARTIAL A_log, D", R"({"peft_type": "PARTIAL", "param_names": ["A_log", "D"]})"},
        {"PREFIX (16)", R"({"peft_type": "PREFIX"})"},
        {"BITFIT", R"({"peft_type": "BITFIT"})"},
        {"PARALLEL_ADAPTER r=16", R"({"peft_type": "PARALLEL_ADAPTER"})"},
        {"SURM circulant", R"({"peft_type": "SURM"})"},
    };
    std::printf("PEFT training step: D=%lld layers=%lld B=%lld L=%lld vocab=%lld, %d threads\n", (long long)D,
                (long long)layers, (long long)B, (long long)L, (long long)V, cpu_threads());
    std::printf("%-30s %12s %10s %8s %12s\n", "method", "trainable", "ms/step", "vs FULL", "peak MiB");
    double full = 0;
    for (const auto& [name, cfg] : methods) {
        models::LanguageModel model(c, 0);
        peft::Adapter a = peft::apply(model, peft::Config::parse(cfg));
        autograd::AdamW opt(a.parameters(), autograd::AdamW::Options().lr(1e-3));
        const auto step = [&] {
            Tensor loss = model.loss(ids);
            loss.backward();
            opt.step();
            opt.zero_grad();
        };
        step();  // warm-up (allocates optimizer state)
        reset_cpu_peak_bytes();
        const double seconds = best_seconds(steps, step);
        if (name == "FULL") full = seconds;
        std::printf("%-30s %12lld %10.1f %7.2fx %12.1f\n", name.c_str(), (long long)a.num_trainable(), seconds * 1e3,
                    full > 0 ? seconds / full : 1.0, double(cpu_peak_bytes()) / 1048576.0);
        std::fflush(stdout);
    }
}

}  // namespace

int run_bench(int argc, char** argv) {
    Flags flags(argc, argv,
                {{"what", "all"}, {"device", "cpu"}, {"repeats", "3"}, {"batch", "8"}, {"inner", "512"}, {"state", "16"},
                 {"lengths", "256,1024,4096"}, {"no-reference", Flags::kSwitch}, {"steps", "3"}},
                "bench");
    if (flags.help()) {
        std::printf("usage: ssmtune bench [--what all|scan|mamba|peft|kernels] [--device cpu|cuda] [--repeats R] [--batch B]\n"
                    "                     [--inner E] [--state N] [--lengths L1,L2,...] [--no-reference] [--steps S]\n"
                    "Prints selective-scan, Mamba training-step and PEFT-vs-full step figures (CPU), or the general\n"
                    "CUDA kernels against the CPU path (--device cuda).\n");
        return 0;
    }
    const std::string device = flags.str("device");
    if (device != "cpu" && device != "cuda") throw UsageError("bench: --device must be cpu or cuda");
    const std::string what = flags.str("what");
    if (what != "all" && what != "scan" && what != "mamba" && what != "peft" && what != "kernels")
        throw UsageError("bench: --what must be all, scan, mamba, peft or kernels (cuda)");
    const std::vector<int64_t> lengths = flags.integers("lengths");
    if (lengths.empty()) throw UsageError("bench: --lengths needs at least one length");
    for (int64_t L : lengths)
        if (L < 1 || L > Flags::kMaxSize)
            throw UsageError("bench: --lengths must be integers in [1, " + std::to_string(Flags::kMaxSize) + "]");
    const int repeats = int(flags.integer("repeats", 1, 1000000));
    const int steps = int(flags.integer("steps", 1, 1000000));
    const int64_t batch = flags.integer("batch", 1, Flags::kMaxSize), inner = flags.integer("inner", 1, Flags::kMaxSize),
                  state = flags.integer("state", 1, Flags::kMaxSize);
    std::printf("ssmtune %s bench (%s)\n", version(), build_info().c_str());
    if (device == "cuda") {
        SSMTUNE_CHECK(what != "peft", "bench --device cuda: --what peft has no CUDA version yet; fix: use --device cpu");
        if (what == "all" || what == "kernels") bench_cuda_kernels(repeats);
        if (what == "all" || what == "scan")
            bench_cuda_scan(batch, inner, state, lengths, repeats);
        if (what == "all" || what == "mamba") bench_cuda_mamba(8, 1024, steps);
        return 0;
    }
    if (what == "all" || what == "scan")
        bench_scan(batch, inner, state, lengths, repeats, !flags.is_set("no-reference"));
    if (what == "all" || what == "mamba") bench_mamba(256, 4, 8, 256, 256, steps);
    if (what == "all" || what == "peft") bench_peft(256, 4, 8, 256, 256, steps);
    return 0;
}

}  // namespace ssmtune::tools
