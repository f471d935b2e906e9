// gradcheck: compare autograd's gradients with central finite differences, in float64.
//
// For f(inputs) -> out, it builds the scalar s = Σ out ⊙ W with a fixed random W (so every output element
// matters), takes ∂s/∂x for each input that requires grad by backward(), and compares element by element with
// (s(x+ε) − s(x−ε)) / 2ε. An element passes when |analytic − numeric| ≤ atol + rtol·|numeric|. The report
// names the worst element of each input. Used by the tests of every op, by `ssmtune gradcheck`, and by students.
// Not here: second derivatives; float32 checks (run them in F64: float32 differences are too noisy).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace ssmtune::autograd {

struct GradcheckOptions {
    double eps = 1e-6;
    double atol = 1e-6;
    double rtol = 1e-5;
    int64_t max_checked_per_input = 0;  // 0 = every element; else a seeded sample of this many
    uint64_t seed = 1234;
};

struct GradcheckInputReport {
    int index = 0;                // position in `inputs`
    int64_t checked = 0;          // elements compared
    double max_abs_error = 0;     // worst |analytic − numeric|
    double max_rel_error = 0;     // worst |analytic − numeric| / |numeric| among elements off by more than atol
    int64_t worst_element = -1;   // row-major index of the worst element (by the pass criterion)
    double worst_analytic = 0, worst_numeric = 0;
    bool ok = true;
};

struct GradcheckReport {
    bool ok = true;
    std::vector<GradcheckInputReport> inputs;
    std::string summary() const;  // one line per input
};

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Inputs must be F64 CPU tensors; those with requires_grad are checked. Leaves' .grad are reset.
GradcheckReport gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

}  // namespace ssmtune::autograd
