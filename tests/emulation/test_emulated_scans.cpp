// The CUDA scan kernels (cuda/selective_scan.cu, cuda/longhorn_scan.cu) executed by the host emulation
// (cuda/emulation/host_simt.h) against the CPU ops: forward, every gradient, the last state, with and without every
// option, lengths across the 512-step chunk, channel counts across backward groups, N up to 64; and the same bits
// when each block's threads take turns in the reverse order (a race between them would change them). The partial
// gradients are finished the way the ops' CUDA glue finishes them (ops/selective_scan_cuda.cpp,
// ops/longhorn_scan_cuda.cpp: sums over channel groups and over the batch, and Longhorn's dk += 2 k Σ dS). Shapes
// are smaller than the GPU suite's (tests/cuda/test_gpu_scan.cpp): each block here is 128 host fibers.
#include <limits>

#include "ops/ops.h"
#include "ops/ssm.h"
#include "emulation_util.h"
#include "test_util.h"

#include "cuda/emulation/schedule.h"
#include "emulated_kernels.h"  // after the ssmtune headers (see there)

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

struct ScanCase {
    int64_t B, E, N, L;
    bool extras;  // D, z, dt / Δ bias (+ softplus), h0, state offset, output offset, last state
    bool h0_batched;
};

// L = 1, odd L, one chunk + 1 step (two chunks), two backward groups (E = 33), N = 1 and N = 64. Every case runs
// in F64 (tight tolerances); the cases marked run in F32 too (the same templates, float math).
struct EmulatedCase {
    ScanCase shape;
    bool f32;
};
const std::vector<EmulatedCase> kEmulatedCases = {
    {{2, 3, 8, 37, false, false}, false}, {{1, 3, 8, 37, true, false}, true}, {{1, 3, 4, 1, true, true}, false},
    {{1, 33, 2, 37, true, false}, false}, {{1, 2, 2, 513, true, true}, true}, {{1, 1, 64, 70, false, false}, true},
    {{1, 2, 1, 600, true, false}, false}};

std::string case_name(const char* scan, DType t, const ScanCase& c) {
    return std::string(scan) + (t == DType::F64 ? " F64" : " F32") + " B=" + std::to_string(c.B) +
           " E=" + std::to_string(c.E) + " N=" + std::to_string(c.N) + " L=" + std::to_string(c.L) +
           (c.extras ? " all options" : "") + (c.h0_batched ? " batched h0" : "");
}

// The GPU suite's scan tolerances (mamba_ssm's fp32 rtol / atol; tight in F64).
void expect_scan_close(const Tensor& actual, const Tensor& expected, DType t, const std::string& what) {
    const double rtol = t == DType::F64 ? 1e-9 : 6e-4, atol = t == DType::F64 ? 1e-10 : 2e-3;
    expect_close(actual, expected, rtol, atol, what + " (emulated CUDA kernel vs CPU op)");
}

const void* ptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }
void* mut(Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }

// What a scan gives: out, last state (when asked) and the gradients in the CPU op's input order.
struct ScanRun {
    Tensor out, last;
    std::vector<Tensor> grads;
};

// The CPU op's forward and the gradients of Σ out ⊙ gout + Σ last ⊙ glast.
template <class Op>
ScanRun cpu_run(const std::vector<Tensor>& inputs, const Tensor& gout, const Tensor& glast, Op op) {
    const std::vector<Tensor> leaves = leaves_of(inputs);
    ScanRun r;
    std::tie(r.out, r.last) = op(leaves);
    Tensor loss = ops::sum(ops::mul(r.out, gout));
    if (r.last.defined()) loss = ops::add(loss, ops::sum(ops::mul(r.last, glast)));
    loss.backward();
    for (const Tensor& l : leaves) r.grads.push_back(l.defined() ? l.grad() : Tensor());
    r.out = r.out.detach(), r.last = r.last.defined() ? r.last.detach() : Tensor();
    return r;
}

void expect_runs_match(const ScanRun& emu, const ScanRun& cpu, DType t, const std::vector<std::string>& names,
                       const std::string& name) {
    expect_scan_close(emu.out, cpu.out, t, name + " out");
    if (cpu.last.defined()) expect_scan_close(emu.last, cpu.last, t, name + " last state");
    for (size_t k = 0; k < names.size(); ++k) {
        if (!cpu.grads[k].defined()) continue;
        REQUIRE(emu.grads[k].defined());
        expect_scan_close(emu.grads[k], cpu.grads[k], t, name + " d" + names[k]);
    }
}

