// round_to_double: a double result rounded to binary64 on every target, for the few places where an integer taken
// from it must equal the reference's (Python's int() of a fraction times a count, torch.quantile's index).
// Not here: anything about float32, or a change of rounding mode.
#pragma once

namespace ssmtune {

// x rounded to a double. A no-op where double arithmetic is IEEE binary64 throughout (x86-64, aarch64); on x87
// (i686's default maths) a product or quotient stays in an 80-bit register until stored, so int(0.3 * 10) is 2 there
// and 3 everywhere else, Python included. For the places that turn a fraction into a count or an index, which must
// equal the reference's on every target (the volatile store is the rounding; there is no cheaper portable one).
inline double round_to_double(double x) {
    volatile double stored = x;
    return stored;
}

}  // namespace ssmtune
