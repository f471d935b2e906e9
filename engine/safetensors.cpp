// safetensors reader/writer and the atomic file write (see safetensors.h for the contract).
// Assumes a little-endian host (checked at compile time), as the format stores little-endian data.
#include "engine/safetensors.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "engine/tensor_copy.h"

namespace ssmtune {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ssmtune's safetensors I/O assumes a little-endian host");

namespace {

constexpr uint64_t kMaxHeader = 100000000;

// Names of dtypes the format has but ssmtune does not load (to say so clearly).
bool is_known_foreign_dtype(const std::string& s) {
    static const std::set<std::string> foreign = {"F4", "F6_E2M3", "F6_E3M2", "F8_E5M2", "F8_E4M3", "F8_E8M0",
                                                  "F8_E4M3FNUZ", "F8_E5M2FNUZ", "U16", "U32", "U64", "C64"};
    return foreign.count(s) > 0;
}

// Header JSON object with duplicate top-level keys rejected (nlohmann would silently keep one).
nlohmann::json parse_header(const char* text, size_t n, const std::string& source) {
    std::set<std::string> seen;
    std::string duplicate;
    const auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        if (depth == 1 && event == nlohmann::json::parse_event_t::key) {
            const std::string key = parsed.get<std::string>();
            if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
        }
        return true;
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text, text + n, callback);
    } catch (const nlohmann::json::parse_error& e) {
        SSMTUNE_FAIL(source, ": safetensors header is not valid JSON (", e.what(), ")");
    }
    SSMTUNE_CHECK(duplicate.empty(), source, ": safetensors header names tensor \"", duplicate, "\" twice");
    SSMTUNE_CHECK(j.is_object(), source, ": safetensors header is not a JSON object");
    return j;
}

// Validated tensor table from the header bytes; data_size is the size of the data buffer.
std::map<std::string, TensorInfo> read_table(const nlohmann::json& j, uint64_t data_size, const std::string& source,
                                             Metadata* metadata) {
    std::map<std::string, TensorInfo> table;
    for (auto& [name, entry] : j.items()) {
        if (name == "__metadata__") {
            SSMTUNE_CHECK(entry.is_object(), source, ": __metadata__ must be an object of strings");
            for (auto& [k, v] : entry.items()) {
                SSMTUNE_CHECK(v.is_string(), source, ": __metadata__ value of \"", k, "\" is not a string");
                if (metadata) (*metadata)[k] = v.get<std::string>();
            }
            continue;
        }
        SSMTUNE_CHECK(entry.is_object() && entry.contains("dtype") && entry.contains("shape") &&
                          entry.contains("data_offsets"),
                      source, ": tensor \"", name, "\" needs dtype, shape and data_offsets");
        const auto& dt = entry["dtype"];
        SSMTUNE_CHECK(dt.is_string(), source, ": tensor \"", name, "\" has a non-string dtype");
        const std::string dtype = dt.get<std::string>();
        SSMTUNE_CHECK(!is_known_foreign_dtype(dtype), source, ": tensor \"", name, "\" has dtype ", dtype,
                      ", which ssmtune does not support; fix: convert the file to F32, F16 or BF16");
        TensorInfo info;
        try {
            info.dtype = dtype_from_name(dtype);
        } catch (const Error&) {
            SSMTUNE_FAIL(source, ": tensor \"", name, "\" has unknown dtype \"", dtype, "\"");
        }
        SSMTUNE_CHECK(entry["shape"].is_array(), source, ": tensor \"", name, "\" has a shape that is not a list");
        uint64_t numel = 1;
        for (const auto& d : entry["shape"]) {
            SSMTUNE_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), source,
                          ": tensor \"", name, "\" has an invalid dimension ", d.dump());
            const uint64_t v = d.get<uint64_t>();
            SSMTUNE_CHECK(v < (uint64_t(1) << 48) && (v == 0 || numel <= (uint64_t(1) << 62) / v), source,
                          ": tensor \"", name, "\" is impossibly large");
            numel *= v;
            info.shape.push_back(int64_t(v));
        }
        const auto& off = entry["data_offsets"];
        SSMTUNE_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
                      source, ": tensor \"", name, "\" needs data_offsets [begin, end] of two unsigned integers");
        info.begin = off[0].get<uint64_t>();
        info.end = off[1].get<uint64_t>();
        SSMTUNE_CHECK(info.end >= info.begin, source, ": tensor \"", name, "\" has data_offsets end before begin");
        SSMTUNE_CHECK(info.end - info.begin == numel * dtype_size(info.dtype), source, ": tensor \"", name, "\" ",
                      dtype, shape_str(info.shape), " needs ", numel * dtype_size(info.dtype), " bytes but its offsets span ",
                      info.end - info.begin);
        SSMTUNE_CHECK(info.end <= data_size, source, ": tensor \"", name, "\" runs past the end of the file (ends at ",
                      info.end, ", data is ", data_size, " bytes)");
        table[name] = info;
    }
    // The tensors, sorted by offset, must tile the data buffer exactly.
    std::vector<std::pair<uint64_t, std::string>> order;
    for (auto& [name, info] : table) order.emplace_back(info.begin, name);
    std::sort(order.begin(), order.end(), [&](const auto& a, const auto& b) {
        return a.first != b.first ? a.first < b.first : table[a.second].end < table[b.second].end;
    });
    uint64_t expected = 0;
    for (auto& [begin, name] : order) {
        SSMTUNE_CHECK(begin >= expected, source, ": tensor \"", name, "\" overlaps the previous tensor (starts at ",
                      begin, ", previous ends at ", expected, ")");
        SSMTUNE_CHECK(begin == expected, source, ": hole in the data buffer before tensor \"", name, "\" (bytes ",
                      expected, "..", begin, " belong to no tensor)");
        expected = table[name].end;
    }
    SSMTUNE_CHECK(expected == data_size, source, ": ", data_size - expected,
                  " trailing bytes after the last tensor (file has more data than its header describes)");
    return table;
}

