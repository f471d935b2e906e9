// selective_scan for tensors on a GPU: argument checks, buffers, the autograd node, and the fixed-order sums of the
// kernels' partial gradients. The kernels are cuda/selective_scan.cu; the semantics are ops/selective_scan.cpp's
// (the CPU op and selective_scan_reference are the specification the GPU suite compares against).
// Forward keeps the state after every 512-step chunk ([B, E, chunks, N]) and, when z gates the output, y before
// the gate; backward recomputes everything else. Not here: the CPU path, checkpoint_every (the GPU chunk is fixed).
#include "cuda/kernels.h"
#include "ops/ops.h"
#include "ops/scan_common.h"
#include "ops/ssm.h"

namespace ssmtune::ops::detail {

SelectiveScanResult selective_scan_cuda(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                        const Tensor& C, const SelectiveScanOptions& o) {
    const char* op = "selective_scan";
    check_float_input(u, op, "u", kCudaKernel);
    SSMTUNE_CHECK(u.dim() == 3, "selective_scan: u must be [B, E, L], got ", u.describe());
    SSMTUNE_CHECK(A.defined() && A.dim() == 2, "selective_scan: A must be [E, N], got ", A.describe());
    const int64_t Bsz = u.size(0), E = u.size(1), L = u.size(2), N = A.size(1);
    const auto take = [&](const Tensor& t, const Shape& shape, const char* name) {
        return scan_detail::take_arg(t, u, shape, op, name, kCudaKernel);
    };
    const Tensor uc = u.detach().contiguous(), dc = take(delta, {Bsz, E, L}, "delta"), Ac = take(A, {E, N}, "A");
    SSMTUNE_CHECK(dc.defined() && B.defined() && C.defined(), "selective_scan: delta, B and C are required");
    const Tensor Bc = take(B, {Bsz, N, L}, "B"), Cc = take(C, {Bsz, N, L}, "C"), Dc = take(o.D, {E}, "D");
    const Tensor zc = take(o.z, {Bsz, E, L}, "z"), biasc = take(o.delta_bias, {E}, "delta_bias");
    const bool h0_batched = o.h0.defined() && o.h0.dim() == 3;
    const Tensor h0c = take(o.h0, h0_batched ? Shape{Bsz, E, N} : Shape{E, N}, "h0");
    const Tensor hoffc = take(o.state_offset, {E, N}, "state_offset"), yoffc = take(o.output_offset, {E}, "output_offset");
    const auto ptr = [](const Tensor& t) -> const void* { return t.defined() ? t.raw_data() : nullptr; };
    cuda::SelectiveScanParams p;
    p.u = ptr(uc), p.delta = ptr(dc), p.A = ptr(Ac), p.B = ptr(Bc), p.C = ptr(Cc), p.D = ptr(Dc), p.z = ptr(zc);
    p.delta_bias = ptr(biasc), p.h0 = ptr(h0c), p.state_offset = ptr(hoffc), p.output_offset = ptr(yoffc);
    p.batch = Bsz, p.E = E, p.N = N, p.L = L, p.softplus = o.delta_softplus, p.h0_batched = h0_batched;

    const Device dev = u.device();
    const DType dtype = u.dtype();
    const int64_t chunks = (L + cuda::kScanChunk - 1) / cuda::kScanChunk;
    SelectiveScanResult result;
    result.out = Tensor::empty({Bsz, E, L}, dtype, dev);
    if (o.return_last_state) result.last_state = Tensor::empty({Bsz, E, N}, dtype, dev);
    Tensor states = Tensor::empty({Bsz, E, chunks, N}, dtype, dev);
    Tensor y_pre = zc.defined() ? Tensor::empty({Bsz, E, L}, dtype, dev) : Tensor();
    cuda::selective_scan_forward(dev.index, dtype, p, result.out.raw_data(),
                                 y_pre.defined() ? y_pre.raw_data() : nullptr,
                                 o.return_last_state ? result.last_state.raw_data() : nullptr, states.raw_data());

    std::vector<Tensor> outputs = {result.out};
    if (o.return_last_state) outputs.push_back(result.last_state);
    // The node keeps the contiguous inputs (p points into them) and the forward's saved tensors.
    const std::vector<Tensor> keep = {uc, dc, Ac, Bc, Cc, Dc, zc, biasc, h0c, hoffc, yoffc};
    autograd::record(op, {u, delta, A, B, C, o.D, o.z, o.delta_bias, o.h0, o.state_offset, o.output_offset}, outputs,
                     [p, keep, states, y_pre, has_last = o.return_last_state, dev, dtype, Bsz, E, N,
                      L](const auto& g, const auto& needs) {
                         const Tensor gout = g[0].contiguous();
                         const Tensor glast = has_last ? g[1].contiguous() : Tensor();
                         const int64_t groups = cuda::scan_backward_groups(E);
                         const auto empty = [&](const Shape& s) { return Tensor::empty(s, dtype, dev); };
                         Tensor du = empty({Bsz, E, L}), ddelta = empty({Bsz, E, L});
                         Tensor dz = p.z ? empty({Bsz, E, L}) : Tensor();
                         Tensor dB_part = empty({Bsz, groups, N, L}), dC_part = empty({Bsz, groups, N, L});
                         Tensor dA_part = empty({Bsz, E, N}), dh0_part = empty({Bsz, E, N});
                         Tensor dhoff_part = p.state_offset ? empty({Bsz, E, N}) : Tensor();
                         Tensor dD_part = empty({Bsz, E}), dbias_part = empty({Bsz, E}), dyoff_part = empty({Bsz, E});
                         const auto raw = [](Tensor& t) -> void* { return t.defined() ? t.raw_data() : nullptr; };
                         cuda::SelectiveScanGrads gr;
                         gr.du = raw(du), gr.ddelta = raw(ddelta), gr.dz = raw(dz);
                         gr.dB_part = raw(dB_part), gr.dC_part = raw(dC_part), gr.dA_part = raw(dA_part);
                         gr.dstate_offset_part = raw(dhoff_part), gr.dh0_part = raw(dh0_part);
                         gr.dD_part = raw(dD_part), gr.ddelta_bias_part = raw(dbias_part);
                         gr.doutput_offset_part = raw(dyoff_part);
                         cuda::selective_scan_backward(dev.index, dtype, p, states.raw_data(),
                                                       y_pre.defined() ? y_pre.raw_data() : nullptr, gout.raw_data(),
                                                       glast.defined() ? glast.raw_data() : nullptr, gr);
                         // Fixed-order sums of the partials: over channel groups (dB, dC) and over the batch.
                         const auto over_batch = [&](const Tensor& part, bool wanted) {
                             return wanted ? sum(part, {0}) : Tensor();
                         };
                         std::vector<Tensor> all = {
                             du, ddelta, over_batch(dA_part, true), sum(dB_part, {1}), sum(dC_part, {1}),
                             over_batch(dD_part, p.D != nullptr), dz, over_batch(dbias_part, p.delta_bias != nullptr),
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
