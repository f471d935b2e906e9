// safetensors read/write (huggingface/safetensors format; notes: reference/style-and-ecosystem.md B.1).
//
// File: u64 little-endian header length N, N bytes of JSON (space-padded), then the data buffer. Each entry
// is {"dtype", "shape", "data_offsets": [begin, end]} relative to the data buffer. The reader rejects, with an
// Error naming the file and the problem: headers over 100 MB, a length past the file, JSON that is not an
// object or has duplicate names, unknown dtypes, offsets that overlap, leave holes, run past the file or
// disagree with shape × dtype size, and trailing bytes. The writer follows the reference writer (tensors
// sorted by alignment then name, header padded to a multiple of 8, `__metadata__` {"format": "pt"}) and
// writes atomically: a temporary file in the same folder, flushed, then renamed over the target.
// Not here: memory-mapped tensors (load_safetensors copies each tensor once out of the mapped file; open_safetensors
// reads each tensor when asked).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "engine/tensor_file.h"

namespace ssmtune {

using TensorMap = std::map<std::string, Tensor>;
using Metadata = std::map<std::string, std::string>;

struct TensorInfo {
    DType dtype = DType::F32;
    Shape shape;
    uint64_t begin = 0, end = 0;  // byte offsets in the data buffer
};

// Parses and validates the header only (cheap; for inspection and sharded loading).
std::map<std::string, TensorInfo> read_safetensors_header(const std::string& path, Metadata* metadata = nullptr);

// The file opened for reading one tensor at a time (engine/tensor_file.h): the header is read and validated in full
// here, as load_safetensors does; each read is one pread of that tensor's bytes — straight into the destination when
// read_into's target is a contiguous CPU tensor of the file's dtype — so the file's bytes are never all in memory.
std::unique_ptr<TensorFile> open_safetensors(const std::string& path, Metadata* metadata = nullptr);

// Loads every tensor (CPU, the file's dtype). `metadata`, when given, receives `__metadata__`.
TensorMap load_safetensors(const std::string& path, Metadata* metadata = nullptr);

// Writes tensors (any dtype; CUDA tensors are copied to the host) atomically. Always writes
// __metadata__ with "format": "pt" unless `metadata` sets "format" itself.
void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata = {});

// Serialises to / parses from memory (the same validation; `source` names the bytes in error messages).
std::vector<uint8_t> safetensors_bytes(const TensorMap& tensors, const Metadata& metadata = {});
TensorMap parse_safetensors(const uint8_t* data, size_t size, const std::string& source, Metadata* metadata = nullptr);

// Atomic file write used by every writer of the project: calls write(tmp_path), fsyncs, then renames
// tmp_path over `path`. On any failure the temporary is removed and `path` is untouched.
void write_file_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& write);

}  // namespace ssmtune
