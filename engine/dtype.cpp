// dtype names, sizes and the float16 conversion (bfloat16 is inline in dtype.h).
#include "engine/dtype.h"

#include "engine/error.h"

namespace ssmtune {

size_t dtype_size(DType t) {
    switch (t) {
        case DType::F64: case DType::I64: return 8;
        case DType::F32: case DType::I32: return 4;
        case DType::F16: case DType::BF16: case DType::I16: return 2;
        default: return 1;
    }
}

const char* dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F64: return "F64";
        case DType::I64: return "I64";
        case DType::I32: return "I32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        case DType::I16: return "I16";
        case DType::I8: return "I8";
        case DType::U8: return "U8";
        default: return "BOOL";
    }
}

DType dtype_from_name(const std::string& name) {
    for (DType t : {DType::F32, DType::F64, DType::I64, DType::I32, DType::F16, DType::BF16, DType::I16, DType::I8,
                    DType::U8, DType::BOOL}) {
        if (name == dtype_name(t)) return t;
    }
    SSMTUNE_FAIL("unknown dtype \"", name, "\"; known: F32 F64 I64 I32 F16 BF16 I16 I8 U8 BOOL");
}

// float32 -> binary16 with round to nearest even, overflow to inf, gradual underflow to subnormals.
half_t::half_t(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx > 0x7f800000u) { bits = uint16_t(sign | 0x7e00u); return; }      // NaN
    if (absx >= 0x477ff000u) { bits = uint16_t(sign | 0x7c00u); return; }     // overflow (incl. inf) -> inf
    if (absx < 0x38800000u) {                                                 // subnormal or zero in half
        if (absx < 0x33000000u) { bits = uint16_t(sign); return; }            // below half of min subnormal
        const uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
        const int shift = 126 - int(absx >> 23);                              // 14..24
        uint32_t h = mant >> (shift);
        const uint32_t rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
        bits = uint16_t(sign | h);
        return;
    }
    uint32_t h = ((absx - 0x38000000u) >> 13);                               // rebias exponent 127 -> 15
    const uint32_t rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    bits = uint16_t(sign | h);
}

half_t::operator float() const {
    const uint32_t sign = uint32_t(bits & 0x8000u) << 16;
    uint32_t expo = (bits >> 10) & 0x1fu, mant = bits & 0x3ffu, out;
    if (expo == 0) {
        if (mant == 0) {
            out = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do { ++e; mant <<= 1; } while (!(mant & 0x400u));
            out = sign | (uint32_t(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (expo == 31) {
        out = sign | 0x7f800000u | (mant << 13);
    } else {
        out = sign | ((expo + 112u) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &out, 4);
    return f;
}

}  // namespace ssmtune
