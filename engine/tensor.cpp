// Tensor handle: factories, metadata, element access, raw copies and printing (see tensor.h).
// The differentiable methods (views, contiguous, clone, to, operators) live in ops/.
#include "engine/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>
#include <ostream>
#include <sstream>
#include <type_traits>

#include "cuda/kernels.h"
#include "engine/round_to_double.h"
#include "engine/strided.h"
#include "engine/tensor_copy.h"

namespace ssmtune {

std::string shape_str(const Shape& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

int64_t shape_numel(const Shape& s) {
    // a zero anywhere first: [2^31, 2^31, 2^31, 0] holds nothing, and multiplying up to the zero would overflow
    // (UBSan's report in CI, 2026-12-07)
    if (std::find(s.begin(), s.end(), int64_t(0)) != s.end()) return 0;
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
}

Shape contiguous_strides(const Shape& s) {
    Shape st(s.size());
    int64_t acc = 1;
    for (int64_t d = int64_t(s.size()) - 1; d >= 0; --d) {
        st[size_t(d)] = acc;
        if (d > 0) acc *= std::max<int64_t>(s[size_t(d)], 1);  // (not past the first: it could overflow, unused)
    }
    return st;
}

TensorImpl& Tensor::impl() const {
    SSMTUNE_CHECK(impl_ != nullptr, "use of an undefined (empty) Tensor; fix: initialise it from a factory or an op");
    return *impl_;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
    for (int64_t d : shape) SSMTUNE_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
    // Found by fuzzing `bench`: a shape whose size overflows int64 (2^31 − 1 in each of three dimensions) wrapped
    // around and asked the allocator for a wrong, smaller size. 2^60 bytes is beyond any machine's memory; a 32-bit
    // build's limit is its size_t (4 GiB), past which size_t(numel) * size would wrap in the same way.
    int64_t numel = 0;  // (a shape with a zero holds nothing, however large the other dimensions)
    if (std::find(shape.begin(), shape.end(), 0) == shape.end()) {
        const bool wide = sizeof(size_t) >= 8;
        const uint64_t max_bytes = wide ? uint64_t(1) << 60 : uint64_t(std::numeric_limits<size_t>::max());
        const int64_t max_elements = int64_t(max_bytes / dtype_size(dtype));
        numel = 1;
        for (int64_t d : shape) {
            SSMTUNE_CHECK(numel <= max_elements / d, "shape ", shape_str(shape), " holds more than ",
                          wide ? "2^60" : "2^32", " bytes of ", dtype_name(dtype), ", beyond any memory",
                          wide ? "" : " a 32-bit build can address", "; fix: smaller sizes");
            numel *= d;
        }
    }
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = Storage::allocate(size_t(numel) * dtype_size(dtype), device);
    impl->shape = shape;
    impl->strides = contiguous_strides(shape);
    impl->dtype = dtype;
    return Tensor(std::move(impl));
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
    if (device.is_cuda()) {
        Tensor t = empty(shape, dtype, device);
        cuda::fill(device.index, t.raw_data(), dtype, t.numel(), value);
        return t;
    }
    Tensor t = empty(shape, dtype, Device::cpu());
    dispatch_any_dtype(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* p = static_cast<T*>(t.raw_data());
        const T v = T(value);
        const int64_t n = t.numel();
        for (int64_t i = 0; i < n; ++i) p[i] = v;
    });
    return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor Tensor::scalar(double value, DType dtype) { return full({}, value, dtype); }

Tensor Tensor::arange(int64_t n, DType dtype) { return arange(0.0, double(n), 1.0, dtype); }

Tensor Tensor::arange(double start, double end, double step, DType dtype) {
    SSMTUNE_CHECK(step != 0.0, "arange: step must not be 0");
    const int64_t n = std::max<int64_t>(0, int64_t(std::ceil(round_to_double((end - start) / step))));
    Tensor t = empty({n}, DType::F64);
    double* p = t.data<double>();
    for (int64_t i = 0; i < n; ++i) p[i] = start + double(i) * step;
    return dtype == DType::F64 ? t : t.to(dtype);
}

namespace {

// Element i of a draw is value(i); written straight into F32 / F64 storage (other dtypes through an F64 tensor,
// converted as Tensor::to converts), several threads for large tensors.
template <class Value>
Tensor fill_draw(const Shape& shape, Generator& gen, DType dtype, const Value& value) {
    const DType fill_dtype = dtype == DType::F32 ? DType::F32 : DType::F64;
    Tensor t = SkipRandomInit::active() ? Tensor::zeros(shape, fill_dtype) : Tensor::empty(shape, fill_dtype);
    const int64_t n = t.numel();
    const uint64_t first = gen.advance(uint64_t(n));
    if (!SkipRandomInit::active()) {
        const auto fill = [&](auto* p) {
            using T = std::remove_pointer_t<decltype(p)>;
#pragma omp parallel for schedule(static) if (n > 32768)
            for (int64_t i = 0; i < n; ++i) p[i] = T(value(first + uint64_t(i)));
        };
        if (fill_dtype == DType::F32) fill(t.data<float>());
        else fill(t.data<double>());
    }
    return dtype == fill_dtype ? t : t.to(dtype);
}

}  // namespace

Tensor Tensor::randn(const Shape& shape, Generator& gen, DType dtype, double mean, double std) {
    const uint64_t seed = gen.seed();
    return fill_draw(shape, gen, dtype, [&](uint64_t k) { return mean + std * philox_normal(seed, k); });
}

Tensor Tensor::uniform(const Shape& shape, Generator& gen, double low, double high, DType dtype) {
    const uint64_t seed = gen.seed();
    return fill_draw(shape, gen, dtype, [&](uint64_t k) { return low + (high - low) * philox_uniform(seed, k); });
}

Tensor Tensor::randn(const Shape& shape, uint64_t seed, DType dtype) {
    Generator gen(seed);
    return randn(shape, gen, dtype);
}

Tensor Tensor::uniform(const Shape& shape, uint64_t seed, double low, double high, DType dtype) {
    Generator gen(seed);
    return uniform(shape, gen, low, high, dtype);
}

int64_t Tensor::size(int64_t d) const {
    const int64_t nd = dim();
    SSMTUNE_CHECK(d >= -nd && d < nd, "dimension ", d, " out of range for ", describe());
    return shape()[size_t(d < 0 ? d + nd : d)];
}

bool Tensor::is_contiguous() const {
    if (numel() == 0) return true;  // no element to misplace (the stride walk below would fail on a 0 dim)
    int64_t expected = 1;
    for (int64_t d = dim() - 1; d >= 0; --d) {
        const int64_t s = shape()[size_t(d)];
        if (s != 1 && strides()[size_t(d)] != expected) return false;
        expected *= s;
    }
    return true;
}

std::string Tensor::describe() const {
    if (!defined()) return "undefined tensor";
    return std::string(dtype_name(dtype())) + shape_str(shape()) + " " + device().str();
}

void* Tensor::raw_data() {
    return static_cast<char*>(impl().storage->data()) + offset() * int64_t(dtype_size(dtype()));
}
const void* Tensor::raw_data() const {
    return static_cast<const char*>(impl().storage->data()) + offset() * int64_t(dtype_size(dtype()));
}

namespace {
int64_t element_offset(const Tensor& t, const std::vector<int64_t>& index) {
    SSMTUNE_CHECK(int64_t(index.size()) == t.dim(), "index of rank ", index.size(), " into ", t.describe());
    int64_t off = t.offset();
    for (size_t d = 0; d < index.size(); ++d) {
        const int64_t i = index[d] < 0 ? index[d] + t.shape()[d] : index[d];
        SSMTUNE_CHECK(i >= 0 && i < t.shape()[d], "index ", index[d], " out of range in dim ", d, " of ", t.describe());
        off += i * t.strides()[d];
    }
    return off;
}
}  // namespace

double Tensor::at(const std::vector<int64_t>& index) const {
    SSMTUNE_CHECK(device().is_cpu(), "at() needs a CPU tensor, got ", describe(), "; fix: call .to(Device::cpu())");
    const int64_t off = element_offset(*this, index);
    return dispatch_any_dtype(dtype(), [&](auto tag) -> double {
        using T = typename decltype(tag)::type;
        const T* p = static_cast<const T*>(impl().storage->data());
        return double(p[off]);
    });
}

void Tensor::set(const std::vector<int64_t>& index, double value) {
    SSMTUNE_CHECK(device().is_cpu(), "set() needs a CPU tensor, got ", describe());
    const int64_t off = element_offset(*this, index);
    dispatch_any_dtype(dtype(), [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* p = static_cast<T*>(impl().storage->data());
        p[off] = T(value);
    });
}

double Tensor::item() const {
    SSMTUNE_CHECK(numel() == 1, "item() needs a one-element tensor, got ", describe());
    if (!device().is_cpu()) return copy_to(*this, dtype(), Device::cpu()).item();
    return at(std::vector<int64_t>(size_t(dim()), 0));
}

Tensor Tensor::detach() const {
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = impl_ptr()->storage;
    impl->shape = shape();
    impl->strides = strides();
    impl->offset = offset();
    impl->dtype = dtype();
    return Tensor(std::move(impl));
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
    SSMTUNE_CHECK(shape.size() == strides.size(), "as_strided: shape ", shape_str(shape), " and strides ",
                  shape_str(strides), " differ in rank");
    int64_t lo = offset, hi = offset;
    for (size_t d = 0; d < shape.size(); ++d) {
        if (shape[d] == 0) { hi = lo - 1; break; }
        const int64_t span = (shape[d] - 1) * strides[d];
        (span < 0 ? lo : hi) += span;
    }
    const int64_t capacity = int64_t(impl().storage->nbytes() / dtype_size(dtype()));
    SSMTUNE_CHECK(hi < lo || (lo >= 0 && hi < capacity), "as_strided: view ", shape_str(shape), " strides ",
                  shape_str(strides), " offset ", offset, " reaches outside storage of ", capacity, " elements");
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = impl_ptr()->storage;
    impl->shape = shape;
    impl->strides = strides;
    impl->offset = offset;
    impl->dtype = dtype();
    return Tensor(std::move(impl));
}

Tensor& Tensor::set_requires_grad(bool on) {
    SSMTUNE_CHECK(!on || is_compute_float(dtype()), "requires_grad needs an F32 or F64 tensor, got ", describe());
    SSMTUNE_CHECK(is_leaf() || on, "cannot turn off requires_grad of a non-leaf tensor; fix: use detach()");
    impl().requires_grad = on;
    return *this;
}

Tensor Tensor::grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }
void Tensor::set_grad(const Tensor& g) { impl().grad = g.defined() ? g.impl_ptr() : nullptr; }
void Tensor::zero_grad() { impl().grad = nullptr; }

std::string Tensor::to_string(int64_t max_per_dim) const {
    if (!defined()) return "Tensor(undefined)";
    std::ostringstream os;
    os << "Tensor(" << describe() << (requires_grad() ? ", requires_grad" : "") << ")\n";
    Tensor c = device().is_cpu() ? *this : to(Device::cpu());
    os << std::setprecision(6);
    std::vector<int64_t> index(size_t(c.dim()), 0);
    // Recursive printer with elision of long dimensions.
    auto print = [&](auto&& self, int64_t d) -> void {
        if (d == c.dim()) { os << c.at(index); return; }
        os << "[";
        const int64_t n = c.shape()[size_t(d)];
        for (int64_t i = 0; i < n; ++i) {
            if (n > max_per_dim && i == max_per_dim / 2) {
                os << (d + 1 == c.dim() ? "..., " : "...,\n ");
                i = n - max_per_dim / 2;
            }
            index[size_t(d)] = i;
            self(self, d + 1);
            if (i + 1 < n) os << (d + 1 == c.dim() ? ", " : ",\n ");
        }
        os << "]";
    };
    print(print, 0);
    return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

}  // namespace ssmtune
