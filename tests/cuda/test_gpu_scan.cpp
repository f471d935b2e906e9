// The selective scan's CUDA kernels against the CPU op (forward, every gradient) and the sequential reference:
// every option, lengths that are not a multiple of the 512-step chunk, L = 1 and L = 16384, N from 1 to 64,
// channel counts that span several backward groups; and the same bits on a second run (no atomics). Longhorn's scan
// (cuda/longhorn_scan.cu, on the same block machinery) the same way against its CPU op and reference.
#include "cuda/kernels.h"
#include "gpu_compare.h"
#include "ops/ssm.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

struct ScanCase {
    int64_t B, E, N, L;
    bool extras;  // D, z, delta_bias + softplus, h0, state offset, output offset, last state
    bool h0_batched;
};

// Inputs in the CPU op's argument order: u, delta, A, B, C, then D, z, bias, h0, h′, y′ when extras.
std::vector<Tensor> scan_inputs(const ScanCase& c, DType t, uint64_t seed) {
    auto in = [&](const Shape& s, double scale, double shift) {
        Tensor x = ops::add_scalar(ops::mul_scalar(Tensor::randn(s, seed++, t), scale), shift);
        x.set_requires_grad(true);
        return x;
    };
    // Δ is raw (no softplus) without the options: kept positive there, so exp(Δ A) decays and F32 cannot overflow
    // over 600 steps (found by the host emulation, tests/emulation/).
    std::vector<Tensor> v = {in({c.B, c.E, c.L}, 1.0, 0.0), c.extras ? in({c.B, c.E, c.L}, 0.5, -1.0) : in({c.B, c.E, c.L}, 0.2, 0.6),
                             in({c.E, c.N}, 0.3, -1.0), in({c.B, c.N, c.L}, 1.0, 0.0), in({c.B, c.N, c.L}, 1.0, 0.0)};
    if (c.extras) {
        v.push_back(in({c.E}, 1.0, 0.0));
        v.push_back(in({c.B, c.E, c.L}, 1.0, 0.0));
        v.push_back(in({c.E}, 0.5, 0.0));
        v.push_back(c.h0_batched ? in({c.B, c.E, c.N}, 1.0, 0.0) : in({c.E, c.N}, 1.0, 0.0));
        v.push_back(in({c.E, c.N}, 1.0, 0.0));
        v.push_back(in({c.E}, 1.0, 0.0));
    }
    return v;
}

// out (and the last state, flattened after it, when extras) of the scan on the inputs' device.
Tensor run_scan(const std::vector<Tensor>& in, bool extras) {
    ops::SelectiveScanOptions o;
    if (extras) {
        o.D = in[5], o.z = in[6], o.delta_bias = in[7], o.delta_softplus = true, o.h0 = in[8];
        o.state_offset = in[9], o.output_offset = in[10], o.return_last_state = true;
    }
    const ops::SelectiveScanResult r = ops::selective_scan(in[0], in[1], in[2], in[3], in[4], o);
    return extras ? ops::concat({r.out.reshape({-1}), r.last_state.reshape({-1})}, 0) : r.out;
}

GpuTolerance scan_tolerance(DType t) { return t == DType::F64 ? GpuTolerance{1e-9, 1e-10} : GpuTolerance{6e-4, 2e-3}; }

// The shapes both scans are checked on: odd L, L = 1, one chunk + 1, several backward groups, N from 1 to 64.
const std::vector<ScanCase> kScanCases = {
    {2, 5, 16, 37, false, false}, {2, 5, 16, 37, true, false}, {1, 3, 4, 1, true, true},
    {2, 33, 8, 513, true, false}, {1, 70, 16, 1300, true, true}, {2, 4, 64, 600, false, false},
    {1, 2, 1, 512, true, false}};

std::string case_name(const std::string& scan, DType t, const ScanCase& c) {
    return scan + (t == DType::F64 ? "F64" : "F32") + " B=" + std::to_string(c.B) + " E=" + std::to_string(c.E) +
           " N=" + std::to_string(c.N) + " L=" + std::to_string(c.L) + (c.extras ? " all options" : "") +
           (c.h0_batched ? " batched h0" : "");
}