// The same bits from a run whose threads took turns in the reverse order (no race between threads of a block).
void expect_same_bits(const ScanRun& a, const ScanRun& b, const std::string& name) {
    CHECK_MESSAGE(a.out.to_vector<double>() == b.out.to_vector<double>(), name, ": out differs");
    if (a.last.defined()) CHECK_MESSAGE(a.last.to_vector<double>() == b.last.to_vector<double>(), name, ": last differs");
    REQUIRE(a.grads.size() == b.grads.size());
    for (size_t k = 0; k < a.grads.size(); ++k) {
        if (!a.grads[k].defined()) continue;
        CHECK_MESSAGE(a.grads[k].to_vector<double>() == b.grads[k].to_vector<double>(), name, ": gradient ", k,
                      " differs");
    }
}

// Both scans' options after their required inputs, seeded from `seed` on: D, z, the Δ / dt bias (scale 0.5), h0,
// h′, y′ (scale `state_scale`); six undefined tensors when the case has no options.
void append_options(std::vector<Tensor>& v, const ScanCase& c, DType t, uint64_t seed, double state_scale) {
    if (!c.extras) {
        v.resize(v.size() + 6);
        return;
    }
    v.push_back(input({c.E}, seed, t, 1.0, 0.0));
    v.push_back(input({c.B, c.E, c.L}, seed + 1, t, 1.0, 0.0));
    v.push_back(input({c.E}, seed + 2, t, 0.5, 0.0));
    v.push_back(c.h0_batched ? input({c.B, c.E, c.N}, seed + 3, t, state_scale, 0.0)
                             : input({c.E, c.N}, seed + 3, t, state_scale, 0.0));
    v.push_back(input({c.E, c.N}, seed + 4, t, state_scale, 0.0));
    v.push_back(input({c.E}, seed + 5, t, state_scale, 0.0));
}

// ---- selective scan: u, Δ, A, B, C, then D, z, Δ bias, h0, h′, y′ ----
std::vector<Tensor> scan_inputs(const ScanCase& c, DType t, uint64_t seed) {
    // Δ raw (no softplus) without the options: kept positive, so exp(Δ A) decays and F32 does not overflow.
    std::vector<Tensor> v = {input({c.B, c.E, c.L}, seed, t, 1.0, 0.0),
                             c.extras ? input({c.B, c.E, c.L}, seed + 1, t, 0.5, -1.0)
                                      : input({c.B, c.E, c.L}, seed + 1, t, 0.2, 0.6),
                             input({c.E, c.N}, seed + 2, t, 0.3, -1.0), input({c.B, c.N, c.L}, seed + 3, t, 1.0, 0.0),
                             input({c.B, c.N, c.L}, seed + 4, t, 1.0, 0.0)};
    append_options(v, c, t, seed + 5, 1.0);
    return v;
}

std::pair<Tensor, Tensor> cpu_selective_scan(const std::vector<Tensor>& in) {
    ops::SelectiveScanOptions o;
    o.D = in[5], o.z = in[6], o.delta_bias = in[7], o.delta_softplus = in[7].defined(), o.h0 = in[8];
    o.state_offset = in[9], o.output_offset = in[10], o.return_last_state = in[5].defined();
    const ops::SelectiveScanResult r = ops::selective_scan(in[0], in[1], in[2], in[3], in[4], o);
    return {r.out, r.last_state};
}

