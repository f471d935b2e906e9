// Host <-> device transfers round-trip bit-exactly for every dtype (the seam the CUDA backend builds on).
#include <doctest/doctest.h>

#include "engine/tensor.h"

using namespace ssmtune;

TEST_CASE("gpu: tensors round-trip through device memory") {
    for (DType t : {DType::F32, DType::F64, DType::I64, DType::I32, DType::F16, DType::BF16, DType::U8}) {
        Tensor x = Tensor::randn({3, 5, 7}, 42, DType::F64).to(t);
        Tensor back = x.to(Device::cuda()).to(Device::cpu());
        CHECK(back.device().is_cpu());
        CHECK(back.to_vector<double>() == x.to_vector<double>());
    }
    // A non-contiguous view is gathered on the host before the transfer.
    Tensor v = Tensor::randn({4, 6}, 7).transpose(0, 1);
    CHECK(v.to(Device::cuda()).to(Device::cpu()).to_vector<float>() == v.contiguous().to_vector<float>());
}
