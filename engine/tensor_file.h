// A weights file opened for reading one tensor at a time: the names, dtypes and shapes come from its header (a
// safetensors file) or its pickle (a PyTorch checkpoint) when it opens, every tensor's bytes only when that tensor is
// read. Loading a model through it keeps one copy of the weights in memory — the model's own — instead of the file's
// tensors and the model side by side (open_safetensors in safetensors.h, open_torch_checkpoint in torch_checkpoint.h).
// Not here: writing; files changed while open. (Both readers read tensors by pread, so a file cut short under them
// is an Error naming it; one rewritten in place reads as whatever bytes are there. ssmtune's own writers replace
// files by rename, which leaves an open file as it was.)
#pragma once

#include <map>
#include <string>

#include "engine/error.h"
#include "engine/tensor.h"
#include "engine/tensor_copy.h"

namespace ssmtune {

class TensorFile {
public:
    struct Entry {
        DType dtype = DType::F32;
        Shape shape;
    };
    virtual ~TensorFile() = default;
    // Every tensor the file holds: name → dtype and shape, names as saved.
    const std::map<std::string, Entry>& entries() const { return entries_; }
    const std::string& path() const { return path_; }
    // The tensor `name` as a new contiguous CPU tensor in the file's dtype.
    Tensor read(const std::string& name) const {
        const Entry& e = entry(name);
        Tensor t = Tensor::empty(e.shape, e.dtype);
        read_to(name, t.raw_data());
        return t;
    }
    // Reads `name` into `dst` (same shape; converted to dst's dtype, moved to its device): the bytes straight into
    // dst when it is a contiguous CPU tensor of the file's dtype, through one tensor otherwise.
    void read_into(const std::string& name, Tensor& dst) const {
        SSMTUNE_CHECK(entry(name).shape == dst.shape(), path_, ": tensor ", name, " is ", shape_str(entry(name).shape),
                      ", not the ", shape_str(dst.shape()), " it is read into");
        if (dst.device().is_cpu() && dst.is_contiguous() && dst.dtype() == entry(name).dtype) read_to(name, dst.raw_data());
        else copy_into(dst, read(name));
    }

protected:
    explicit TensorFile(std::string path) : path_(std::move(path)) {}
    const Entry& entry(const std::string& name) const {
        auto it = entries_.find(name);
        SSMTUNE_CHECK(it != entries_.end(), path_, " holds no tensor named ", name);
        return it->second;
    }
    // The tensor's elements, in the file's dtype, row-major into `memory` (room for all of them).
    virtual void read_to(const std::string& name, void* memory) const = 0;
    std::string path_;
    std::map<std::string, Entry> entries_;
};

}  // namespace ssmtune
