// Central-difference gradient check (see gradcheck.h).
#include "autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "autograd/node.h"
#include "engine/strided.h"

namespace ssmtune::autograd {

namespace {
// s = Σ out ⊙ w, computed in double without recording.
double project(const Tensor& out, const std::vector<double>& w) {
    const std::vector<double> v = out.detach().to_vector<double>();
    double s = 0;
    for (size_t i = 0; i < v.size(); ++i) s += v[i] * w[i];
    return s;
}
}  // namespace

std::string GradcheckReport::summary() const {
    std::ostringstream os;
    os.precision(3);
    for (const auto& r : inputs) {
        os << "input " << r.index << ": " << (r.ok ? "ok" : "FAILED") << ", " << r.checked
           << " elements, max abs err " << std::scientific << r.max_abs_error << ", max rel err " << r.max_rel_error;
        if (r.worst_element >= 0)
            os << ", worst element " << r.worst_element << " (analytic " << r.worst_analytic << ", numeric "
               << r.worst_numeric << ")";
        os << std::defaultfloat << "\n";
    }
    return os.str();
}

GradcheckReport gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& options) {
    for (size_t i = 0; i < inputs.size(); ++i) {
        if (!inputs[i].defined()) continue;
        SSMTUNE_CHECK(!inputs[i].requires_grad() || (inputs[i].dtype() == DType::F64 && inputs[i].device().is_cpu()),
                      "gradcheck: input ", i, " is ", inputs[i].describe(),
                      "; fix: run gradient checks on F64 CPU tensors (.to(DType::F64))");
    }
    for (const Tensor& t : inputs)
        if (t.defined() && t.requires_grad()) const_cast<Tensor&>(t).zero_grad();

    Tensor out = f(inputs);
    SSMTUNE_CHECK(out.defined() && out.dtype() == DType::F64, "gradcheck: f must return an F64 tensor, got ",
                  out.describe());
    Tensor w = Tensor::randn(out.shape(), options.seed, DType::F64);
    const std::vector<double> wv = w.to_vector<double>();
    GradcheckReport report;
    if (!out.requires_grad()) {
        SSMTUNE_FAIL("gradcheck: the output does not depend on any input that requires grad");
    }
    out.backward(w);

    for (size_t i = 0; i < inputs.size(); ++i) {
        const Tensor& x = inputs[i];
        if (!x.defined() || !x.requires_grad()) continue;
        GradcheckInputReport r;
        r.index = int(i);
        const Tensor g = x.grad();
        const std::vector<double> analytic =
            g.defined() ? g.to_vector<double>() : std::vector<double>(size_t(x.numel()), 0.0);
        // Which elements to check.
        std::vector<int64_t> elements(size_t(x.numel()));
        std::iota(elements.begin(), elements.end(), 0);
        if (options.max_checked_per_input > 0 && x.numel() > options.max_checked_per_input) {
            Generator gen(options.seed + i);
            std::vector<int64_t> picked;
            for (int64_t k = 0; k < options.max_checked_per_input; ++k)
                picked.push_back(int64_t(philox_uniform(gen.seed(), gen.advance(1)) * double(x.numel())));
            elements = picked;
        }
        double worst_score = -1;
        double* base = static_cast<double*>(x.storage()->data());
        NoGradGuard no_grad;
        for (int64_t e : elements) {
            double& v = base[strided_offset(x.shape(), x.strides(), x.offset(), e)];
            const double saved = v;
            v = saved + options.eps;
            const double sp = project(f(inputs), wv);
            v = saved - options.eps;
            const double sm = project(f(inputs), wv);
            v = saved;
            const double numeric = (sp - sm) / (2 * options.eps);
            const double a = analytic[size_t(e)];
            const double abs_err = std::fabs(a - numeric);
            const double rel_err = abs_err / std::max(std::fabs(numeric), 1e-12);
            const double score = abs_err / (options.atol + options.rtol * std::fabs(numeric));
            r.max_abs_error = std::max(r.max_abs_error, abs_err);
            r.max_rel_error = std::max(r.max_rel_error, std::min(rel_err, abs_err > options.atol ? rel_err : 0.0));
            if (score > worst_score) {
                worst_score = score;
                r.worst_element = e;
                r.worst_analytic = a;
                r.worst_numeric = numeric;
            }
            if (!(score <= 1.0)) r.ok = false;  // also catches NaN
            ++r.checked;
        }
        report.ok = report.ok && r.ok;
        report.inputs.push_back(r);
    }
    return report;
}

}  // namespace ssmtune::autograd
