// PyTorch checkpoints (pytorch_model.bin, adapter_model.bin): the zip format torch.save has written since PyTorch
// 1.6 — a folder holding data.pkl (the pickled state_dict), data/<key> (each storage's raw little-endian bytes) and,
// in newer files, byteorder — read without Python. data.pkl is run by a restricted unpickler that knows the opcodes
// of pickle protocols 2–5 that a state_dict uses and calls exactly the functions a saved tensor needs
// (collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_tensor / _rebuild_parameter[_with_state],
// torch._tensor._rebuild_from_type_v2); anything else a pickle asks to call is refused by name. Unlike
// torch.load(weights_only=False), reading a hostile file therefore runs no code.
// Every tensor comes out contiguous in its stored dtype (views — a transposed weight, a storage offset, tied weights
// sharing one storage — are copied out, each checked to lie inside its storage).
// Not here: writing (ssmtune writes safetensors), the legacy pre-1.6 format (refused with the fix), TorchScript
// archives, complex / quantized / fp8 storages, big-endian files, checkpoints that are not a flat dict of tensors.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "engine/safetensors.h"
#include "engine/tensor_file.h"

namespace ssmtune {

// Every tensor of the checkpoint at `path` (CPU, the file's dtype), names as saved.
TensorMap load_torch_checkpoint(const std::string& path);
// The same from memory; `source` names the bytes in errors.
TensorMap parse_torch_checkpoint(const uint8_t* data, uint64_t size, const std::string& source);
// The checkpoint opened for reading one tensor at a time (engine/tensor_file.h): data.pkl is run and every storage
// it names checked against the archive here (the file is mapped only for that); storages are read by pread and
// CRC-checked when read — a tensor that is its whole storage, as a saved parameter is, straight into the destination;
// a view's storage kept only until the last tensor on it has been read.
std::unique_ptr<TensorFile> open_torch_checkpoint(const std::string& path);

}  // namespace ssmtune