// The gradients of Σ f(x)² for GPU copies of `inputs`, computed twice: the same bits (no atomics).
void expect_backward_bits_twice(const std::vector<Tensor>& inputs, const TensorsFn& f) {
    std::vector<std::vector<float>> first;
    for (int run = 0; run < 2; ++run) {
        std::vector<Tensor> leaves;
        for (const Tensor& x : inputs) leaves.push_back(gpu_leaf(x));
        ops::sum(ops::mul(f(leaves), f(leaves))).backward();
        for (size_t k = 0; k < leaves.size(); ++k) {
            const std::vector<float> v = leaves[k].grad().to_vector<float>();
            if (run == 0) first.push_back(v);
            else CHECK(v == first[k]);
        }
    }
}

}  // namespace

TEST_CASE("gpu: selective scan forward and every gradient match the CPU op") {
    for (DType t : {DType::F32, DType::F64})
        for (const ScanCase& c : kScanCases)
            expect_op_matches_cpu(case_name("", t, c), [&](const auto& in) { return run_scan(in, c.extras); },
                                  scan_inputs(c, t, 7), scan_tolerance(t), scan_tolerance(t));
}

namespace {

// Every option of the scan from inputs made by scan_inputs with extras: D, z, Δ bias + softplus, h0, h′, y′, last state.
ops::SelectiveScanOptions every_option(const std::vector<Tensor>& in) {
    ops::SelectiveScanOptions o;
    o.D = in[5], o.z = in[6], o.delta_bias = in[7], o.delta_softplus = true, o.h0 = in[8];
    o.state_offset = in[9], o.output_offset = in[10], o.return_last_state = true;
    return o;
}

// The sequential reference on the CPU inputs, and the inputs' copies on the GPU.
std::pair<ops::SelectiveScanResult, std::vector<Tensor>> reference_and_gpu_inputs(const std::vector<Tensor>& in) {
    std::vector<Tensor> g;
    for (const Tensor& x : in) g.push_back(x.detach().to(Device::cuda()));
    return {ops::selective_scan_reference(in[0], in[1], in[2], in[3], in[4], every_option(in)), g};
}

}  // namespace

TEST_CASE("gpu: selective scan matches the sequential reference at L = 16384") {
    const auto [ref, g] = reference_and_gpu_inputs(scan_inputs(ScanCase{1, 3, 16, 16384, true, false}, DType::F32, 11));
    const ops::SelectiveScanResult r = ops::selective_scan(g[0], g[1], g[2], g[3], g[4], every_option(g));
    expect_gpu_close(r.out, ref.out, scan_tolerance(DType::F32), "out vs reference");
    expect_gpu_close(r.last_state, ref.last_state, scan_tolerance(DType::F32), "last state vs reference");
}

TEST_CASE("gpu: the benchmark's two naive scan kernels match the sequential reference") {
    const ScanCase c{2, 5, 16, 1100, true, true};
    const auto [ref, g] = reference_and_gpu_inputs(scan_inputs(c, DType::F32, 13));
    cuda::SelectiveScanParams p;
    p.u = g[0].raw_data(), p.delta = g[1].raw_data(), p.A = g[2].raw_data(), p.B = g[3].raw_data();
    p.C = g[4].raw_data(), p.D = g[5].raw_data(), p.z = g[6].raw_data(), p.delta_bias = g[7].raw_data();
    p.h0 = g[8].raw_data(), p.state_offset = g[9].raw_data(), p.output_offset = g[10].raw_data();
    p.batch = c.B, p.E = c.E, p.N = c.N, p.L = c.L, p.softplus = true, p.h0_batched = c.h0_batched;
    for (const bool per_state : {false, true}) {
        Tensor out = Tensor::empty({c.B, c.E, c.L}, DType::F32, Device::cuda());
        Tensor last = Tensor::empty({c.B, c.E, c.N}, DType::F32, Device::cuda());
        Tensor terms = Tensor::empty({c.B, c.E, c.N, c.L}, DType::F32, Device::cuda());
        if (per_state)
            cuda::selective_scan_forward_per_state(0, DType::F32, p, out.raw_data(), last.raw_data(), terms.raw_data());
        else
            cuda::selective_scan_forward_sequential(0, DType::F32, p, out.raw_data(), last.raw_data());
        const std::string name = per_state ? "per (b, e, n) kernel" : "per (b, e) kernel";
        expect_gpu_close(out, ref.out, scan_tolerance(DType::F32), name + " out vs reference");
        expect_gpu_close(last, ref.last_state, scan_tolerance(DType::F32), name + " last state vs reference");
    }
}

