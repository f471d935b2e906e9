// safetensors reader/writer and the atomic file write (contract in safetensors.h; format notes in
// reference/style-and-ecosystem.md B.1, rules copied from huggingface/safetensors `validate()`).
//
// Reading: the file is mapped (or, where mapping fails, read once into a buffer), the header is validated in
// full before any tensor is allocated, then each tensor is copied once into its own 64-byte-aligned storage.
// Writing: tensors sorted as the reference writer sorts them, header space-padded to a multiple of 8, bytes
// streamed from each tensor's storage into a temporary file that is fsynced and renamed over the target.
// The format stores little-endian data and this file copies bytes as they are, so the host must be
// little-endian (checked at compile time). open_safetensors reads the header the same way and then one tensor at a
// time, by pread (engine/tensor_file.h). Not here: big-endian hosts, dtypes ssmtune lacks.
#include "engine/safetensors.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "engine/file_io.h"
#include "engine/tensor_copy.h"

namespace ssmtune {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ssmtune's safetensors I/O assumes a little-endian host");

namespace {

constexpr uint64_t kMaxHeader = 100000000;     // the reference reader's header-too-large guard
constexpr uint64_t kMaxElements = uint64_t(1) << 62;

// Position of a dtype in the format's Dtype enum (ordered by increasing alignment). The reference writer
// sorts by this, descending, then by name; copying it makes our files byte-identical to Python's.
int format_rank(DType t) {
    switch (t) {
        case DType::BOOL: return 0;
        case DType::U8: return 1;
        case DType::I8: return 2;
        case DType::I16: return 3;
        case DType::F16: return 4;
        case DType::BF16: return 5;
        case DType::I32: return 6;
        case DType::F32: return 7;
        case DType::F64: return 8;
        case DType::I64: default: return 9;
    }
}

// Names of dtypes the format has but ssmtune does not load (to say so clearly rather than "unknown").
bool is_foreign_dtype(const std::string& s) {
    static const std::set<std::string> foreign = {"F4", "F6_E2M3", "F6_E3M2", "F8_E5M2", "F8_E4M3", "F8_E8M0",
                                                  "F8_E4M3FNUZ", "F8_E5M2FNUZ", "U16", "U32", "U64", "C64"};
    return foreign.count(s) > 0;
}

struct Header {
    std::map<std::string, TensorInfo> table;
    Metadata metadata;
};

// ---- reading ----

// Header length N from the first 8 bytes, checked against the 100 MB guard and the total size.
uint64_t header_length(const uint8_t* first8, uint64_t total_size, const std::string& source) {
    SSMTUNE_CHECK(total_size >= 8, source, ": too short to be a safetensors file (", total_size,
                  " bytes; the 8-byte header length alone needs 8)");
    uint64_t n = 0;
    std::memcpy(&n, first8, 8);  // little-endian on disk and on the host
    SSMTUNE_CHECK(n <= kMaxHeader, source, ": safetensors header length ", n,
                  " exceeds the 100,000,000-byte limit (corrupt or not a safetensors file)");
    SSMTUNE_CHECK(8 + n <= total_size, source, ": safetensors header length ", n, " runs past the end of the file (",
                  total_size, " bytes; truncated download?)");
    return n;
}

// JSON of the header, with duplicate keys in any object rejected (nlohmann would silently keep the last).
nlohmann::json parse_json(const char* text, uint64_t n, const std::string& source) {
    SSMTUNE_CHECK(n > 0 && text[0] == '{', source, ": safetensors header does not start with '{' (not a "
                  "safetensors file, or a corrupt one)");
    std::vector<std::set<std::string>> open_objects;
    std::string duplicate;
    size_t duplicate_depth = 0;
    const auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        using E = nlohmann::json::parse_event_t;
        if (event == E::object_start) open_objects.emplace_back();
        else if (event == E::object_end && !open_objects.empty()) open_objects.pop_back();
        else if (event == E::key && !open_objects.empty() && duplicate.empty()) {
            std::string key = parsed.get<std::string>();
            if (!open_objects.back().insert(key).second) { duplicate = key; duplicate_depth = open_objects.size(); }
        }
        return true;
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text, text + n, callback);
    } catch (const nlohmann::json::exception& e) {
        SSMTUNE_FAIL(source, ": safetensors header is not valid JSON (", e.what(), ")");
    }
    SSMTUNE_CHECK(duplicate.empty() || duplicate_depth > 1, source, ": safetensors header names tensor \"",
                  duplicate, "\" twice (duplicate names are not allowed)");
    SSMTUNE_CHECK(duplicate.empty(), source, ": safetensors header repeats the key \"", duplicate,
                  "\" inside one object (duplicate keys are not allowed)");
    SSMTUNE_CHECK(j.is_object(), source, ": safetensors header is not a JSON object");
    return j;
}

