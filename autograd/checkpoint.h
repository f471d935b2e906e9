// Activation checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"; what HF's
// `gradient_checkpointing` and PyTorch's reentrant torch.utils.checkpoint do per layer): run a block without keeping
// its intermediate tensors, keep only its input, and in the backward pass run it once more with recording on and
// backpropagate through that recomputed graph. Memory for a block's activations is then needed for one block at a
// time instead of all of them, for one extra forward pass of each block.
//
// The random generators the block draws from (dropout) are rewound for the recomputation, so it draws the masks of
// the first pass: values and gradients are bit-identical to the run without checkpointing (tested). Gradients of the
// parameters the block reads (leaves) accumulate into them during the recomputation's own backward sweep, in the
// order the plain sweep would add them.
// Not here: blocks with several inputs or outputs, and blocks that read a tensor from outside (other than x) that
// needs a gradient through recorded ops — such a block is detected on its first pass and simply runs without
// checkpointing (its graph kept), so the result is right either way.
#pragma once

#include <functional>
#include <vector>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace ssmtune::autograd {

// y = block(x), recorded as one node whose backward recomputes block(x) (see above). `generators`: every generator
// the block may draw from (rewound for the recomputation, then put back). Without grad mode: just block(x).
Tensor checkpoint(const std::function<Tensor(const Tensor&)>& block, const Tensor& x,
                  const std::vector<Generator*>& generators);

}  // namespace ssmtune::autograd
