// Shared test helpers: tensor comparison with a report of the worst element, gradient-check assertions,
// and a scratch directory. Every test file includes this.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>  // getpid: scratch directories are per process

#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "engine/tensor.h"
#include "ops/ops.h"

namespace ssmtune::testing {

// False in a build whose tests run under an emulator that cannot run a second thread (a cross build under qemu-user
// defines SSMTUNE_TEST_NO_THREADS; see tests/CMakeLists.txt). The tests that compare 1 and 2 threads, or start a
// thread, say so and skip that part there.
inline bool threads_can_run() {
#ifdef SSMTUNE_TEST_NO_THREADS
    MESSAGE("skipped in this build: its tests run under an emulator that cannot start threads");
    return false;
#else
    return true;
#endif
}

// Result of comparing two tensors elementwise with |a − e| ≤ atol + rtol·|e|.
struct CloseReport {
    bool ok = true;
    int64_t worst = -1;
    double worst_actual = 0, worst_expected = 0, max_abs = 0;
    std::string message;
};

inline CloseReport compare(const Tensor& actual, const Tensor& expected, double rtol, double atol) {
    CloseReport r;
    std::ostringstream os;
    if (actual.shape() != expected.shape()) {
        r.ok = false;
        os << "shape " << shape_str(actual.shape()) << " vs expected " << shape_str(expected.shape());
        r.message = os.str();
        return r;
    }
    const std::vector<double> a = actual.detach().to_vector<double>(), e = expected.detach().to_vector<double>();
    double worst_score = -1;
    for (size_t i = 0; i < a.size(); ++i) {
        const double diff = std::fabs(a[i] - e[i]);
        const bool nan_match = std::isnan(a[i]) && std::isnan(e[i]);
        const double score = nan_match ? 0.0 : diff / (atol + rtol * std::fabs(e[i]));
        if (!(score <= 1.0)) r.ok = false;
        if (!(score <= worst_score) ) { worst_score = score; r.worst = int64_t(i); }
        if (diff > r.max_abs) r.max_abs = diff;
    }
    if (r.worst >= 0) { r.worst_actual = a[size_t(r.worst)]; r.worst_expected = e[size_t(r.worst)]; }
    os.precision(10);
    os << "max abs diff " << r.max_abs << "; worst element " << r.worst << ": actual " << r.worst_actual
       << " expected " << r.worst_expected << " (rtol " << rtol << ", atol " << atol << ")";
    r.message = os.str();
    return r;
}

// CHECKs that `actual` matches `expected`; on failure prints the name and the worst element.
inline void expect_close(const Tensor& actual, const Tensor& expected, double rtol, double atol,
                         const std::string& name = "tensor") {
    const CloseReport r = compare(actual, expected, rtol, atol);
    INFO(name << ": " << r.message);
    CHECK(r.ok);
}

// CHECKs that f's gradients match central differences (inputs: F64, requires_grad on those to check).
inline void expect_gradcheck(const autograd::TensorFn& f, const std::vector<Tensor>& inputs,
                             autograd::GradcheckOptions options = {}) {
    const autograd::GradcheckReport report = autograd::gradcheck(f, inputs, options);
    INFO("gradcheck:\n" << report.summary());
    CHECK(report.ok);
}

// The message of the ssmtune::Error that fn throws ("" when it throws none).
template <class Fn>
std::string error_of(Fn&& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// F64 tensor of the given shape with seeded normal values, requiring grad.
inline Tensor rand_input(const Shape& shape, uint64_t seed, bool requires_grad = true, DType dtype = DType::F64) {
    Tensor t = Tensor::randn(shape, seed, dtype);
    if (requires_grad) t.set_requires_grad(true);
    return t;
}

// A tensor's bytes in row-major order (a contiguous copy's storage).
inline std::vector<uint8_t> raw_bytes(const Tensor& t) {
    const Tensor c = t.contiguous();
    const auto* p = static_cast<const uint8_t*>(c.raw_data());
    return std::vector<uint8_t>(p, p + size_t(c.numel()) * dtype_size(c.dtype()));
}

// `got` holds the same names as `want`, each contiguous with the same dtype, shape and bytes (a file read back, two
// loads of one model, a converted model and its source).
inline void expect_same_tensors(const std::map<std::string, Tensor>& got, const std::map<std::string, Tensor>& want) {
    REQUIRE(got.size() == want.size());
    for (const auto& entry : want) {
        // Not a structured binding: INFO captures `name` in a lambda, which clang before 16 rejects for bindings.
        const std::string& name = entry.first;
        const Tensor& t = entry.second;
        INFO("tensor " << name);
        REQUIRE(got.count(name) == 1);
        const Tensor& g = got.at(name);
        CHECK(g.dtype() == t.dtype());
        CHECK(g.shape() == t.shape());
        CHECK(g.is_contiguous());
        CHECK(raw_bytes(g) == raw_bytes(t));
    }
}

// The whole content of a file as bytes ("" when it cannot be opened).
inline std::string file_bytes(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A fresh empty directory under the build tree for files a test writes. ctest runs test cases as
// parallel processes and two cases may share a name (the PEFT battery), so the process id is part of
// the path: no two running processes ever share a scratch directory.
inline std::filesystem::path scratch_dir(const std::string& name) {
    std::filesystem::path p =
        std::filesystem::path(SSMTUNE_TEST_TMP) / (name + "_pid" + std::to_string(static_cast<long>(::getpid())));
    std::filesystem::remove_all(p);
    std::filesystem::create_directories(p);
    return p;
}

}  // namespace ssmtune::testing