// One tensor entry: {"dtype": str, "shape": [uint...], "data_offsets": [begin, end]}, checked on its own.
TensorInfo read_entry(const std::string& name, const nlohmann::json& entry, const std::string& source) {
    const std::string where = source + ": tensor \"" + name + "\"";
    SSMTUNE_CHECK(entry.is_object(), where, " is not a JSON object of dtype, shape and data_offsets");
    for (const char* field : {"dtype", "shape", "data_offsets"})
        SSMTUNE_CHECK(entry.contains(field), where, " is missing \"", field, "\"");
    const auto& dt = entry.at("dtype");
    SSMTUNE_CHECK(dt.is_string(), where, " has a dtype that is not a string: ", dt.dump());
    const std::string dtype = dt.get<std::string>();
    SSMTUNE_CHECK(!is_foreign_dtype(dtype), where, " has dtype ", dtype,
                  ", which ssmtune does not support; fix: convert the file to F32, F16 or BF16");
    TensorInfo info;
    try {
        info.dtype = dtype_from_name(dtype);
    } catch (const Error&) {
        SSMTUNE_FAIL(where, " has unknown dtype \"", dtype, "\"; known: F32 F64 I64 I32 F16 BF16 I16 I8 U8 BOOL");
    }

    const auto& shape = entry.at("shape");
    SSMTUNE_CHECK(shape.is_array(), where, " has a shape that is not a list: ", shape.dump());
    uint64_t numel = 1;  // product of the nonzero dims, kept below 2^62 so every later product fits
    bool empty = false;
    for (const auto& d : shape) {
        // nlohmann stores non-negative integers as unsigned; negative ones as signed; 2.0 as float.
        SSMTUNE_CHECK(d.is_number_unsigned(), where, " has dimension ", d.dump(),
                      " in its shape; dimensions must be non-negative integers");
        const uint64_t v = d.get<uint64_t>();
        if (v == 0) { empty = true; info.shape.push_back(0); continue; }
        SSMTUNE_CHECK(v <= kMaxElements && numel <= kMaxElements / v, where, " has an impossibly large shape ",
                      shape.dump());
        numel *= v;
        info.shape.push_back(int64_t(v));
    }
    if (empty) numel = 0;

    const auto& off = entry.at("data_offsets");
    SSMTUNE_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
                  where, " needs data_offsets [begin, end] of two non-negative integers, got ", off.dump());
    info.begin = off[0].get<uint64_t>();
    info.end = off[1].get<uint64_t>();
    SSMTUNE_CHECK(info.end >= info.begin, where, " has data_offsets [", info.begin, ", ", info.end,
                  "] with end before begin");
    SSMTUNE_CHECK(numel <= kMaxElements / dtype_size(info.dtype), where, " has an impossibly large shape ",
                  shape.dump());
    const uint64_t need = numel * dtype_size(info.dtype);  // < 2^62 after the check above
    SSMTUNE_CHECK(info.end - info.begin == need, where, " is ", dtype, shape_str(info.shape), ", which needs ", need,
                  " bytes, but its data_offsets [", info.begin, ", ", info.end, "] span ", info.end - info.begin,
                  " (size does not match shape x dtype size)");
    return info;
}

// Parses and validates the whole header: every entry, `__metadata__`, and that the tensors, sorted by offset,
// tile the data buffer of `data_size` bytes exactly (no overlap, no hole, nothing past the end, no tail).
Header decode_header(const char* text, uint64_t n, uint64_t data_size, const std::string& source) {
    const nlohmann::json j = parse_json(text, n, source);
    Header h;
    for (const auto& [name, entry] : j.items()) {
        if (name == "__metadata__") {
            SSMTUNE_CHECK(entry.is_object(), source, ": __metadata__ must be a map of strings to strings, got ",
                          entry.dump());
            for (const auto& [k, v] : entry.items()) {
                SSMTUNE_CHECK(v.is_string(), source, ": __metadata__ value of \"", k, "\" is not a string: ", v.dump(),
                              " (metadata is a map of strings to strings)");
                h.metadata[k] = v.get<std::string>();
            }
            continue;
        }
        h.table[name] = read_entry(name, entry, source);
    }

    std::vector<const std::pair<const std::string, TensorInfo>*> order;
    for (const auto& kv : h.table) order.push_back(&kv);
    std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
        return std::make_pair(a->second.begin, a->second.end) < std::make_pair(b->second.begin, b->second.end);
    });
    uint64_t expected = 0;
    std::string previous;
    for (const auto* kv : order) {
        const std::string& name = kv->first;
        const TensorInfo& info = kv->second;
        SSMTUNE_CHECK(info.begin >= expected, source, ": tensors \"", previous, "\" and \"", name,
                      "\" overlap (\"", name, "\" starts at byte ", info.begin, ", \"", previous, "\" ends at ",
                      expected, ")");
        SSMTUNE_CHECK(info.begin == expected, source, ": hole in the data buffer: bytes ", expected, "..", info.begin,
                      " before tensor \"", name, "\" belong to no tensor");
        SSMTUNE_CHECK(info.end <= data_size, source, ": tensor \"", name, "\" runs past the end of the file (its data "
                      "ends at byte ", info.end, " of a ", data_size, "-byte data buffer; truncated file?)");
        expected = info.end;
        previous = name;
    }
    SSMTUNE_CHECK(expected == data_size, source, ": ", data_size - expected,
                  " trailing bytes after the last tensor (the data buffer is ", data_size,
                  " bytes, the header describes ", expected, ")");
    return h;
}