// The emulated kernels' forward, then their backward for (gout, glast), finished as ops/selective_scan_cuda.cpp.
ScanRun emulated_selective_scan(const std::vector<Tensor>& in, const Tensor& gout, const Tensor& glast) {
    const int64_t Bsz = in[0].size(0), E = in[0].size(1), L = in[0].size(2), N = in[2].size(1);
    const DType t = in[0].dtype();
    cuda_emu::SelectiveScanParams p;
    p.u = ptr(in[0]), p.delta = ptr(in[1]), p.A = ptr(in[2]), p.B = ptr(in[3]), p.C = ptr(in[4]);
    p.D = ptr(in[5]), p.z = ptr(in[6]), p.delta_bias = ptr(in[7]), p.h0 = ptr(in[8]);
    p.state_offset = ptr(in[9]), p.output_offset = ptr(in[10]);
    p.batch = Bsz, p.E = E, p.N = N, p.L = L, p.softplus = in[7].defined();
    p.h0_batched = in[8].defined() && in[8].dim() == 3;
    const bool want_last = in[5].defined();
    const int64_t chunks = (L + cuda_emu::kScanChunk - 1) / cuda_emu::kScanChunk;
    const int64_t groups = cuda_emu::scan_backward_groups(E);
    ScanRun r;
    r.out = Tensor::empty({Bsz, E, L}, t);
    if (want_last) r.last = Tensor::empty({Bsz, E, N}, t);
    Tensor states = Tensor::empty({Bsz, E, chunks, N}, t);
    Tensor y_pre = p.z ? Tensor::empty({Bsz, E, L}, t) : Tensor();
    cuda_emu::selective_scan_forward(0, t, p, r.out.raw_data(), mut(y_pre), mut(r.last), states.raw_data());

    Tensor du = Tensor::empty({Bsz, E, L}, t), ddelta = Tensor::empty({Bsz, E, L}, t);
    Tensor dz = p.z ? Tensor::empty({Bsz, E, L}, t) : Tensor();
    const double nan = std::numeric_limits<double>::quiet_NaN();  // the kernel writes every element of its partials
    Tensor dB_part = Tensor::full({Bsz, groups, N, L}, nan, t), dC_part = Tensor::full({Bsz, groups, N, L}, nan, t);
    Tensor dA_part = Tensor::full({Bsz, E, N}, nan, t), dh0_part = Tensor::empty({Bsz, E, N}, t);
    Tensor dhoff_part = p.state_offset ? Tensor::empty({Bsz, E, N}, t) : Tensor();
    Tensor dD_part = Tensor::empty({Bsz, E}, t), dbias_part = Tensor::empty({Bsz, E}, t);
    Tensor dyoff_part = Tensor::empty({Bsz, E}, t);
    cuda_emu::SelectiveScanGrads g;
    g.du = mut(du), g.ddelta = mut(ddelta), g.dz = mut(dz), g.dB_part = mut(dB_part), g.dC_part = mut(dC_part);
    g.dA_part = mut(dA_part), g.dstate_offset_part = mut(dhoff_part), g.dh0_part = mut(dh0_part);
    g.dD_part = mut(dD_part), g.ddelta_bias_part = mut(dbias_part), g.doutput_offset_part = mut(dyoff_part);
    cuda_emu::selective_scan_backward(0, t, p, states.raw_data(), ptr(y_pre), gout.raw_data(), ptr(glast), g);
    const auto over_batch = [](const Tensor& part, bool wanted) { return wanted ? ops::sum(part, {0}) : Tensor(); };
    r.grads = {du, ddelta, ops::sum(dA_part, {0}), ops::sum(dB_part, {1}), ops::sum(dC_part, {1}),
               over_batch(dD_part, p.D != nullptr), dz, over_batch(dbias_part, p.delta_bias != nullptr),
               p.h0 ? (p.h0_batched ? dh0_part : ops::sum(dh0_part, {0})) : Tensor(),
               over_batch(dhoff_part, p.state_offset != nullptr), over_batch(dyoff_part, p.output_offset != nullptr)};
    return r;
}

const std::vector<std::string> kScanNames = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0", "h'", "y'"};

// ---- Longhorn: x, dt, k, q, then D, z, dt bias, h0, h′, y′ ----
std::vector<Tensor> horn_inputs(const ScanCase& c, DType t, uint64_t seed) {
    std::vector<Tensor> v = {input({c.B, c.E, c.L}, seed, t, 1.0, 0.0), input({c.B, c.E, c.L}, seed + 1, t, 1.0, -1.0),
                             input({c.B, c.N, c.L}, seed + 2, t, 0.7, 0.0), input({c.B, c.N, c.L}, seed + 3, t, 1.0, 0.0)};
    append_options(v, c, t, seed + 4, 0.5);
    return v;
}

