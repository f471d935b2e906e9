// Module: the base of every model part — named parameters with HF-style dotted names, child modules,
// train/eval mode, parameter counts, and strict state-dict loading.
//
// Parameters are Tensor handles owned by the module that registered them; `named_parameters()` walks the tree
// in registration order and yields "child.grandchild.param" names, exactly the keys of the checkpoint files.
// Loading copies values into the existing tensors (so handles held by optimizers and adapters stay valid)
// and reports every missing name, unexpected name and shape mismatch in one Error.
// PEFT hook: a ParameterDelta attached to a parameter makes the module compute with `base + delta()` (the base
// tensor is never written); forward code reads parameters through `effective()`.
// Not here: devices, forward/backward hooks of the PyTorch kind (PEFT uses the explicit hook points).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/rng.h"
#include "engine/safetensors.h"
#include "engine/tensor.h"

namespace ssmtune::models {

class Module;

// A trainable change to one parameter: the owning module computes with base + delta() (same shape as base).
class ParameterDelta;

class Module {
public:
    virtual ~Module() = default;
    Module() = default;
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;

    // Every parameter below this module, "a.b.c" names, registration order.
    std::vector<std::pair<std::string, Tensor>> named_parameters(const std::string& prefix = "") const;
    std::vector<Tensor> parameters() const;
    // Every module below (and including) this one, with its dotted name ("" for this one).
    std::vector<std::pair<std::string, Module*>> named_modules(const std::string& prefix = "");
    // The parameter or module with this dotted name; nullptr when absent.
    Tensor* find_parameter(const std::string& name);
    Module* find_module(const std::string& name);

    // Number of parameter elements (all, or only those with requires_grad).
    int64_t num_parameters(bool trainable_only = false) const;
    void set_requires_grad(bool on);  // on every parameter

    void train(bool on = true);
    void eval() { train(false); }
    bool is_training() const { return training_; }
    // Activation checkpointing per layer in training (HF's gradient_checkpointing_enable), in the models that have
    // layers (the Mamba/Longhorn wrapper and the S4D classifier): each layer keeps only its input and runs again in
    // the backward pass (autograd/checkpoint.h) — less memory, one more forward per layer, the same gradients to the
    // bit. Off by default; evaluation and generation never checkpoint.
    void set_gradient_checkpointing(bool on) { gradient_checkpointing_ = on; }
    bool gradient_checkpointing() const { return gradient_checkpointing_; }

    // name -> tensor of every parameter.
    TensorMap state_dict() const;
    // Copies `tensors` into the parameters (dtype converted). With strict, any missing or unexpected name or
    // any shape mismatch is an Error listing all of them; `source` names the file in the message.
    void load_state_dict(const TensorMap& tensors, bool strict = true, const std::string& source = "state dict");
    // The same from a source that reads each tensor when asked (a weights file, engine/tensor_file.h): `shapes` names
    // every tensor it holds and is checked as above before anything is read; then read(name, dst) fills each
    // parameter `dst` (detached) in turn. An Error from read stops there, with the parameters before it loaded.
    void load_state_dict(const std::map<std::string, Shape>& shapes,
                         const std::function<void(const std::string& name, Tensor& dst)>& read, bool strict = true,
                         const std::string& source = "state dict");
    // Converts every parameter to `dtype` in place of the old tensors (F32 <-> F64 for gradient checks).
    void to(DType dtype);
    // Moves every parameter to `device` in place (every handle to a parameter follows; requires_grad kept,
    // gradients dropped; nothing moves when one copy fails). Ops then run there; move the inputs too (e.g. token
    // ids with .to(device)). A PEFT adapter's own tensors move with peft::Adapter::to.
    void to(Device device);

    virtual std::string type_name() const { return "Module"; }
    // The generator of this module's own random draws in training (a PEFT layer's dropout), or nullptr when it
    // draws none. A training run checkpoints the state of every one below the model (training_generators), so a
    // resumed run draws the masks the uninterrupted run would have drawn.
    virtual Generator* training_generator() { return nullptr; }

    // PEFT: attach `delta` to the parameter `param` of this module (registered as child `child_name`, so its
    // tensors appear in named_parameters()); detach removes it. One delta per parameter.
    void attach_parameter_delta(const std::string& param, const std::string& child_name,
                                std::shared_ptr<ParameterDelta> delta);
    void detach_parameter_delta(const std::string& param);
    ParameterDelta* parameter_delta(const std::string& param);
    // The value the forward pass uses: the parameter plus its delta when one is attached.
    Tensor effective(const std::string& param);
    // Removes a child module (used by PEFT to detach its own modules).
    void remove_child(const Module* child);
    // Re-points a registered parameter at a new tensor (used by to(dtype) and by PEFT merge).
    void replace_parameter(const std::string& name, Tensor value);

protected:
    Tensor effective(size_t index);
    Tensor& register_parameter(const std::string& name, Tensor value, bool requires_grad = true);
    template <class M>
    std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
        children_.emplace_back(name, module);
        return module;
    }
    std::vector<std::pair<std::string, Tensor>> params_;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
    bool training_ = true;
    bool gradient_checkpointing_ = false;
    std::vector<std::pair<std::string, std::shared_ptr<ParameterDelta>>> param_deltas_;  // param name -> delta
};

// training_generator() of every module below (and including) `m` that has one, in named_modules() order.
std::vector<Generator*> training_generators(Module& m);

class ParameterDelta : public Module {
public:
    virtual Tensor delta() = 0;
};

// A module that only groups children under a name ("backbone", "layers", "layers.0", ...).
class ModuleGroup : public Module {
public:
    explicit ModuleGroup(std::string name) : name_(std::move(name)) {}
    template <class M>
    std::shared_ptr<M> add(const std::string& child, std::shared_ptr<M> m) { return register_module(child, m); }
    std::string type_name() const override { return name_; }

private:
    std::string name_;
};

}  // namespace ssmtune::models