// ---- writing ----

// Tensors in the reference writer's order and the padded header that describes them.
struct Prepared {
    std::string header;                                  // JSON, space-padded to a multiple of 8
    std::vector<std::pair<std::string, Tensor>> order;   // data order
    uint64_t data_bytes = 0;
};

uint64_t tensor_bytes(const Tensor& t) { return uint64_t(t.numel()) * dtype_size(t.dtype()); }

Prepared prepare(const TensorMap& tensors, const Metadata& metadata) {
    Prepared p;
    for (const auto& [name, t] : tensors) {
        SSMTUNE_CHECK(!name.empty(), "safetensors: a tensor has an empty name; fix: give every tensor a name");
        SSMTUNE_CHECK(name != "__metadata__", "safetensors: \"__metadata__\" is reserved and cannot name a tensor");
        SSMTUNE_CHECK(t.defined(), "safetensors: tensor \"", name, "\" is undefined");
        p.order.emplace_back(name, t);
    }
    std::sort(p.order.begin(), p.order.end(), [](const auto& a, const auto& b) {
        const int ra = format_rank(a.second.dtype()), rb = format_rank(b.second.dtype());
        return ra != rb ? ra > rb : a.first < b.first;
    });
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    if (!metadata.count("format")) meta["format"] = "pt";
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
    for (const auto& [name, t] : p.order) {
        const uint64_t n = tensor_bytes(t);
        nlohmann::ordered_json entry = nlohmann::ordered_json::object();
        entry["dtype"] = dtype_name(t.dtype());
        entry["shape"] = t.shape();
        entry["data_offsets"] = {p.data_bytes, p.data_bytes + n};
        header[name] = std::move(entry);
        p.data_bytes += n;
    }
    try {
        p.header = header.dump();
    } catch (const nlohmann::json::exception& e) {
        SSMTUNE_FAIL("safetensors: a tensor name or metadata string is not valid UTF-8 (", e.what(), ")");
    }
    p.header.append((8 - p.header.size() % 8) % 8, ' ');
    return p;
}

// The tensor as contiguous host memory (itself when it already is).
Tensor host_contiguous(const Tensor& t) {
    if (t.device().is_cpu() && t.is_contiguous()) return t;
    return copy_to(t, t.dtype(), Device::cpu());
}

// fwrite that throws, naming the file and errno, when fewer bytes were written (disk full, I/O error).
void put(FILE* f, const void* data, size_t n, const std::string& tmp) {
    if (n == 0) return;
    errno = 0;
    const size_t wrote = std::fwrite(data, 1, n, f);
    SSMTUNE_CHECK(wrote == n, "writing ", tmp, " failed after ", wrote, " of ", n, " bytes: ",
                  errno ? std::strerror(errno) : "short write", " (disk full?)");
}

struct FileCloser {
    void operator()(FILE* f) const { if (f) std::fclose(f); }
};

}  // namespace

namespace {

// The header of the open file `fd` of `size` bytes, validated in full, and where its data buffer starts.
Header read_header(int fd, uint64_t size, const std::string& path, uint64_t* data_start) {
    uint8_t first8[8] = {};
    if (size >= 8) read_exact(fd, first8, 8, 0, path);
    const uint64_t n = header_length(first8, size, path);
    std::string text(size_t(n), '\0');
    read_exact(fd, text.data(), n, 8, path);
    *data_start = 8 + n;
    return decode_header(text.data(), n, size - 8 - n, path);
}

// One tensor per read: a pread of its bytes, into the destination itself where dtype and layout allow.
class SafetensorsFile : public TensorFile {
public:
    SafetensorsFile(const std::string& path, Metadata* metadata) : TensorFile(path), fd_(-1) {
        const uint64_t size = open_for_read(path, fd_);  // (before fd_.fd is read: argument order is unspecified)
        Header h = read_header(fd_.fd, size, path, &data_start_);
        for (const auto& [name, info] : h.table) entries_[name] = Entry{info.dtype, info.shape};
        table_ = std::move(h.table);
        if (metadata) *metadata = std::move(h.metadata);
    }

private:
    void read_to(const std::string& name, void* memory) const override {
        const TensorInfo& info = table_.at(name);
        if (info.end > info.begin) read_exact(fd_.fd, memory, info.end - info.begin, data_start_ + info.begin, path_);
    }
    Fd fd_;
    uint64_t data_start_ = 0;
    std::map<std::string, TensorInfo> table_;
};

}  // namespace

