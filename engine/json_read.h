// Reading numbers out of JSON configs without the JSON library's silent conversions: nlohmann's get<int64_t>()
// truncates 2.5 to 2, turns true into 1, and converts a float beyond the integer's range with undefined behaviour
// (1e30 became -9223372036854775808 in a task's span, found by fuzzing the CLI). Every config reader goes through
// these: an integer field takes a JSON integer, or a float with an integral value (1e3, as --set writes it) within
// ±2^53; anything else is one Error naming the field.
// Not here: the range checks of each field (its reader knows them), JSON parsing itself.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace ssmtune {

// `v` as an integer in [lo, hi]; `what` names it in the error.
inline int64_t json_integer(const nlohmann::json& v, const std::string& what, int64_t lo = -(int64_t(1) << 53),
                            int64_t hi = int64_t(1) << 53) {
    bool ok = false;
    int64_t out = 0;
    if (v.is_number_unsigned()) {
        ok = v.get<uint64_t>() <= uint64_t(std::numeric_limits<int64_t>::max());
        out = ok ? int64_t(v.get<uint64_t>()) : 0;
    } else if (v.is_number_integer()) {
        ok = true;
        out = v.get<int64_t>();
    } else if (v.is_number_float()) {
        const double d = v.get<double>();
        ok = std::isfinite(d) && std::floor(d) == d && std::fabs(d) <= 9007199254740992.0;
        out = ok ? int64_t(d) : 0;
    }
    SSMTUNE_CHECK(ok && out >= lo && out <= hi, what, " must be an integer in [", lo, ", ", hi, "], got ", v.dump());
    return out;
}

// Reads j[key] into `out` when present and not null: integers through json_integer (within the type's range),
// floating-point from any JSON number, booleans and strings only from their own JSON type.
template <class T>
void read_json_field(const nlohmann::json& j, const char* key, T& out, const std::string& source) {
    if (!j.contains(key) || j.at(key).is_null()) return;
    const nlohmann::json& v = j.at(key);
    const std::string what = source + ": field \"" + key + "\"";
    if constexpr (std::is_same_v<T, bool>) {
        SSMTUNE_CHECK(v.is_boolean(), what, " must be true or false, got ", v.dump());
        out = v.get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
        const int64_t lo = std::is_signed_v<T> ? std::max<int64_t>(int64_t(std::numeric_limits<T>::min()), -(int64_t(1) << 53)) : 0;
        const int64_t hi = int64_t(std::min<uint64_t>(uint64_t(std::numeric_limits<T>::max()), uint64_t(1) << 53));
        out = T(json_integer(v, what, lo, hi));
    } else if constexpr (std::is_floating_point_v<T>) {
        SSMTUNE_CHECK(v.is_number(), what, " must be a number, got ", v.dump());
        out = v.get<T>();
    } else {
        SSMTUNE_CHECK(v.is_string(), what, " must be a string, got ", v.dump());
        out = v.get<T>();
    }
}

}  // namespace ssmtune
