// Argument checks shared by the op files (see op_util.h).
#include "ops/op_util.h"

namespace ssmtune::ops {

void check_float_input(const Tensor& t, const char* op, const char* arg, bool has_cuda_kernel) {
    SSMTUNE_CHECK(t.defined(), op, ": argument '", arg, "' is an undefined tensor");
    SSMTUNE_CHECK(is_compute_float(t.dtype()), op, ": argument '", arg, "' must be F32 or F64, got ", t.describe(),
                  "; fix: convert with .to(DType::F32)");
    SSMTUNE_CHECK(t.device().is_cpu() || (has_cuda_kernel && t.device().is_cuda()), op, ": argument '", arg, "' is on ", t.device().str(),
                  " but this op has no kernel for that device in this build; fix: .to(Device::cpu())");
}

void check_same_kind(const Tensor& a, const Tensor& b, const char* op) {
    SSMTUNE_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ: ", a.describe(), " vs ", b.describe(),
                  "; fix: convert one with .to()");
    SSMTUNE_CHECK(a.device() == b.device(), op, ": devices differ: ", a.describe(), " vs ", b.describe(),
                  "; fix: move both to one device with .to()");
}

int64_t wrap_dim(int64_t dim, int64_t rank, const char* op) {
    const int64_t r = rank == 0 ? 1 : rank;
    SSMTUNE_CHECK(dim >= -r && dim < r, op, ": dimension ", dim, " out of range for a tensor of rank ", rank);
    return dim < 0 ? dim + r : dim;
}

}  // namespace ssmtune::ops

namespace ssmtune::ops {

Shape broadcast_strides(const Tensor& t, const Shape& out_shape) {
    const size_t rank = out_shape.size(), trank = size_t(t.dim());
    SSMTUNE_CHECK(trank <= rank, "cannot broadcast ", t.describe(), " to ", shape_str(out_shape));
    Shape st(rank, 0);
    for (size_t d = 0; d < trank; ++d) {
        const size_t od = rank - trank + d;
        const int64_t s = t.shape()[d];
        SSMTUNE_CHECK(s == out_shape[od] || s == 1, "cannot broadcast ", t.describe(), " to ", shape_str(out_shape));
        st[od] = (s == 1 && out_shape[od] != 1) ? 0 : t.strides()[d];
    }
    return st;
}

}  // namespace ssmtune::ops
