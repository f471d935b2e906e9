// copy_into / copy_to (see tensor_copy.h). Threaded over rows of the destination for large CPU copies; copies on
// one GPU run as kernels (cuda/elementwise.cu), copies between the host and a GPU move contiguous bytes.
#include "engine/tensor_copy.h"

#include <cmath>
#include <cstring>
#include <type_traits>

#include "cuda/kernels.h"
#include "engine/strided.h"

namespace ssmtune {

namespace {

template <class To, class From>
To convert(From v) {
    if constexpr (std::is_same<To, bool>::value) return static_cast<float>(v) != 0.0f;
    else if constexpr (std::is_same<From, half_t>::value || std::is_same<From, bf16_t>::value) return To(float(v));
    else if constexpr (std::is_same<To, half_t>::value || std::is_same<To, bf16_t>::value) return To(float(v));
    else return static_cast<To>(v);
}

template <class To, class From>
void copy_typed(Tensor& dst, const Tensor& src) {
    const From* s = static_cast<const From*>(src.storage()->data());
    To* d = static_cast<To*>(dst.storage()->data());
    const bool both_contiguous = dst.is_contiguous() && src.is_contiguous();
    const int64_t n = dst.numel();
    if (both_contiguous) {
        s += src.offset();
        d += dst.offset();
        if constexpr (std::is_same<To, From>::value) {
            std::memcpy(d, s, size_t(n) * sizeof(To));
        } else {
#pragma omp parallel for schedule(static) if (n > 65536)
            for (int64_t i = 0; i < n; ++i) d[i] = convert<To>(s[i]);
        }
        return;
    }
    if (dst.is_contiguous()) {
        d += dst.offset();
        for_each_offset(src.shape(), src.strides(), src.offset(),
                        [&](int64_t i, int64_t off) { d[i] = convert<To>(s[off]); });
        return;
    }
    for_each_offset(dst.shape(), dst.strides(), dst.offset(), [&](int64_t i, int64_t off) {
        d[off] = convert<To>(s[strided_offset(src.shape(), src.strides(), src.offset(), i)]);
    });
}

}  // namespace

void copy_into(Tensor& dst, const Tensor& src) {
    SSMTUNE_CHECK(dst.shape() == src.shape(), "copy: destination ", dst.describe(), " and source ", src.describe(),
                  " differ in shape");
    if (dst.numel() == 0) return;
    if (dst.device().is_cpu() && src.device().is_cpu()) {
        dispatch_any_dtype(dst.dtype(), [&](auto to_tag) {
            dispatch_any_dtype(src.dtype(), [&](auto from_tag) {
                copy_typed<typename decltype(to_tag)::type, typename decltype(from_tag)::type>(dst, src);
            });
        });
        return;
    }
    if (dst.device() == src.device()) {  // on one GPU: strided copy or conversion by kernel
        const int device = dst.device().index;
        if (dst.dtype() == src.dtype()) {
            const Shape strides[2] = {dst.strides(), src.strides()};
            const int64_t offsets[2] = {dst.offset(), src.offset()};
            cuda::copy_strided(device, dst.storage()->data(), src.storage()->data(), dst.dtype(), dst.numel(),
                               cuda::make_indexer<2>(dst.shape(), strides, offsets));
        } else {  // convert between contiguous buffers, gathering or scattering through same-dtype copies
            const Tensor s = src.is_contiguous() ? src : copy_to(src, src.dtype(), src.device());
            Tensor d = dst.is_contiguous() ? dst : Tensor::empty(dst.shape(), dst.dtype(), dst.device());
            cuda::convert(device, d.raw_data(), d.dtype(), s.raw_data(), s.dtype(), d.numel());
            if (!d.same(dst)) copy_into(dst, d);
        }
        return;
    }
    // Host and device: move contiguous bytes of the same dtype, converting on the CPU side.
    SSMTUNE_CHECK(dst.is_contiguous() && src.is_contiguous() && dst.dtype() == src.dtype(),
                  "copy between devices needs contiguous tensors of one dtype, got ", src.describe(), " -> ",
                  dst.describe());
    const DeviceType gpu = dst.device().is_cpu() ? src.device().type : dst.device().type;
    const int kind = src.device().is_cpu() ? 0 : (dst.device().is_cpu() ? 1 : 2);
    const int index = dst.device().is_cpu() ? src.device().index : dst.device().index;
    device_backend(gpu).copy(dst.raw_data(), src.raw_data(), size_t(dst.numel()) * dtype_size(dst.dtype()), kind,
                             index);
}

Tensor copy_to(const Tensor& src, DType dtype, Device device) {
    Tensor out = Tensor::empty(src.shape(), dtype, device);
    if (src.device() == device || (src.dtype() == dtype && src.is_contiguous())) {
        copy_into(out, src);
        return out;
    }
    // A GPU is involved and the bytes need gathering or converting. Gather where the source lives (a strided copy
    // on its own device), convert on the host, then send.
    if (!src.is_contiguous()) return copy_to(copy_to(src, src.dtype(), src.device()), dtype, device);
    Tensor host = src.device().is_cpu() ? src : copy_to(src, src.dtype(), Device::cpu());
    Tensor converted = copy_to(host, dtype, Device::cpu());
    return device.is_cpu() ? converted : copy_to(converted, dtype, device);
}

void move_in_place(const std::vector<Tensor>& tensors, Device device) {
    std::vector<Tensor> moved;
    moved.reserve(tensors.size());
    for (const Tensor& t : tensors) moved.push_back(t.device() == device ? t : copy_to(t, t.dtype(), device));
    for (size_t i = 0; i < tensors.size(); ++i) {
        if (moved[i].same(tensors[i])) continue;
        TensorImpl& impl = tensors[i].impl();
        impl.storage = moved[i].storage();
        impl.strides = moved[i].strides();
        impl.offset = 0;
        impl.grad = nullptr;
    }
}

namespace {
template <class T>
int64_t first_non_finite_typed(const T* p, int64_t n, double* value) {
    for (int64_t i = 0; i < n; ++i) {
        double v;
        if constexpr (std::is_same<T, double>::value) v = p[i];
        else v = double(float(p[i]));
        if (!std::isfinite(v)) {
            if (value) *value = v;
            return i;
        }
    }
    return -1;
}
}  // namespace

int64_t first_non_finite(const Tensor& t, double* value) {
    if (!is_floating(t.dtype()) || t.numel() == 0) return -1;
    const Tensor c = t.device().is_cpu() && t.is_contiguous() ? t : copy_to(t, t.dtype(), Device::cpu());
    const int64_t n = c.numel();
    switch (c.dtype()) {
        case DType::F32: return first_non_finite_typed(c.data<float>(), n, value);
        case DType::F64: return first_non_finite_typed(c.data<double>(), n, value);
        case DType::F16: return first_non_finite_typed(c.data<half_t>(), n, value);
        case DType::BF16: return first_non_finite_typed(c.data<bf16_t>(), n, value);
        default: return -1;
    }
}

}  // namespace ssmtune
