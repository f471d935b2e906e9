// Philox4x32-10: a counter-based random number generator (Salmon et al., SC'11).
//
// A random value is a pure function of (seed, counter), so tensor element i of a draw gets counter offset+i on
// the CPU and, later, the same on a GPU thread: results are reproducible and thread-count independent.
// `Generator` keeps (seed, offset) and advances the offset by what each draw consumed; saving those two numbers
// saves the RNG state. Normals by Box–Muller on pairs of uniforms. Not here: cryptographic quality.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "engine/host_device.h"

namespace ssmtune {

// One Philox4x32-10 block: 4 random 32-bit words for a 128-bit counter and a 64-bit key.
SSMTUNE_HD inline void philox4x32_10(uint32_t counter[4], uint32_t key0, uint32_t key1, uint32_t out[4]) {
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    for (int round = 0; round < 10; ++round) {
        const uint64_t p0 = uint64_t(0xD2511F53u) * c0;
        const uint64_t p1 = uint64_t(0xCD9E8D57u) * c2;
        const uint32_t n0 = uint32_t(p1 >> 32) ^ c1 ^ key0;
        const uint32_t n2 = uint32_t(p0 >> 32) ^ c3 ^ key1;
        c0 = n0; c1 = uint32_t(p1); c2 = n2; c3 = uint32_t(p0);
        key0 += 0x9E3779B9u;
        key1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

// Uniform in (0, 1] from 32 random bits, in double precision (24 bits are enough for float users).
SSMTUNE_HD inline double uniform_from_bits(uint32_t hi, uint32_t lo) {
    const uint64_t bits53 = ((uint64_t(hi) << 21) ^ uint64_t(lo >> 11)) & ((uint64_t(1) << 53) - 1);
    return (double(bits53) + 1.0) * (1.0 / 9007199254740992.0);
}

// Draw number `index` of stream `seed`: two uniforms in (0, 1].
SSMTUNE_HD inline void philox_uniform2(uint64_t seed, uint64_t index, double& u0, double& u1) {
    uint32_t counter[4] = {uint32_t(index), uint32_t(index >> 32), 0u, 0u}, out[4];
    philox4x32_10(counter, uint32_t(seed), uint32_t(seed >> 32), out);
    u0 = uniform_from_bits(out[0], out[1]);
    u1 = uniform_from_bits(out[2], out[3]);
}

// Standard normal for draw `index` (Box–Muller; uses the pair's first variate).
SSMTUNE_HD inline double philox_normal(uint64_t seed, uint64_t index) {
    double u0, u1;
    philox_uniform2(seed, index, u0, u1);
    return std::sqrt(-2.0 * std::log(u0)) * std::cos(6.283185307179586 * u1);
}

// Uniform in [0, 1) for draw `index`.
SSMTUNE_HD inline double philox_uniform(uint64_t seed, uint64_t index) {
    double u0, u1;
    philox_uniform2(seed, index, u0, u1);
    return 1.0 - u0;
}

// A stream: seed plus how many draws were consumed. Copyable; equal state gives equal draws.
class Generator {
public:
    explicit Generator(uint64_t seed = 0) : seed_(seed) {}
    uint64_t seed() const { return seed_; }
    uint64_t offset() const { return offset_; }
    void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
    // Reserves n draws and returns the first draw's index.
    uint64_t advance(uint64_t n) { const uint64_t first = offset_; offset_ += n; return first; }

private:
    uint64_t seed_ = 0;
    uint64_t offset_ = 0;
};

}  // namespace ssmtune