TEST_CASE("gpu: selective scan backward gives the same bits twice") {
    expect_backward_bits_twice(scan_inputs(ScanCase{2, 40, 16, 700, true, false}, DType::F32, 21),
                               [](const auto& in) { return run_scan(in, true); });
}

namespace {

// Longhorn inputs in the CPU op's order: x, dt, k, q, then D, z, dt_bias, h0, h′, y′ when extras. k is scaled so
// Σ_n k² spans small and large values of the normaliser β Σ k².
std::vector<Tensor> horn_inputs(const ScanCase& c, DType t, uint64_t seed) {
    auto in = [&](const Shape& s, double scale, double shift) {
        Tensor x = ops::add_scalar(ops::mul_scalar(Tensor::randn(s, seed++, t), scale), shift);
        x.set_requires_grad(true);
        return x;
    };
    std::vector<Tensor> v = {in({c.B, c.E, c.L}, 1.0, 0.0), in({c.B, c.E, c.L}, 1.0, -1.0),
                             in({c.B, c.N, c.L}, 0.7, 0.0), in({c.B, c.N, c.L}, 1.0, 0.0)};
    if (c.extras) {
        v.push_back(in({c.E}, 1.0, 0.0));
        v.push_back(in({c.B, c.E, c.L}, 1.0, 0.0));
        v.push_back(in({c.E}, 0.5, 0.0));
        v.push_back(c.h0_batched ? in({c.B, c.E, c.N}, 0.5, 0.0) : in({c.E, c.N}, 0.5, 0.0));
        v.push_back(in({c.E, c.N}, 0.5, 0.0));
        v.push_back(in({c.E}, 0.5, 0.0));
    }
    return v;
}

ops::LonghornScanOptions horn_options(const std::vector<Tensor>& in, bool extras) {
    ops::LonghornScanOptions o;
    if (extras) {
        o.D = in[4], o.z = in[5], o.dt_bias = in[6], o.h0 = in[7], o.state_offset = in[8], o.output_offset = in[9];
        o.return_last_state = true;
    }
    return o;
}

Tensor run_horn(const std::vector<Tensor>& in, bool extras) {
    const ops::LonghornScanResult r = ops::longhorn_scan(in[0], in[1], in[2], in[3], horn_options(in, extras));
    return extras ? ops::concat({r.out.reshape({-1}), r.last_state.reshape({-1})}, 0) : r.out;
}

}  // namespace

TEST_CASE("gpu: Longhorn scan forward and every gradient match the CPU op") {
    for (DType t : {DType::F32, DType::F64})
        for (const ScanCase& c : kScanCases)
            expect_op_matches_cpu(case_name("Longhorn ", t, c), [&](const auto& in) { return run_horn(in, c.extras); },
                                  horn_inputs(c, t, 3), scan_tolerance(t), scan_tolerance(t));
}

TEST_CASE("gpu: Longhorn scan matches the sequential reference at L = 16384, and its backward gives the same bits twice") {
    const ScanCase c{1, 3, 16, 16384, true, false};
    const std::vector<Tensor> in = horn_inputs(c, DType::F32, 13);
    const ops::LonghornScanResult ref =
        ops::longhorn_scan_reference(in[0], in[1], in[2], in[3], horn_options(in, true));
    std::vector<Tensor> g;
    for (const Tensor& x : in) g.push_back(x.detach().to(Device::cuda()));
    const ops::LonghornScanResult r = ops::longhorn_scan(g[0], g[1], g[2], g[3], horn_options(g, true));
    expect_gpu_close(r.out, ref.out, scan_tolerance(DType::F32), "Longhorn out vs reference");
    expect_gpu_close(r.last_state, ref.last_state, scan_tolerance(DType::F32), "Longhorn last state vs reference");

    expect_backward_bits_twice(horn_inputs(ScanCase{2, 40, 16, 700, true, false}, DType::F32, 23),
                               [](const auto& in) { return run_horn(in, true); });
}