std::map<std::string, TensorInfo> read_safetensors_header(const std::string& path, Metadata* metadata) {
    Fd fd(-1);
    const uint64_t size = open_for_read(path, fd);
    uint64_t data_start = 0;
    Header h = read_header(fd.fd, size, path, &data_start);
    if (metadata) *metadata = std::move(h.metadata);
    return std::move(h.table);
}

std::unique_ptr<TensorFile> open_safetensors(const std::string& path, Metadata* metadata) {
    return std::make_unique<SafetensorsFile>(path, metadata);
}

TensorMap parse_safetensors(const uint8_t* data, size_t size, const std::string& source, Metadata* metadata) {
    const uint64_t n = header_length(data, size, source);
    Header h = decode_header(reinterpret_cast<const char*>(data + 8), n, size - 8 - n, source);
    const uint8_t* buffer = data + 8 + n;
    TensorMap out;
    for (const auto& [name, info] : h.table) {
        Tensor t = Tensor::empty(info.shape, info.dtype);
        if (info.end > info.begin) std::memcpy(t.raw_data(), buffer + info.begin, size_t(info.end - info.begin));
        out.emplace(name, std::move(t));
    }
    if (metadata) *metadata = std::move(h.metadata);
    return out;
}

TensorMap load_safetensors(const std::string& path, Metadata* metadata) {
    const FileBytes bytes(path);
    return parse_safetensors(bytes.data(), size_t(bytes.size()), path, metadata);
}

std::vector<uint8_t> safetensors_bytes(const TensorMap& tensors, const Metadata& metadata) {
    const Prepared p = prepare(tensors, metadata);
    std::vector<uint8_t> bytes(8 + p.header.size() + p.data_bytes);
    const uint64_t n = p.header.size();
    std::memcpy(bytes.data(), &n, 8);
    std::memcpy(bytes.data() + 8, p.header.data(), p.header.size());
    uint8_t* dst = bytes.data() + 8 + p.header.size();
    for (const auto& [name, t] : p.order) {
        const uint64_t nb = tensor_bytes(t);
        if (nb) std::memcpy(dst, host_contiguous(t).raw_data(), size_t(nb));
        dst += nb;
    }
    return bytes;
}

void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
    const Prepared p = prepare(tensors, metadata);
    write_file_atomically(path, [&](const std::string& tmp) {
        std::unique_ptr<FILE, FileCloser> f(std::fopen(tmp.c_str(), "wb"));
        SSMTUNE_CHECK(f, "cannot create ", tmp, ": ", std::strerror(errno));
        const uint64_t n = p.header.size();
        put(f.get(), &n, 8, tmp);
        put(f.get(), p.header.data(), p.header.size(), tmp);
        for (const auto& [name, t] : p.order) put(f.get(), host_contiguous(t).raw_data(), size_t(tensor_bytes(t)), tmp);
        errno = 0;
        const bool flushed = std::fflush(f.get()) == 0;
        const int flush_errno = errno;
        const bool closed = std::fclose(f.release()) == 0;
        SSMTUNE_CHECK(flushed && closed, "writing ", tmp, " failed at close: ",
                      std::strerror(flush_errno ? flush_errno : errno), " (disk full?)");
    });
}

void write_file_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& write) {
    static std::atomic<uint64_t> counter{0};
    const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
    try {
        write(tmp);
        {
            Fd fd(::open(tmp.c_str(), O_RDONLY | O_CLOEXEC));
            SSMTUNE_CHECK(fd.fd >= 0, "cannot reopen ", tmp, " to flush it: ", std::strerror(errno));
            SSMTUNE_CHECK(::fsync(fd.fd) == 0, "fsync of ", tmp, " failed: ", std::strerror(errno));
        }
        SSMTUNE_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename ", tmp, " to ", path, ": ",
                      std::strerror(errno));
    } catch (const std::exception& e) {
        std::remove(tmp.c_str());
        throw Error("cannot write " + path + ": " + e.what());
    } catch (...) {
        std::remove(tmp.c_str());
        throw;
    }
    // Make the rename itself durable (best effort: some filesystems refuse fsync on a directory).
    std::string dir = std::filesystem::path(path).parent_path().string();
    Fd dfd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dfd.fd >= 0) ::fsync(dfd.fd);
}

}  // namespace ssmtune
