// longhorn_scan for tensors on a GPU: argument checks, buffers, the autograd node, and the fixed-order sums of the
// kernels' partial gradients. The kernels are cuda/longhorn_scan.cu; the semantics are ops/longhorn_scan.cpp's (the
// CPU op and longhorn_scan_reference are the specification the GPU suite compares against).
// Forward keeps the state after every 512-step chunk ([B, E, chunks, N]) and, when z gates the output, y before the
// gate; backward recomputes everything else. dk = Σ_groups dk_part + 2 k Σ_groups dS_part: the direct term plus the
// normaliser's S = Σ_n k² (reference/ssm-models.md §3.4). Not here: the CPU path, checkpoint_every (fixed chunk).
#include "cuda/kernels.h"
#include "ops/ops.h"
#include "ops/scan_common.h"
#include "ops/ssm.h"

namespace ssmtune::ops::detail {

LonghornScanResult longhorn_scan_cuda(const Tensor& x, const Tensor& dt, const Tensor& k, const Tensor& q,
                                      const LonghornScanOptions& o) {
    const char* op = "longhorn_scan";
    check_float_input(x, op, "x", kCudaKernel);
    SSMTUNE_CHECK(x.dim() == 3, op, ": x must be [B, E, L], got ", x.describe());
    SSMTUNE_CHECK(k.defined() && k.dim() == 3, op, ": k must be [B, N, L], got ", k.describe());
    const int64_t Bsz = x.size(0), E = x.size(1), L = x.size(2), N = k.size(1);
    const auto take = [&](const Tensor& t, const Shape& shape, const char* name) {
        return scan_detail::take_arg(t, x, shape, op, name, kCudaKernel);
    };
    const Tensor xc = x.detach().contiguous(), dtc = take(dt, {Bsz, E, L}, "dt");
    SSMTUNE_CHECK(dtc.defined() && q.defined(), op, ": dt and q are required");
    const Tensor kc = take(k, {Bsz, N, L}, "k"), qc = take(q, {Bsz, N, L}, "q"), Dc = take(o.D, {E}, "D");
    const Tensor zc = take(o.z, {Bsz, E, L}, "z"), biasc = take(o.dt_bias, {E}, "dt_bias");
    const bool h0_batched = o.h0.defined() && o.h0.dim() == 3;
    const Tensor h0c = take(o.h0, h0_batched ? Shape{Bsz, E, N} : Shape{E, N}, "h0");
    const Tensor hoffc = take(o.state_offset, {E, N}, "state_offset"), yoffc = take(o.output_offset, {E}, "output_offset");
    const auto ptr = [](const Tensor& t) -> const void* { return t.defined() ? t.raw_data() : nullptr; };
    cuda::LonghornScanParams p;
    p.x = ptr(xc), p.dt = ptr(dtc), p.k = ptr(kc), p.q = ptr(qc), p.D = ptr(Dc), p.z = ptr(zc);
    p.dt_bias = ptr(biasc), p.h0 = ptr(h0c), p.state_offset = ptr(hoffc), p.output_offset = ptr(yoffc);
    p.batch = Bsz, p.E = E, p.N = N, p.L = L, p.h0_batched = h0_batched;

    const Device dev = x.device();
    const DType dtype = x.dtype();
    const int64_t chunks = (L + cuda::kScanChunk - 1) / cuda::kScanChunk;
    LonghornScanResult result;
    result.out = Tensor::empty({Bsz, E, L}, dtype, dev);
    if (o.return_last_state) result.last_state = Tensor::empty({Bsz, E, N}, dtype, dev);
    Tensor states = Tensor::empty({Bsz, E, chunks, N}, dtype, dev);
    Tensor y_pre = zc.defined() ? Tensor::empty({Bsz, E, L}, dtype, dev) : Tensor();
    cuda::longhorn_scan_forward(dev.index, dtype, p, result.out.raw_data(), y_pre.defined() ? y_pre.raw_data() : nullptr,
                                o.return_last_state ? result.last_state.raw_data() : nullptr, states.raw_data());

    std::vector<Tensor> outputs = {result.out};
    if (o.return_last_state) outputs.push_back(result.last_state);
    // The node keeps the contiguous inputs (p points into them) and the forward's saved tensors.
    const std::vector<Tensor> keep = {xc, dtc, kc, qc, Dc, zc, biasc, h0c, hoffc, yoffc};
    autograd::record(op, {x, dt, k, q, o.D, o.z, o.dt_bias, o.h0, o.state_offset, o.output_offset}, outputs,
                     [p, keep, kc, states, y_pre, has_last = o.return_last_state, dev, dtype, Bsz, E, N,
                      L](const auto& g, const auto& needs) {
                         const Tensor gout = g[0].contiguous();
                         const Tensor glast = has_last ? g[1].contiguous() : Tensor();
                         const int64_t groups = cuda::scan_backward_groups(E);
                         const auto empty = [&](const Shape& s) { return Tensor::empty(s, dtype, dev); };
                         Tensor dx = empty({Bsz, E, L}), ddt = empty({Bsz, E, L});
                         Tensor dz = p.z ? empty({Bsz, E, L}) : Tensor();
                         Tensor dk_part = Tensor::empty({Bsz, groups, N, L}, dtype, dev);
                         Tensor dq_part = Tensor::empty({Bsz, groups, N, L}, dtype, dev);
                         Tensor dS_part = Tensor::empty({Bsz, groups, L}, dtype, dev);
                         Tensor dh0_part = empty({Bsz, E, N});
                         Tensor dhoff_part = p.state_offset ? empty({Bsz, E, N}) : Tensor();
                         Tensor dD_part = empty({Bsz, E}), dbias_part = empty({Bsz, E}), dyoff_part = empty({Bsz, E});
                         const auto raw = [](Tensor& t) -> void* { return t.defined() ? t.raw_data() : nullptr; };
                         cuda::LonghornScanGrads gr;
                         gr.dx = raw(dx), gr.ddt = raw(ddt), gr.dz = raw(dz);
                         gr.dk_part = raw(dk_part), gr.dq_part = raw(dq_part), gr.dS_part = raw(dS_part);
                         gr.dh0_part = raw(dh0_part), gr.dstate_offset_part = raw(dhoff_part);
                         gr.dD_part = raw(dD_part), gr.ddt_bias_part = raw(dbias_part);
                         gr.doutput_offset_part = raw(dyoff_part);
                         cuda::longhorn_scan_backward(dev.index, dtype, p, states.raw_data(),
                                                      y_pre.defined() ? y_pre.raw_data() : nullptr, gout.raw_data(),
                                                      glast.defined() ? glast.raw_data() : nullptr, gr);
                         // Fixed-order sums of the partials: over channel groups (dk, dq, dS) and over the batch.
                         const auto over_batch = [&](const Tensor& part, bool wanted) {
                             return wanted ? sum(part, {0}) : Tensor();
                         };
                         const Tensor dS = sum(dS_part, {1}).reshape({Bsz, 1, L});  // Σ_e ∂L/∂S_t
                         const Tensor dk = add(sum(dk_part, {1}), mul_scalar(mul(kc, dS), 2.0));
                         std::vector<Tensor> all = {
                             dx, ddt, dk, sum(dq_part, {1}), over_batch(dD_part, p.D != nullptr), dz,
                             over_batch(dbias_part, p.dt_bias != nullptr),
                             p.h0 ? (p.h0_batched ? dh0_part : sum(dh0_part, {0})) : Tensor(),
                             over_batch(dhoff_part, p.state_offset != nullptr),
                             over_batch(dyoff_part, p.output_offset != nullptr)};
                         for (size_t i = 0; i < all.size(); ++i)
                             if (!needs[i]) all[i] = Tensor();
                         (void)keep;
                         return all;
                     });
    return result;
}

}  // namespace ssmtune::ops::detail
