// `ssmtune bench --device cuda`: figures for the general CUDA kernels (printed, never asserted).
//
// Each row runs one op on tensors already on the GPU, synchronised before and after, best of `repeats` after one
// warm-up; bytes are what the op must read and write once (so GB/s is a lower bound on the traffic), GEMM counts
// 2·M·N·K flops. The CPU column runs the same op on CPU copies. The scan rows count the bytes as the CPU bench does
// (forward u, Δ, z, out and B, C; backward adds gout, du, dΔ, dz, dB, dC); the Longhorn rows the same with x, dt and
// k, q in those places.
#include "tools/bench_cuda.h"

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>

#include "autograd/node.h"
#include "autograd/optim.h"
#include "cuda/kernels.h"
#include "cuda/runtime.h"
#include "models/mamba_mixer.h"
#include "models/ssm_lm.h"
#include "ops/ops.h"
#include "ops/ssm.h"

namespace ssmtune::tools {

namespace {

double best_seconds_synced(int repeats, const std::function<void()>& f, bool gpu) {
    f();  // warm-up: cuBLAS handle, allocator cache
    if (gpu) cuda::synchronize();
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        f();
        if (gpu) cuda::synchronize();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
}

// One row: op(inputs on device) timed on the GPU and on the CPU; `work` is bytes (or flops when flops is true).
void row(const std::string& name, const std::string& size, double work, bool flops, int repeats, double peak_gbs,
         const std::function<void(const Device&)>& op) {
    const double g = best_seconds_synced(repeats, [&] { op(Device::cuda()); }, true);
    const double c = best_seconds_synced(std::min(repeats, 3), [&] { op(Device::cpu()); }, false);
    if (flops)
        std::printf("  %-22s %-22s GPU %9.3f ms  %8.2f TFLOP/s              CPU %10.2f ms  GPU %7.1fx\n", name.c_str(),
                    size.c_str(), g * 1e3, work / g / 1e12, c * 1e3, c / g);
    else
        std::printf("  %-22s %-22s GPU %9.3f ms  %8.1f GB/s (%5.1f%% of peak)  CPU %10.2f ms  GPU %7.1fx\n",
                    name.c_str(), size.c_str(), g * 1e3, work / g / 1e9, 100.0 * work / g / 1e9 / peak_gbs, c * 1e3,
                    c / g);
    std::fflush(stdout);
}

// The bandwidth a plain device-to-device copy of 256 MiB reaches (read + write), GB/s: the practical ceiling beside
// the nominal peak, and the reference for "% of peak" where the driver reports no memory clock (nominal 0).
double copy_bandwidth_gbs(int repeats) {
    const int64_t n = int64_t(1) << 26;
    const Tensor x = Tensor::zeros({n}, DType::F32, Device::cuda());
    const double s = best_seconds_synced(repeats, [&] { x.clone(); }, true);
    return 8.0 * double(n) / s / 1e9;
}

// The nominal peak memory bandwidth, printed with the measured copy bandwidth; returns the one "% of peak" uses.
double print_bandwidths(int repeats) {
    const double nominal = cuda::peak_bandwidth_gbs(), copy = copy_bandwidth_gbs(repeats);
    std::printf("memory bandwidth: nominal peak %.0f GB/s (memory clock × bus width), device copy %.0f GB/s (%.0f%% of "
                "it); %% of peak below is of the %s\n",
                nominal, copy, nominal > 0 ? 100.0 * copy / nominal : 0.0, nominal > 0 ? "nominal peak" : "copy");
    return nominal > 0 ? nominal : copy;
}

}  // namespace

void bench_cuda_kernels(int repeats) {
    SSMTUNE_CHECK(cuda::available(), "bench --device cuda: no usable CUDA GPU in this build or on this machine; fix: "
                                     "run on a machine with an NVIDIA GPU and a CUDA build, or use --device cpu");
    std::printf("CUDA kernels on %s, float32, best of %d\n", cuda::device_name().c_str(), repeats);
    const double peak = print_bandwidths(repeats);
    for (int64_t n : {int64_t(1) << 20, int64_t(1) << 24}) {
        const Tensor x_cpu = Tensor::randn({n}, 1), y_cpu = Tensor::randn({n}, 2);
        const Tensor x_gpu = x_cpu.to(Device::cuda()), y_gpu = y_cpu.to(Device::cuda());
        auto pick = [&](const Device& d, const Tensor& c, const Tensor& g) { return d.is_cuda() ? g : c; };
        const std::string size = "n=" + std::to_string(n);
        row("gelu forward", size, 8.0 * double(n), false, repeats, peak,
            [&](const Device& d) { ops::gelu(pick(d, x_cpu, x_gpu)); });
        row("add", size, 12.0 * double(n), false, repeats, peak,
            [&](const Device& d) { ops::add(pick(d, x_cpu, x_gpu), pick(d, y_cpu, y_gpu)); });
        row("sum (all)", size, 4.0 * double(n), false, repeats, peak,
            [&](const Device& d) { ops::sum(pick(d, x_cpu, x_gpu)); });
    }
    {
        const int64_t rows = 4096, cols = 4096;
        const Tensor x_cpu = Tensor::randn({rows, cols}, 3), x_gpu = x_cpu.to(Device::cuda());
        auto pick = [&](const Device& d) { return d.is_cuda() ? x_gpu : x_cpu; };
        const std::string size = "[4096, 4096]";
        const double bytes = 8.0 * double(rows * cols);
        row("transpose+contiguous", size, bytes, false, repeats, peak,
            [&](const Device& d) { pick(d).transpose(0, 1).contiguous(); });
        row("sum over dim 1", size, bytes / 2, false, repeats, peak, [&](const Device& d) { ops::sum(pick(d), {1}); });
        row("softmax dim 1", size, bytes, false, repeats, peak, [&](const Device& d) { ops::softmax(pick(d), 1); });
        const Tensor t_cpu = Tensor::from_vector(std::vector<int64_t>(size_t(rows), 7), {rows});
        const Tensor t_gpu = t_cpu.to(Device::cuda());
        row("cross_entropy fwd", size, bytes, false, repeats, peak,
            [&](const Device& d) { ops::cross_entropy(pick(d), d.is_cuda() ? t_gpu : t_cpu); });
    }
    for (int64_t m : {int64_t(1024), int64_t(4096)}) {
        const Tensor a_cpu = Tensor::randn({m, m}, 4), b_cpu = Tensor::randn({m, m}, 5);
        const Tensor a_gpu = a_cpu.to(Device::cuda()), b_gpu = b_cpu.to(Device::cuda());
        row("matmul (cuBLAS)", "[" + std::to_string(m) + "]^2", 2.0 * double(m) * double(m) * double(m), true, repeats,
            peak, [&](const Device& d) { ops::matmul(d.is_cuda() ? a_gpu : a_cpu, d.is_cuda() ? b_gpu : b_cpu); });
    }
    {
        const int64_t n = int64_t(1) << 24;
        Tensor p_cpu = Tensor::randn({n}, 6), p_gpu = p_cpu.to(Device::cuda());
        p_cpu.set_requires_grad(true);
        p_gpu.set_requires_grad(true);
        p_cpu.set_grad(Tensor::randn({n}, 7));
        p_gpu.set_grad(p_cpu.grad().to(Device::cuda()));
        autograd::AdamW opt_cpu({p_cpu}), opt_gpu({p_gpu});
        // Reads p, g, m, v and writes p, m, v: 7 arrays.
        row("AdamW step", "n=" + std::to_string(n), 28.0 * double(n), false, repeats, peak,
            [&](const Device& d) { d.is_cuda() ? opt_gpu.step() : opt_cpu.step(); });
    }
    {  // S4D: the Vandermonde kernel and the long convolution at an S4D-layer shape
        const int64_t H = 256, M = 32, L = 4096, Bsz = 8;
        auto on = [](const Device& d, const Tensor& t) { return t.to(d); };
        const Tensor log_dt = ops::add_scalar(Tensor::randn({H}, 8), -4.0), C = Tensor::randn({H, M, 2}, 9);
        const Tensor lar = ops::mul_scalar(Tensor::randn({H, M}, 10), 0.3), ai = Tensor::randn({H, M}, 11);
        row("s4d_kernel", "H=256 N/2=32 L=4096", 4.0 * double(H * L), false, repeats, peak, [&](const Device& d) {
            ops::s4d_kernel(on(d, log_dt), on(d, C), on(d, lar), on(d, ai), L);
        });
        const Tensor u = Tensor::randn({Bsz, H, L}, 12), K = Tensor::randn({H, L}, 13);
        const Tensor u_gpu = u.to(Device::cuda()), K_gpu = K.to(Device::cuda());
        row("causal_conv (FFT)", "B=8 H=256 L=4096", 4.0 * double(2 * Bsz * H * L + H * L), false, repeats, peak,
            [&](const Device& d) {
                ops::causal_conv(d.is_cuda() ? u_gpu : u, d.is_cuda() ? K_gpu : K, ops::ConvAlgorithm::FFT);
            });
    }
    const auto stats = cuda::memory_stats();
    std::printf("  caching allocator: peak %.1f MiB in use, %.1f MiB cached, %llu device allocations, %llu reuses\n",
                double(stats.peak_in_use) / 1048576.0, double(stats.cached) / 1048576.0,
                static_cast<unsigned long long>(stats.raw_allocs), static_cast<unsigned long long>(stats.reuses));
}

namespace {

// Forward and backward (gradient of Σ out, every input a leaf) of a scan on the GPU: best seconds of each.
struct FwdBwd {
    double fwd, bwd;
};
FwdBwd time_scan(int repeats, const std::function<Tensor()>& forward, const std::vector<Tensor*>& leaves) {
    Tensor out;
    const double fwd = best_seconds_synced(repeats, [&] { out = forward(); }, true);
    const Tensor g = Tensor::ones(out.shape(), out.dtype(), out.device());
    const double bwd = best_seconds_synced(repeats, [&] {
        for (Tensor* t : leaves) t->zero_grad();
        out.backward(g);
    }, true);
    return {fwd, bwd};
}

// "fwd ms, GB/s, %peak | bwd ms, GB/s, %peak" for the bytes each direction moves.
std::string scan_columns(const FwdBwd& t, double fwd_bytes, double bwd_bytes, double peak) {
    char text[96];
    std::snprintf(text, sizeof text, "%9.3f %8.1f %5.1f%% | %9.3f %8.1f %5.1f%%", t.fwd * 1e3, fwd_bytes / t.fwd / 1e9,
                  100.0 * fwd_bytes / t.fwd / 1e9 / peak, t.bwd * 1e3, bwd_bytes / t.bwd / 1e9,
                  100.0 * bwd_bytes / t.bwd / 1e9 / peak);
    return text;
}

}  // namespace

void bench_cuda_scan(int64_t B, int64_t E, int64_t N, const std::vector<int64_t>& lengths, int repeats) {
    SSMTUNE_CHECK(cuda::available(), "bench --device cuda: no usable CUDA GPU; fix: use --device cpu");
    std::printf("selective_scan and longhorn_scan on %s, float32, B=%lld E=%lld N=%lld, z gate "
                "(+ softplus for the selective scan), best of %d\n",
                cuda::device_name().c_str(), (long long)B, (long long)E, (long long)N, repeats);
    const double peak = print_bandwidths(repeats);
    std::printf("naive: one thread per (b, e) channel, or per (b, e, n) state (+ a sum over n); x = naive ms / fwd ms\n");
    std::printf("%-9s %7s | %9s %8s %6s | %9s %8s %6s | %10s %7s | %10s %7s | %10s %8s\n", "scan", "L", "fwd ms", "GB/s",
                "%peak", "bwd ms", "GB/s", "%peak", "(b,e) ms", "x", "(b,e,n) ms", "x", "CPU fwd ms", "GPU x");
    for (int64_t L : lengths) {
        const Device dev = Device::cuda();
        auto leaf = [&](Tensor t) { return t.to(dev).set_requires_grad(true); };
        Tensor u = leaf(Tensor::randn({B, E, L}, 1)), d = leaf(Tensor::randn({B, E, L}, 2));
        Tensor z = leaf(Tensor::randn({B, E, L}, 3));
        Tensor A = leaf(ops::neg(ops::exp(Tensor::randn({E, N}, 4) * 0.5)));
        Tensor Bm = leaf(Tensor::randn({B, N, L}, 5)), Cm = leaf(Tensor::randn({B, N, L}, 6));
        ops::SelectiveScanOptions o;
        o.z = z;
        o.delta_softplus = true;
        const FwdBwd sel = time_scan(repeats, [&] { return ops::selective_scan(u, d, A, Bm, Cm, o).out; },
                                     {&u, &d, &z, &A, &Bm, &Cm});
        ops::LonghornScanOptions oh;
        oh.z = z;
        const FwdBwd horn = time_scan(repeats, [&] { return ops::longhorn_scan(u, d, Bm, Cm, oh).out; },
                                      {&u, &d, &z, &Bm, &Cm});
        cuda::SelectiveScanParams p;
        p.u = u.raw_data(), p.delta = d.raw_data(), p.A = A.raw_data(), p.B = Bm.raw_data(), p.C = Cm.raw_data();
        p.z = z.raw_data(), p.batch = B, p.E = E, p.N = N, p.L = L, p.softplus = true;
        Tensor naive_out = Tensor::empty({B, E, L}, DType::F32, dev);
        const double naive = best_seconds_synced(std::min(repeats, 2), [&] {
            cuda::selective_scan_forward_sequential(0, DType::F32, p, naive_out.raw_data(), nullptr);
        }, true);
        double naive_states = 0;  // its B·E·N·L buffer of terms is skipped beyond 16 GiB
        if (4.0 * double(B * E * N * L) <= 16.0 * (1 << 30)) {
            Tensor terms = Tensor::empty({B, E, N, L}, DType::F32, dev);
            naive_states = best_seconds_synced(std::min(repeats, 2), [&] {
                cuda::selective_scan_forward_per_state(0, DType::F32, p, naive_out.raw_data(), nullptr,
                                                       terms.raw_data());
            }, true);
        }
        double cpu_sel = 0, cpu_horn = 0;
        if (L <= 2048) {
            autograd::NoGradGuard no_grad;
            const Tensor uc = u.to(Device::cpu()), dc = d.to(Device::cpu()), Ac = A.to(Device::cpu());
            const Tensor Bc = Bm.to(Device::cpu()), Cc = Cm.to(Device::cpu());
            ops::SelectiveScanOptions oc;
            oc.z = z.to(Device::cpu());
            oc.delta_softplus = true;
            cpu_sel = best_seconds_synced(1, [&] { ops::selective_scan(uc, dc, Ac, Bc, Cc, oc); }, false);
            ops::LonghornScanOptions ohc;
            ohc.z = oc.z;
            cpu_horn = best_seconds_synced(1, [&] { ops::longhorn_scan(uc, dc, Bc, Cc, ohc); }, false);
        }
        const auto cpu_columns = [](double cpu, double fwd) {
            char text[48] = "         -       -";
            if (cpu > 0) std::snprintf(text, sizeof text, "%10.2f %7.1fx", cpu * 1e3, cpu / fwd);
            return std::string(text);
        };
        const double elem = 4.0, lanes = double(B * E * L), bc = double(B * N * L);
        const double fwd_bytes = elem * (4 * lanes + 2 * bc), bwd_bytes = elem * (8 * lanes + 4 * bc);
        char per_state[32] = "         -       -";
        if (naive_states > 0)
            std::snprintf(per_state, sizeof per_state, "%10.2f %6.1fx", naive_states * 1e3, naive_states / sel.fwd);
        std::printf("%-9s %7lld | %s | %10.2f %6.1fx | %s | %s\n", "selective", (long long)L,
                    scan_columns(sel, fwd_bytes, bwd_bytes, peak).c_str(), naive * 1e3, naive / sel.fwd, per_state,
                    cpu_columns(cpu_sel, sel.fwd).c_str());
        std::printf("%-9s %7lld | %s | %10s %7s | %10s %7s | %s\n", "longhorn", (long long)L,
                    scan_columns(horn, fwd_bytes, bwd_bytes, peak).c_str(), "-", "-", "-", "-",
                    cpu_columns(cpu_horn, horn.fwd).c_str());
        std::fflush(stdout);
    }
}

void bench_cuda_mamba(int64_t B, int64_t L, int steps) {
    SSMTUNE_CHECK(cuda::available(), "bench --device cuda: no usable CUDA GPU; fix: use --device cpu");
    models::LMConfig c;
    c.model_type = "mamba";
    c.vocab_size = 50280;
    c.hidden_size = 768;
    c.num_hidden_layers = 24;
    c.state_size = 16;
    c.intermediate_size = 1536;
    c.time_step_rank = 48;
    c.conv_kernel = 4;
    {  // one full layer (in_proj, conv1d, x_proj, dt_proj, scan, out_proj), forward + backward, GPU and CPU
        Generator gen(0);
        models::MambaMixer cpu_layer(c, gen);
        Generator gen2(0);
        models::MambaMixer gpu_layer(c, gen2);
        gpu_layer.to(Device::cuda());
        const Tensor h = Tensor::randn({B, L, c.hidden_size}, 3);
        const auto fwd_bwd = [&](models::MambaMixer& layer, const Tensor& x) {
            for (auto& [n, t] : layer.named_parameters()) t.zero_grad();
            Tensor y = layer.forward(x);
            y.backward(Tensor::ones(y.shape(), y.dtype(), y.device()));
        };
        const Tensor hg = h.to(Device::cuda()).set_requires_grad(true), hc = h.detach().set_requires_grad(true);
        const double gpu = best_seconds_synced(steps, [&] { fwd_bwd(gpu_layer, hg); }, true);
        const double cpu = best_seconds_synced(1, [&] { fwd_bwd(cpu_layer, hc); }, false);
        std::printf("Mamba-130M layer on %s (D=768, E=1536, N=16, B=%lld, L=%lld, float32), forward + backward: GPU %.2f ms "
                    "(%.0f tokens/s), CPU %.0f ms, GPU %.1fx\n",
                    cuda::device_name().c_str(), (long long)B, (long long)L, gpu * 1e3, double(B * L) / gpu, cpu * 1e3,
                    cpu / gpu);
        std::fflush(stdout);
    }
    models::LanguageModel model(c, 0);
    model.to(Device::cuda());
    autograd::AdamW opt(model.parameters(), autograd::AdamW::Options().lr(1e-4));
    const Tensor ids = Tensor::uniform({B, L}, 7, 0, double(c.vocab_size)).to(DType::I64).to(Device::cuda());
    const auto step = [&] {
        Tensor loss = model.loss(ids);
        loss.backward();
        opt.step();
        opt.zero_grad();
    };
    const double seconds = best_seconds_synced(steps, step, true);
    const auto stats = cuda::memory_stats();
    std::printf("Mamba-130M-shaped training step on %s (D=768, 24 layers, E=1536, N=16, vocab 50280, B=%lld, L=%lld, "
                "AdamW, float32): %.1f ms/step, %.0f tokens/s, peak GPU memory %.2f GiB\n",
                cuda::device_name().c_str(), (long long)B, (long long)L, seconds * 1e3, double(B * L) / seconds,
                double(stats.peak_in_use) / double(1ull << 30));
}

}  // namespace ssmtune::tools