std::pair<Tensor, Tensor> cpu_longhorn_scan(const std::vector<Tensor>& in) {
    ops::LonghornScanOptions o;
    o.D = in[4], o.z = in[5], o.dt_bias = in[6], o.h0 = in[7], o.state_offset = in[8], o.output_offset = in[9];
    o.return_last_state = in[4].defined();
    const ops::LonghornScanResult r = ops::longhorn_scan(in[0], in[1], in[2], in[3], o);
    return {r.out, r.last_state};
}

// The emulated kernels, finished as ops/longhorn_scan_cuda.cpp: dk = Σ_groups dk_part + 2 k Σ_groups dS_part.
ScanRun emulated_longhorn_scan(const std::vector<Tensor>& in, const Tensor& gout, const Tensor& glast) {
    const int64_t Bsz = in[0].size(0), E = in[0].size(1), L = in[0].size(2), N = in[2].size(1);
    const DType t = in[0].dtype();
    cuda_emu::LonghornScanParams p;
    p.x = ptr(in[0]), p.dt = ptr(in[1]), p.k = ptr(in[2]), p.q = ptr(in[3]), p.D = ptr(in[4]), p.z = ptr(in[5]);
    p.dt_bias = ptr(in[6]), p.h0 = ptr(in[7]), p.state_offset = ptr(in[8]), p.output_offset = ptr(in[9]);
    p.batch = Bsz, p.E = E, p.N = N, p.L = L, p.h0_batched = in[7].defined() && in[7].dim() == 3;
    const bool want_last = in[4].defined();
    const int64_t chunks = (L + cuda_emu::kScanChunk - 1) / cuda_emu::kScanChunk;
    const int64_t groups = cuda_emu::scan_backward_groups(E);
    ScanRun r;
    r.out = Tensor::empty({Bsz, E, L}, t);
    if (want_last) r.last = Tensor::empty({Bsz, E, N}, t);
    Tensor states = Tensor::empty({Bsz, E, chunks, N}, t);
    Tensor y_pre = p.z ? Tensor::empty({Bsz, E, L}, t) : Tensor();
    cuda_emu::longhorn_scan_forward(0, t, p, r.out.raw_data(), mut(y_pre), mut(r.last), states.raw_data());

    Tensor dx = Tensor::empty({Bsz, E, L}, t), ddt = Tensor::empty({Bsz, E, L}, t);
    Tensor dz = p.z ? Tensor::empty({Bsz, E, L}, t) : Tensor();
    const double nan = std::numeric_limits<double>::quiet_NaN();  // the kernel writes every element of its partials
    Tensor dk_part = Tensor::full({Bsz, groups, N, L}, nan, t), dq_part = Tensor::full({Bsz, groups, N, L}, nan, t);
    Tensor dS_part = Tensor::full({Bsz, groups, L}, nan, t);
    Tensor dh0_part = Tensor::empty({Bsz, E, N}, t);
    Tensor dhoff_part = p.state_offset ? Tensor::empty({Bsz, E, N}, t) : Tensor();
    Tensor dD_part = Tensor::empty({Bsz, E}, t), dbias_part = Tensor::empty({Bsz, E}, t);
    Tensor dyoff_part = Tensor::empty({Bsz, E}, t);
    cuda_emu::LonghornScanGrads g;
    g.dx = mut(dx), g.ddt = mut(ddt), g.dz = mut(dz), g.dk_part = mut(dk_part), g.dq_part = mut(dq_part);
    g.dS_part = mut(dS_part), g.dh0_part = mut(dh0_part), g.dstate_offset_part = mut(dhoff_part);
    g.dD_part = mut(dD_part), g.ddt_bias_part = mut(dbias_part), g.doutput_offset_part = mut(dyoff_part);
    cuda_emu::longhorn_scan_backward(0, t, p, states.raw_data(), ptr(y_pre), gout.raw_data(), ptr(glast), g);
    const auto over_batch = [](const Tensor& part, bool wanted) { return wanted ? ops::sum(part, {0}) : Tensor(); };
    const Tensor dS = ops::sum(dS_part, {1}).reshape({Bsz, 1, L});
    r.grads = {dx, ddt, ops::add(ops::sum(dk_part, {1}), ops::mul_scalar(ops::mul(in[2], dS), 2.0)),
               ops::sum(dq_part, {1}), over_batch(dD_part, p.D != nullptr), dz,
               over_batch(dbias_part, p.dt_bias != nullptr),
               p.h0 ? (p.h0_batched ? dh0_part : ops::sum(dh0_part, {0})) : Tensor(),
               over_batch(dhoff_part, p.state_offset != nullptr), over_batch(dyoff_part, p.output_offset != nullptr)};
    return r;
}

