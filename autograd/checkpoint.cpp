// Activation checkpointing (see checkpoint.h).
#include "autograd/checkpoint.h"

#include <unordered_set>

#include "autograd/node.h"

namespace ssmtune::autograd {

namespace {

// Does the graph below `root` (nodes recorded since `first`) reach a node recorded before `first` — a tensor from
// outside the block that needs a gradient through recorded ops?
bool reaches_outside(const Node* root, uint64_t first) {
    std::vector<const Node*> stack = {root};
    std::unordered_set<const Node*> seen = {root};
    while (!stack.empty()) {
        const Node* n = stack.back();
        stack.pop_back();
        for (const Edge& e : n->inputs) {
            if (!e.fn || seen.count(e.fn.get())) continue;
            if (e.fn->sequence < first) return true;
            seen.insert(e.fn.get());
            stack.push_back(e.fn.get());
        }
    }
    return false;
}

std::vector<uint64_t> offsets_of(const std::vector<Generator*>& generators) {
    std::vector<uint64_t> out;
    for (const Generator* g : generators) out.push_back(g->offset());
    return out;
}

void rewind(const std::vector<Generator*>& generators, const std::vector<uint64_t>& offsets) {
    for (size_t i = 0; i < generators.size(); ++i) generators[i]->set_state(generators[i]->seed(), offsets[i]);
}

}  // namespace

Tensor checkpoint(const std::function<Tensor(const Tensor&)>& block, const Tensor& x,
                  const std::vector<Generator*>& generators) {
    if (!grad_enabled()) return block(x);
    const std::vector<uint64_t> before = offsets_of(generators);
    // First pass with recording on, on a fresh leaf standing for x: it tells whether the output needs a gradient at
    // all (frozen layers under PEFT need none) and whether the block reads a recorded tensor from outside; then its
    // graph is dropped, and with it the block's intermediate tensors.
    const uint64_t first = next_sequence();
    Tensor stand_in = x.detach();
    if (x.requires_grad()) stand_in.set_requires_grad(true);
    Tensor y = block(stand_in);
    if (!y.requires_grad()) return y;
    if (reaches_outside(y.grad_fn().get(), first)) {  // not checkpointable: run it plainly, graph kept
        rewind(generators, before);
        return block(x);
    }
    const std::vector<uint64_t> after = offsets_of(generators);
    Tensor out = y.detach();
    y = Tensor();
    record_always("checkpoint", {x}, {out},
                  [block, saved = x.detach(), generators, before, after](const std::vector<Tensor>& grads_out,
                                                                         const std::vector<bool>& needs) {
                      const std::vector<uint64_t> now = offsets_of(generators);
                      rewind(generators, before);
                      Tensor leaf = saved.detach();
                      if (needs[0]) leaf.set_requires_grad(true);
                      Tensor again;
                      {
                          GradModeGuard recording(true);  // (the sweep that calls this runs with recording off)
                          again = block(leaf);
                      }
                      SSMTUNE_CHECK(offsets_of(generators) == after, "checkpoint: the recomputed block drew a different "
                                    "number of random values than its first pass; fix: a block must draw the same "
                                    "values given the same generator states");
                      rewind(generators, now);
                      if (again.requires_grad()) run_backward(again, grads_out[0]);
                      if (!needs[0]) return std::vector<Tensor>{Tensor()};
                      return std::vector<Tensor>{leaf.grad().defined()
                                                     ? leaf.grad()
                                                     : Tensor::zeros(saved.shape(), saved.dtype(), saved.device())};
                  });
    return out;
}

}  // namespace ssmtune::autograd
