// Differentiable views and copies: reshape/view/flatten, transpose/permute, narrow/select, expand,
// squeeze/unsqueeze, contiguous, clone, to(dtype), to(device).
//
// Views share storage (Tensor::as_strided); their backward maps the gradient back to the input's shape:
// reshape → reshape back, permute → inverse permute, narrow → place into zeros, expand → sum_to_shape.
// Not here: views with negative strides (flip) or overlapping writes.
#include "engine/tensor_copy.h"
#include "ops/op_util.h"
#include "ops/ops.h"

namespace ssmtune {

namespace {

// Shape with a single -1 resolved against numel; Error when it cannot be.
Shape resolve_shape(const Shape& shape, int64_t numel, const Tensor& t) {
    Shape out = shape;
    int64_t known = 1, infer = -1;
    for (size_t i = 0; i < out.size(); ++i) {
        if (out[i] == -1) {
            SSMTUNE_CHECK(infer < 0, "reshape: more than one -1 in ", shape_str(shape));
            infer = int64_t(i);
        } else {
            SSMTUNE_CHECK(out[i] >= 0, "reshape: invalid size in ", shape_str(shape));
            known *= out[i];
        }
    }
    if (infer >= 0) {
        SSMTUNE_CHECK(known != 0 && numel % known == 0, "reshape: cannot reshape ", t.describe(), " to ",
                      shape_str(shape));
        out[size_t(infer)] = numel / known;
    }
    SSMTUNE_CHECK(shape_numel(out) == numel, "reshape: cannot reshape ", t.describe(), " (", numel,
                  " elements) to ", shape_str(shape));
    return out;
}

// Strides for viewing t with new_shape without copying, or empty when impossible (same rule as PyTorch's
// computeStride: each group of merged/split dims must be contiguous within itself).
bool view_strides(const Tensor& t, const Shape& new_shape, Shape& new_strides) {
    if (t.is_contiguous()) { new_strides = contiguous_strides(new_shape); return true; }
    const Shape& os = t.shape();
    const Shape& ost = t.strides();
    new_strides.assign(new_shape.size(), 0);
    int64_t view_d = int64_t(new_shape.size()) - 1;
    int64_t chunk_base_stride = ost.empty() ? 1 : ost.back();
    int64_t tensor_numel = 1, view_numel = 1;
    for (int64_t td = int64_t(os.size()) - 1; td >= 0; --td) {
        tensor_numel *= os[size_t(td)];
        if (td == 0 || (os[size_t(td - 1)] != 1 && ost[size_t(td - 1)] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || new_shape[size_t(view_d)] == 1)) {
                new_strides[size_t(view_d)] = view_numel * chunk_base_stride;
                view_numel *= new_shape[size_t(view_d)];
                --view_d;
            }
            if (view_numel != tensor_numel) return false;
            if (td > 0) {
                chunk_base_stride = ost[size_t(td - 1)];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

Tensor reshape_impl(const Tensor& self, const Shape& shape, bool allow_copy) {
    const Shape target = resolve_shape(shape, self.numel(), self);
    Shape st;
    Tensor out;
    if (view_strides(self, target, st)) {
        out = self.as_strided(target, st, self.offset());
    } else {
        SSMTUNE_CHECK(allow_copy, "view: ", self.describe(), " is not contiguous enough to view as ",
                      shape_str(target), "; fix: call reshape() (which copies) or contiguous() first");
        out = copy_to(self, self.dtype(), self.device()).as_strided(target, contiguous_strides(target), 0);
    }
    autograd::record("reshape", {self}, {out}, [in_shape = self.shape()](const auto& g, const auto&) {
        return std::vector<Tensor>{g[0].reshape(in_shape)};
    });
    return out;
}

}  // namespace

Tensor Tensor::reshape(const Shape& shape) const { return reshape_impl(*this, shape, true); }
Tensor Tensor::view(const Shape& shape) const { return reshape_impl(*this, shape, false); }

Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
    if (dim() == 0) return reshape({1});
    const int64_t s = ops::wrap_dim(start_dim, dim(), "flatten"), e = ops::wrap_dim(end_dim, dim(), "flatten");
    SSMTUNE_CHECK(s <= e, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
    Shape target(shape().begin(), shape().begin() + s);
    int64_t merged = 1;
    for (int64_t d = s; d <= e; ++d) merged *= shape()[size_t(d)];
    target.push_back(merged);
    target.insert(target.end(), shape().begin() + e + 1, shape().end());
    return reshape(target);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
    SSMTUNE_CHECK(int64_t(dims.size()) == dim(), "permute: ", dims.size(), " dims given for ", describe());
    Shape sh(dims.size()), st(dims.size());
    std::vector<int64_t> inverse(dims.size(), -1);
    for (size_t i = 0; i < dims.size(); ++i) {
        const int64_t d = ops::wrap_dim(dims[i], dim(), "permute");
        SSMTUNE_CHECK(inverse[size_t(d)] < 0, "permute: dimension ", d, " repeated");
        inverse[size_t(d)] = int64_t(i);
        sh[i] = shape()[size_t(d)];
        st[i] = strides()[size_t(d)];
    }
    Tensor out = as_strided(sh, st, offset());
    autograd::record("permute", {*this}, {out}, [inverse](const auto& g, const auto&) {
        return std::vector<Tensor>{g[0].permute(inverse)};
    });
    return out;
}

Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
    std::vector<int64_t> dims(static_cast<size_t>(dim()));
    for (size_t i = 0; i < dims.size(); ++i) dims[i] = int64_t(i);
    std::swap(dims[size_t(ops::wrap_dim(d0, dim(), "transpose"))], dims[size_t(ops::wrap_dim(d1, dim(), "transpose"))]);
    return permute(dims);
}

Tensor Tensor::narrow(int64_t d, int64_t start, int64_t length) const {
    d = ops::wrap_dim(d, dim(), "narrow");
    const int64_t n = shape()[size_t(d)];
    SSMTUNE_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: range [", start, ", ", start + length,
                  ") outside dimension ", d, " of size ", n, " in ", describe());
    Shape sh = shape();
    sh[size_t(d)] = length;
    Tensor out = as_strided(sh, strides(), offset() + start * strides()[size_t(d)]);
    autograd::record("narrow", {*this}, {out}, [in_shape = shape(), d, start, length](const auto& g, const auto&) {
        Tensor full = Tensor::zeros(in_shape, g[0].dtype(), g[0].device());
        Tensor window = full.detach().narrow(d, start, length);
        copy_into(window, g[0]);
        return std::vector<Tensor>{full};
    });
    return out;
}

Tensor Tensor::select(int64_t d, int64_t index) const {
    d = ops::wrap_dim(d, dim(), "select");
    if (index < 0) index += shape()[size_t(d)];
    return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::expand(const Shape& target) const {
    SSMTUNE_CHECK(target.size() >= shape().size(), "expand: ", describe(), " to fewer dims ", shape_str(target));
    Shape sh = target;
    const size_t lead = target.size() - shape().size();
    for (size_t i = 0; i < shape().size(); ++i)
        if (sh[lead + i] == -1) sh[lead + i] = shape()[i];
    Tensor out = as_strided(sh, ops::broadcast_strides(*this, sh), offset());
    autograd::record("expand", {*this}, {out}, [in_shape = shape()](const auto& g, const auto&) {
        return std::vector<Tensor>{ops::sum_to_shape(g[0], in_shape)};
    });
    return out;
}

Tensor Tensor::squeeze(int64_t d) const {
    d = ops::wrap_dim(d, dim(), "squeeze");
    SSMTUNE_CHECK(shape()[size_t(d)] == 1, "squeeze: dimension ", d, " of ", describe(), " is not 1");
    Shape sh = shape(), st = strides();
    sh.erase(sh.begin() + d);
    st.erase(st.begin() + d);
    Tensor out = as_strided(sh, st, offset());
    autograd::record("squeeze", {*this}, {out}, [in_shape = shape()](const auto& g, const auto&) {
        return std::vector<Tensor>{g[0].reshape(in_shape)};
    });
    return out;
}

Tensor Tensor::unsqueeze(int64_t d) const {
    d = ops::wrap_dim(d, dim() + 1, "unsqueeze");
    Shape sh = shape(), st = strides();
    const int64_t stride = d < dim() ? strides()[size_t(d)] * shape()[size_t(d)] : 1;
    sh.insert(sh.begin() + d, 1);
    st.insert(st.begin() + d, stride);
    Tensor out = as_strided(sh, st, offset());
    autograd::record("unsqueeze", {*this}, {out}, [in_shape = shape()](const auto& g, const auto&) {
        return std::vector<Tensor>{g[0].reshape(in_shape)};
    });
    return out;
}

Tensor Tensor::contiguous() const {
    if (is_contiguous()) return *this;
    return clone();
}

Tensor Tensor::clone() const {
    Tensor out = copy_to(*this, dtype(), device());
    autograd::record("clone", {*this}, {out}, [](const auto& g, const auto&) { return std::vector<Tensor>{g[0]}; });
    return out;
}

Tensor Tensor::to(DType target) const {
    if (target == dtype()) return *this;
    Tensor out = copy_to(*this, target, device());
    if (is_compute_float(target) && is_compute_float(dtype())) {
        autograd::record("to_dtype", {*this}, {out}, [source = dtype()](const auto& g, const auto&) {
            return std::vector<Tensor>{g[0].to(source)};
        });
    }
    return out;
}

Tensor Tensor::to(Device target) const {
    if (target == device()) return *this;
    Tensor out = copy_to(*this, dtype(), target);
    autograd::record("to_device", {*this}, {out}, [source = device()](const auto& g, const auto&) {
        return std::vector<Tensor>{g[0].to(source)};
    });
    return out;
}

}  // namespace ssmtune
