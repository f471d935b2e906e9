// Tensor: a cheap handle (shared_ptr) to a strided view of shared Storage, plus its autograd metadata.
//
// A Tensor has a shape, strides and offset in elements, a dtype and a device. Views (reshape when possible,
// transpose, permute, narrow, expand, squeeze, unsqueeze) share storage; compute ops make inputs contiguous.
// The view methods and arithmetic operators are differentiable: they are declared here for convenience and
// implemented by ops/ (see ops/ops.h), which records the autograd graph. Raw, non-recording access is
// `as_strided`. Not here: implicit type promotion (mixing dtypes in an op is an Error), in-place autograd.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/rng.h"
#include "engine/storage.h"

namespace ssmtune {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);

namespace autograd { struct Node; }

struct TensorImpl {
    std::shared_ptr<Storage> storage;
    Shape shape, strides;
    int64_t offset = 0;  // in elements
    DType dtype = DType::F32;
    // autograd
    bool requires_grad = false;
    std::shared_ptr<TensorImpl> grad;           // accumulated gradient of a leaf
    std::shared_ptr<autograd::Node> grad_fn;    // node that produced this tensor (null for leaves)
    int output_nr = 0;                          // which output of grad_fn
};

// While one lives, Tensor::randn / uniform on this thread return zeros of the asked shape and dtype, yet advance
// their Generator by the draws they would have made. For building a model whose every parameter a checkpoint is
// about to overwrite (HF's no_init_weights, PyTorch's skip_init): the draws are not paid for, and every generator
// (a dropout's, the next module's) is left exactly where the full initialisation leaves it. Nests.
class SkipRandomInit {
public:
    SkipRandomInit() { ++depth(); }
    ~SkipRandomInit() { --depth(); }
    SkipRandomInit(const SkipRandomInit&) = delete;
    SkipRandomInit& operator=(const SkipRandomInit&) = delete;
    static bool active() { return depth() > 0; }

private:
    static int& depth() {
        thread_local int d = 0;
        return d;
    }
};

class Tensor {
public:
    Tensor() = default;
    explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

    // ---- factories ----
    static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
    static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
    static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = Device::cpu());
    static Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = Device::cpu());
    static Tensor scalar(double value, DType dtype = DType::F32);
    static Tensor arange(int64_t n, DType dtype = DType::I64);
    static Tensor arange(double start, double end, double step, DType dtype = DType::F32);
    template <class T>
    static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
    // Seeded draws: element i uses Philox draw gen.advance(numel) + i (filled by several threads for large tensors:
    // each element is a function of its index alone, so the bits do not depend on the thread count).
    // While a SkipRandomInit lives on this thread they return zeros instead, having advanced `gen` all the same.
    static Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::F32, double mean = 0, double std = 1);
    static Tensor uniform(const Shape& shape, Generator& gen, double low, double high, DType dtype = DType::F32);
    static Tensor randn(const Shape& shape, uint64_t seed, DType dtype = DType::F32);
    static Tensor uniform(const Shape& shape, uint64_t seed, double low, double high, DType dtype = DType::F32);

    // ---- metadata ----
    bool defined() const { return impl_ != nullptr; }
    const Shape& shape() const { return impl().shape; }
    const Shape& strides() const { return impl().strides; }
    int64_t offset() const { return impl().offset; }
    int64_t dim() const { return int64_t(impl().shape.size()); }
    int64_t size(int64_t d) const;  // negative d counts from the end
    int64_t numel() const { return shape_numel(impl().shape); }
    DType dtype() const { return impl().dtype; }
    Device device() const { return impl().storage->device(); }
    bool is_contiguous() const;
    std::string describe() const;  // "F32[2, 3] cpu"

    // ---- raw data (CPU; pointer at the view's offset) ----
    template <class T> T* data();
    template <class T> const T* data() const;
    void* raw_data();
    const void* raw_data() const;
    const std::shared_ptr<Storage>& storage() const { return impl().storage; }

    // ---- element access (for tests and small programs; slow) ----
    double item() const;                                    // one-element tensors
    double at(const std::vector<int64_t>& index) const;     // any dtype, read as double
    void set(const std::vector<int64_t>& index, double value);
    template <class T> std::vector<T> to_vector() const;    // row-major copy, converted to T

    // ---- copies and conversions (differentiable for float dtypes; see ops/) ----
    Tensor contiguous() const;
    Tensor clone() const;
    Tensor to(DType dtype) const;
    Tensor to(Device device) const;
    Tensor detach() const;  // same storage, no autograd history

    // ---- views (differentiable; implemented in ops/views.cpp) ----
    Tensor reshape(const Shape& shape) const;  // view when strides allow, else a copy; one dim may be -1
    Tensor view(const Shape& shape) const;     // like reshape, but an Error when a copy would be needed
    Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
    Tensor transpose(int64_t d0, int64_t d1) const;
    Tensor permute(const std::vector<int64_t>& dims) const;
    Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
    Tensor select(int64_t dim, int64_t index) const;  // narrow + squeeze
    Tensor expand(const Shape& shape) const;           // broadcast size-1 dims without copying
    Tensor squeeze(int64_t dim) const;
    Tensor unsqueeze(int64_t dim) const;
    // Raw view, no autograd, no checks beyond bounds: the building block of the differentiable views.
    Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;

    // ---- autograd ----
    bool requires_grad() const { return impl().requires_grad; }
    Tensor& set_requires_grad(bool on = true);
    bool is_leaf() const { return impl().grad_fn == nullptr; }
    Tensor grad() const;                 // undefined Tensor when none
    void set_grad(const Tensor& g);      // replace (undefined clears)
    void zero_grad();                    // drop the accumulated gradient
    const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
    // Reverse-mode sweep from this tensor; `gradient` defaults to 1 for a one-element tensor.
    void backward(const Tensor& gradient = Tensor()) const;

    // ---- printing ----
    std::string to_string(int64_t max_per_dim = 6) const;

    TensorImpl& impl() const;
    const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
    bool same(const Tensor& o) const { return impl_ == o.impl_; }

private:
    std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Arithmetic operators (differentiable; ops/elementwise_binary.cpp). Scalars are of the tensor's dtype.
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, double s);
Tensor operator-(const Tensor& a, double s);
Tensor operator*(const Tensor& a, double s);
Tensor operator/(const Tensor& a, double s);
Tensor operator+(double s, const Tensor& a);
Tensor operator-(double s, const Tensor& a);
Tensor operator*(double s, const Tensor& a);
Tensor operator-(const Tensor& a);

// ---- template definitions ----
template <class T>
T* Tensor::data() {
    SSMTUNE_CHECK(dtype() == dtype_of<T>::value, "data<", dtype_name(dtype_of<T>::value), ">() on a ", describe());
    return static_cast<T*>(raw_data());
}
template <class T>
const T* Tensor::data() const {
    SSMTUNE_CHECK(dtype() == dtype_of<T>::value, "data<", dtype_name(dtype_of<T>::value), ">() on a ", describe());
    return static_cast<const T*>(raw_data());
}

template <class T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
    SSMTUNE_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
                  " values do not fill shape ", shape_str(shape));
    Tensor t = empty(shape, dtype_of<T>::value);
    T* p = t.data<T>();
    for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
    return t;
}

template <class T>
std::vector<T> Tensor::to_vector() const {
    Tensor c = to(Device::cpu()).to(dtype_of<T>::value).contiguous();
    const T* p = c.data<T>();
    return std::vector<T>(p, p + c.numel());
}

}  // namespace ssmtune