// Splits the raw bytes into header length + header + data, validating the sizes.
nlohmann::json split_file(const uint8_t* data, size_t size, const std::string& source, uint64_t& header_len) {
    SSMTUNE_CHECK(size >= 8, source, ": too short to be a safetensors file (", size, " bytes)");
    std::memcpy(&header_len, data, 8);
    SSMTUNE_CHECK(header_len <= kMaxHeader, source, ": safetensors header length ", header_len,
                  " exceeds the 100 MB limit (corrupt or not a safetensors file)");
    SSMTUNE_CHECK(8 + header_len <= size, source, ": safetensors header length ", header_len,
                  " runs past the end of the file (", size, " bytes)");
    SSMTUNE_CHECK(header_len > 0 && data[8] == '{', source, ": safetensors header does not start with '{'");
    return parse_header(reinterpret_cast<const char*>(data + 8), size_t(header_len), source);
}

std::vector<uint8_t> read_whole_file(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    SSMTUNE_CHECK(f, "cannot open ", path, ": ", std::strerror(errno));
    std::vector<uint8_t> bytes;
    std::fseek(f, 0, SEEK_END);
    const long size = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    if (size > 0) {
        bytes.resize(size_t(size));
        const size_t got = std::fread(bytes.data(), 1, bytes.size(), f);
        std::fclose(f);
        SSMTUNE_CHECK(got == bytes.size(), "reading ", path, " failed after ", got, " of ", size, " bytes");
    } else {
        std::fclose(f);
    }
    return bytes;
}

}  // namespace

std::map<std::string, TensorInfo> read_safetensors_header(const std::string& path, Metadata* metadata) {
    const std::vector<uint8_t> bytes = read_whole_file(path);
    uint64_t header_len = 0;
    const nlohmann::json j = split_file(bytes.data(), bytes.size(), path, header_len);
    return read_table(j, bytes.size() - 8 - header_len, path, metadata);
}

