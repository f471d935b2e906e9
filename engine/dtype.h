// Element types of a Tensor and their conversions.
//
// F32 is the default compute type, F64 the type of gradient checks and teaching runs, I64/I32 hold indices.
// F16, BF16, I16, I8, U8 and BOOL exist for storage and file I/O: they convert with `to()` but ops do not
// compute in them. F16/BF16 conversions round to nearest even, as IEEE 754 and PyTorch do.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace ssmtune {

enum class DType : uint8_t { F32, F64, I64, I32, F16, BF16, I16, I8, U8, BOOL };

// Size of one element in bytes.
size_t dtype_size(DType t);
// safetensors spelling: "F32", "BF16", "BOOL", ...
const char* dtype_name(DType t);
// Inverse of dtype_name; throws Error listing the known names when `name` is not one of them.
DType dtype_from_name(const std::string& name);
inline bool is_floating(DType t) { return t == DType::F32 || t == DType::F64 || t == DType::F16 || t == DType::BF16; }
// Types ops compute in (F32, F64).
inline bool is_compute_float(DType t) { return t == DType::F32 || t == DType::F64; }

// IEEE binary16, stored as bits.
struct half_t {
    uint16_t bits = 0;
    half_t() = default;
    half_t(float f);  // NOLINT: implicit on purpose, used by the generic cast loops
    operator float() const;
};

// bfloat16 (the top 16 bits of a float32), stored as bits.
struct bf16_t {
    uint16_t bits = 0;
    bf16_t() = default;
    bf16_t(float f) {  // round to nearest even; NaN stays NaN
        uint32_t u;
        std::memcpy(&u, &f, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) { bits = uint16_t((u >> 16) | 0x40u); return; }
        u += 0x7fffu + ((u >> 16) & 1u);
        bits = uint16_t(u >> 16);
    }
    operator float() const {
        uint32_t u = uint32_t(bits) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
};

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<half_t> { static constexpr DType value = DType::F16; };
template <> struct dtype_of<bf16_t> { static constexpr DType value = DType::BF16; };
template <> struct dtype_of<int16_t> { static constexpr DType value = DType::I16; };
template <> struct dtype_of<int8_t> { static constexpr DType value = DType::I8; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::BOOL; };

template <class T> struct type_tag { using type = T; };

// Calls fn(type_tag<T>{}) with T the C++ type of `t`, for every dtype.
template <class Fn>
decltype(auto) dispatch_any_dtype(DType t, Fn&& fn) {
    switch (t) {
        case DType::F32: return fn(type_tag<float>{});
        case DType::F64: return fn(type_tag<double>{});
        case DType::I64: return fn(type_tag<int64_t>{});
        case DType::I32: return fn(type_tag<int32_t>{});
        case DType::F16: return fn(type_tag<half_t>{});
        case DType::BF16: return fn(type_tag<bf16_t>{});
        case DType::I16: return fn(type_tag<int16_t>{});
        case DType::I8: return fn(type_tag<int8_t>{});
        case DType::U8: return fn(type_tag<uint8_t>{});
        case DType::BOOL: default: return fn(type_tag<bool>{});
    }
}

}  // namespace ssmtune
