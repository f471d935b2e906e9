// Raw (non-recording) copies between strided views, with dtype conversion and device transfer.
//
// copy_into(dst, src): same shape, any dtypes; the one place elements are converted between types.
// The differentiable contiguous()/clone()/to() in ops/ are thin autograd wrappers around these.
#pragma once

#include "engine/tensor.h"

namespace ssmtune {

// Copies src into dst element by element (shapes must match; dtypes may differ): both on the CPU, both on one
// GPU (any strides; conversions among F32, F64, I32, I64), or a contiguous same-dtype transfer between the CPU and
// a registered GPU backend.
void copy_into(Tensor& dst, const Tensor& src);
// New contiguous tensor with src's values in `dtype` on `device` (no autograd).
Tensor copy_to(const Tensor& src, DType dtype, Device device);
// Moves each tensor's data to `device` in place: every handle sharing a tensor (a module's parameter list, PEFT
// hooks, an optimizer's groups) sees it on the new device, contiguous; accumulated gradients are dropped. All copies
// are made before any tensor changes, so a failure (e.g. out of memory) leaves every tensor as it was. Views made
// from a tensor earlier keep the old storage.
void move_in_place(const std::vector<Tensor>& tensors, Device device);
// The row-major index of the first NaN or Inf element of a floating-point tensor, or -1 when every element is finite
// (and for integer tensors); `value` receives that element. Reads the elements in place, in their own type (the weight
// loaders check every tensor they read; a float64 copy of a 130M-parameter model's embedding was 300 MB).
int64_t first_non_finite(const Tensor& t, double* value = nullptr);

}  // namespace ssmtune