TensorMap parse_safetensors(const uint8_t* data, size_t size, const std::string& source, Metadata* metadata) {
    uint64_t header_len = 0;
    const nlohmann::json j = split_file(data, size, source, header_len);
    const auto table = read_table(j, size - 8 - header_len, source, metadata);
    const uint8_t* buffer = data + 8 + header_len;
    TensorMap out;
    for (const auto& [name, info] : table) {
        Tensor t = Tensor::empty(info.shape, info.dtype);
        if (info.end > info.begin) std::memcpy(t.raw_data(), buffer + info.begin, size_t(info.end - info.begin));
        out[name] = t;
    }
    return out;
}

TensorMap load_safetensors(const std::string& path, Metadata* metadata) {
    const std::vector<uint8_t> bytes = read_whole_file(path);
    return parse_safetensors(bytes.data(), bytes.size(), path, metadata);
}

std::vector<uint8_t> safetensors_bytes(const TensorMap& tensors, const Metadata& metadata) {
    // Reference writer order: larger element size first, then by name.
    std::vector<std::pair<std::string, Tensor>> order;
    for (const auto& [name, t] : tensors) {
        SSMTUNE_CHECK(!name.empty() && name != "__metadata__", "safetensors: invalid tensor name \"", name, "\"");
        SSMTUNE_CHECK(t.defined(), "safetensors: tensor \"", name, "\" is undefined");
        order.emplace_back(name, copy_to(t, t.dtype(), Device::cpu()));  // contiguous host copy
    }
    std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
        const size_t sa = dtype_size(a.second.dtype()), sb = dtype_size(b.second.dtype());
        return sa != sb ? sa > sb : a.first < b.first;
    });
    nlohmann::ordered_json header;
    Metadata meta = metadata;
    if (!meta.count("format")) meta["format"] = "pt";
    header["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : meta) header["__metadata__"][k] = v;
    uint64_t offset = 0;
    for (const auto& [name, t] : order) {
        const uint64_t n = uint64_t(t.numel()) * dtype_size(t.dtype());
        header[name] = {{"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + n}}};
        offset += n;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::vector<uint8_t> bytes(8 + text.size() + offset);
    const uint64_t n = text.size();
    std::memcpy(bytes.data(), &n, 8);
    std::memcpy(bytes.data() + 8, text.data(), text.size());
    uint8_t* data = bytes.data() + 8 + text.size();
    for (const auto& [name, t] : order) {
        const size_t nb = size_t(t.numel()) * dtype_size(t.dtype());
        if (nb) std::memcpy(data, t.raw_data(), nb);
        data += nb;
    }
    return bytes;
}

void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
    const std::vector<uint8_t> bytes = safetensors_bytes(tensors, metadata);
    write_file_atomically(path, [&](const std::string& tmp) {
        FILE* f = std::fopen(tmp.c_str(), "wb");
        SSMTUNE_CHECK(f, "cannot create ", tmp, ": ", std::strerror(errno));
        const size_t wrote = bytes.empty() ? 0 : std::fwrite(bytes.data(), 1, bytes.size(), f);
        const int flush_rc = std::fflush(f);
        const int close_rc = std::fclose(f);
        SSMTUNE_CHECK(wrote == bytes.size() && flush_rc == 0 && close_rc == 0, "writing ", path, " failed after ",
                      wrote, " of ", bytes.size(), " bytes: ", std::strerror(errno), " (disk full?)");
    });
}

void write_file_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& write) {
    static std::atomic<uint64_t> counter{0};
    const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
    try {
        write(tmp);
        const int fd = ::open(tmp.c_str(), O_RDONLY);
        SSMTUNE_CHECK(fd >= 0, "cannot reopen ", tmp, " to flush it: ", std::strerror(errno));
        const int sync_rc = ::fsync(fd);
        ::close(fd);
        SSMTUNE_CHECK(sync_rc == 0, "fsync of ", tmp, " failed: ", std::strerror(errno));
        SSMTUNE_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot move ", tmp, " to ", path, ": ",
                      std::strerror(errno));
    } catch (const Error&) {
        std::remove(tmp.c_str());
        throw;
    } catch (const std::exception& e) {
        std::remove(tmp.c_str());
        SSMTUNE_FAIL("writing ", path, " failed: ", e.what());
    }
}

}  // namespace ssmtune
