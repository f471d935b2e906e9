// Grad mode, node recording and the reverse sweep (see node.h).
#include <algorithm>
#include <atomic>
#include <unordered_map>

#include "autograd/node.h"
#include "ops/ops.h"

namespace ssmtune::autograd {

namespace {
thread_local bool t_grad_enabled = true;
std::atomic<uint64_t> g_sequence{0};
}  // namespace

bool grad_enabled() { return t_grad_enabled; }
void set_grad_enabled(bool on) { t_grad_enabled = on; }

bool needs_recording(const std::vector<Tensor>& inputs) {
    if (!t_grad_enabled) return false;
    for (const Tensor& t : inputs)
        if (t.defined() && t.requires_grad()) return true;
    return false;
}

uint64_t next_sequence() { return g_sequence.load(); }

void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn) {
    if (needs_recording(inputs)) record_always(name, inputs, outputs, std::move(fn));
}

void record_always(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                   BackwardFn fn) {
    auto node = std::make_shared<Node>();
    node->name = name;
    node->backward = std::move(fn);
    node->sequence = g_sequence.fetch_add(1);
    for (const Tensor& t : inputs) {
        Edge e;
        if (t.defined()) e.shape = t.shape();
        if (t.defined() && t.requires_grad()) {
            e.needs_grad = true;
            if (t.grad_fn()) {
                e.fn = t.grad_fn();
                e.output_nr = t.impl().output_nr;
            } else {
                e.leaf = t.impl_ptr();
            }
        }
        node->inputs.push_back(std::move(e));
    }
    for (size_t k = 0; k < outputs.size(); ++k) {
        const Tensor& out = outputs[k];
        node->output_shapes.push_back(out.shape());
        node->output_dtypes.push_back(out.dtype());
        node->output_devices.push_back(out.device());
        out.impl().requires_grad = true;
        out.impl().grad_fn = node;
        out.impl().output_nr = int(k);
    }
}

namespace {
// dst (a leaf's or node's buffer) += g. The first gradient is cloned so later in-place sums never write into
// a tensor someone else holds.
void accumulate(std::shared_ptr<TensorImpl>& dst, const Tensor& g) {
    if (!dst) {
        dst = g.clone().impl_ptr();
        return;
    }
    Tensor d(dst);
    SSMTUNE_CHECK(d.shape() == g.shape(), "gradient shape ", shape_str(g.shape()), " does not match ",
                  shape_str(d.shape()));
    ops::add_(d, g);
}
}  // namespace

void run_backward(const Tensor& root, const Tensor& gradient) {
    SSMTUNE_CHECK(root.requires_grad(), "backward() on a tensor that does not require grad (", root.describe(),
                  "); fix: set_requires_grad(true) on a leaf it depends on, and make sure grad mode is on");
    Tensor seed = gradient;
    if (!seed.defined()) {
        SSMTUNE_CHECK(root.numel() == 1, "backward() without a gradient needs a one-element tensor, got ",
                      root.describe(), "; fix: pass the gradient of the output");
        seed = Tensor::ones(root.shape(), root.dtype(), root.device());
    }
    SSMTUNE_CHECK(seed.shape() == root.shape(), "backward gradient ", seed.describe(), " does not match ",
                  root.describe());
    NoGradGuard no_grad;
    if (!root.grad_fn()) {  // the root is a leaf
        accumulate(root.impl().grad, seed);
        return;
    }
    // Collect reachable nodes.
    std::vector<Node*> nodes;
    std::unordered_map<Node*, std::vector<std::shared_ptr<TensorImpl>>> buffers;
    std::vector<Node*> stack = {root.grad_fn().get()};
    buffers[root.grad_fn().get()].resize(root.grad_fn()->output_shapes.size());
    while (!stack.empty()) {
        Node* n = stack.back();
        stack.pop_back();
        nodes.push_back(n);
        for (const Edge& e : n->inputs) {
            if (e.fn && !buffers.count(e.fn.get())) {
                buffers[e.fn.get()].resize(e.fn->output_shapes.size());
                stack.push_back(e.fn.get());
            }
        }
    }
    std::sort(nodes.begin(), nodes.end(), [](Node* a, Node* b) { return a->sequence > b->sequence; });
    accumulate(buffers[root.grad_fn().get()][size_t(root.impl().output_nr)], seed);

    for (Node* n : nodes) {
        auto& buf = buffers[n];
        std::vector<Tensor> grads_out;
        bool any = false;
        for (size_t k = 0; k < buf.size(); ++k) {
            if (buf[k]) { grads_out.emplace_back(buf[k]); any = true; }
            else grads_out.push_back(Tensor::zeros(n->output_shapes[k], n->output_dtypes[k], n->output_devices[k]));
        }
        buf.clear();  // free memory as we go
        if (!any) continue;
        std::vector<bool> needs;
        for (const Edge& e : n->inputs) needs.push_back(e.needs_grad);
        std::vector<Tensor> grads_in = n->backward(grads_out, needs);
        SSMTUNE_CHECK(grads_in.size() == n->inputs.size(), "backward of ", n->name, " returned ", grads_in.size(),
                      " gradients for ", n->inputs.size(), " inputs");
        for (size_t i = 0; i < n->inputs.size(); ++i) {
            const Edge& e = n->inputs[i];
            if (!e.needs_grad) continue;
            SSMTUNE_CHECK(grads_in[i].defined() && grads_in[i].shape() == e.shape, "backward of ", n->name,
                          " gave ", grads_in[i].describe(), " for input ", i, " of shape ", shape_str(e.shape));
            if (e.fn) accumulate(buffers[e.fn.get()][size_t(e.output_nr)], grads_in[i]);
            else accumulate(e.leaf->grad, grads_in[i]);
        }
    }
}

}  // namespace ssmtune::autograd

namespace ssmtune {
void Tensor::backward(const Tensor& gradient) const { autograd::run_backward(*this, gradient); }
}  // namespace ssmtune
