// The autograd graph: nodes recorded by ops during the forward pass, and the reverse sweep.
//
// Define-by-run: an op calls `record()` after computing its outputs. A node is recorded only when grad mode
// is on and some input requires grad. Its backward closure receives the gradients of its outputs and a mask
// `needs` saying which inputs want a gradient; it returns one gradient per input (undefined where not needed),
// so a frozen weight costs no weight-gradient work. The sweep (`run_backward`) visits nodes in reverse creation
// order, which is a valid reverse topological order because a node's inputs always exist before it.
// Not here: higher-order gradients (backward runs with grad mode off), in-place ops on graph tensors.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace ssmtune::autograd {

// grads_out[k] is the gradient of output k (never undefined: missing ones are zero-filled);
// needs[i] says whether input i wants a gradient. Returns one Tensor per input.
using BackwardFn =
    std::function<std::vector<Tensor>(const std::vector<Tensor>& grads_out, const std::vector<bool>& needs)>;

struct Edge {
    std::shared_ptr<Node> fn;          // producer node of the input, or null for a leaf
    int output_nr = 0;                 // which output of fn
    std::shared_ptr<TensorImpl> leaf;  // the leaf tensor to accumulate into (when fn is null)
    bool needs_grad = false;
    Shape shape;                       // the input's shape: backward must return a gradient of this shape
};

struct Node {
    std::string name;                  // op name, for error messages and graph dumps
    std::vector<Edge> inputs;
    std::vector<Shape> output_shapes;  // to zero-fill gradients of unused outputs
    std::vector<DType> output_dtypes;
    std::vector<Device> output_devices;
    BackwardFn backward;
    uint64_t sequence = 0;             // creation order
};

// Is gradient recording on for this thread? (on by default)
bool grad_enabled();
void set_grad_enabled(bool on);

// Sets recording on or off for its lifetime, then puts back what was there.
class GradModeGuard {
public:
    explicit GradModeGuard(bool on) : previous_(grad_enabled()) { set_grad_enabled(on); }
    ~GradModeGuard() { set_grad_enabled(previous_); }
    GradModeGuard(const GradModeGuard&) = delete;
    GradModeGuard& operator=(const GradModeGuard&) = delete;

private:
    bool previous_;
};

// Turns recording off for its lifetime (inference, optimizer updates, backward itself).
class NoGradGuard : public GradModeGuard {
public:
    NoGradGuard() : GradModeGuard(false) {}
};

// True when an op on these inputs should record a node.
bool needs_recording(const std::vector<Tensor>& inputs);

// Records `outputs` as produced by `name` from `inputs`, when needs_recording(inputs). The outputs get
// requires_grad and a grad_fn. The closure must not capture the outputs themselves (that would make a
// reference cycle): capture `out.detach()` when backward needs an output's values.
void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn);
// As record(), but also when no input requires grad: for a node whose backward reaches leaves by other means
// (activation checkpointing recomputes its block and sweeps that graph itself).
void record_always(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                   BackwardFn fn);
// The sequence number the next recorded node gets: every node recorded from now on has one at least this large.
uint64_t next_sequence();

// Reverse sweep from `root` (see Tensor::backward). Leaf gradients accumulate with +=.
void run_backward(const Tensor& root, const Tensor& gradient);

}  // namespace ssmtune::autograd