const std::vector<std::string> kHornNames = {"x", "dt", "k", "q", "D", "z", "dt_bias", "h0", "h'", "y'"};

// Runs both scans' kernels on every case and dtype against the CPU op, then once more with each block's threads
// taking turns in the reverse order: the same bits.
template <class Inputs, class Emulated, class Cpu>
void check_scan(const char* scan, Inputs make_inputs, Emulated emulated, Cpu cpu, const std::vector<std::string>& names) {
    for (DType t : {DType::F64, DType::F32})
        for (const EmulatedCase& ec : kEmulatedCases) {
            const ScanCase& c = ec.shape;
            if (t == DType::F32 && !ec.f32) continue;
            const std::string name = case_name(scan, t, c);
            INFO(name);
            const std::vector<Tensor> in = make_inputs(c, t, 17);
            const Tensor gout = input({c.B, c.E, c.L}, 91, t, 1.0, 0.0);
            const Tensor glast = c.extras ? input({c.B, c.E, c.N}, 92, t, 1.0, 0.0) : Tensor();
            const ScanRun emu = emulated(in, gout, glast);
            expect_runs_match(emu, cpu_run(in, gout, glast, cpu), t, names, name);
            const ssmtune_simt::ScheduleScope reverse(ssmtune_simt::Schedule::reverse);
            expect_same_bits(emulated(in, gout, glast), emu, name + " (threads in reverse order)");
        }
}

}  // namespace

TEST_CASE("emulated CUDA: selective scan kernels match the CPU op (forward, every gradient, last state)") {
    check_scan("selective scan", scan_inputs, emulated_selective_scan, cpu_selective_scan, kScanNames);
}

TEST_CASE("emulated CUDA: the two naive sequential selective scan kernels match the CPU op") {
    for (const ScanCase& c : {ScanCase{2, 3, 16, 37, true, false}, ScanCase{1, 65, 4, 9, true, true}}) {
        const std::vector<Tensor> in = scan_inputs(c, DType::F64, 5);
        cuda_emu::SelectiveScanParams p;
        p.u = ptr(in[0]), p.delta = ptr(in[1]), p.A = ptr(in[2]), p.B = ptr(in[3]), p.C = ptr(in[4]);
        p.D = ptr(in[5]), p.z = ptr(in[6]), p.delta_bias = ptr(in[7]), p.h0 = ptr(in[8]);
        p.state_offset = ptr(in[9]), p.output_offset = ptr(in[10]);
        p.batch = c.B, p.E = c.E, p.N = c.N, p.L = c.L, p.softplus = true, p.h0_batched = c.h0_batched;
        Tensor out = Tensor::empty({c.B, c.E, c.L}, DType::F64), last = Tensor::empty({c.B, c.E, c.N}, DType::F64);
        cuda_emu::selective_scan_forward_sequential(0, DType::F64, p, out.raw_data(), last.raw_data());
        const auto [ref_out, ref_last] = cpu_selective_scan(in);
        expect_scan_close(out, ref_out, DType::F64, case_name("sequential", DType::F64, c) + " out");
        expect_scan_close(last, ref_last, DType::F64, case_name("sequential", DType::F64, c) + " last state");
        Tensor terms = Tensor::empty({c.B, c.E, c.N, c.L}, DType::F64);
        out = Tensor::empty({c.B, c.E, c.L}, DType::F64), last = Tensor::empty({c.B, c.E, c.N}, DType::F64);
        cuda_emu::selective_scan_forward_per_state(0, DType::F64, p, out.raw_data(), last.raw_data(),
                                                   terms.raw_data());
        expect_scan_close(out, ref_out, DType::F64, case_name("per state", DType::F64, c) + " out");
        expect_scan_close(last, ref_last, DType::F64, case_name("per state", DType::F64, c) + " last state");
    }
}

TEST_CASE("emulated CUDA: Longhorn scan kernels match the CPU op (forward, every gradient, last state)") {
    check_scan("Longhorn scan", horn_inputs, emulated_longhorn_scan, cpu_longhorn_scan, kHornNames);
}
