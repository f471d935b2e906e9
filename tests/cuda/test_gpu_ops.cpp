// Every general op with a CUDA kernel, forward and backward, against the CPU op: odd sizes, broadcasting,
// non-contiguous views, F32 and F64 (through gpu_compare.h). Plus device copies, the allocator's statistics and
// the errors for mixed devices and ops without a GPU kernel.
#include "cuda/runtime.h"
#include "gpu_compare.h"
#include "ops/ssm.h"
#include "ops/structured_matrix.h"

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {
const DType kFloatTypes[] = {DType::F32, DType::F64};

Tensor input(const Shape& shape, uint64_t seed, DType dtype, bool grad = true) {
    Tensor t = Tensor::randn(shape, seed, dtype);
    if (grad) t.set_requires_grad(true);
    return t;
}
}  // namespace

TEST_CASE("gpu: unary ops forward and backward match the CPU") {
    using F = Tensor (*)(const Tensor&);
    const std::vector<std::pair<const char*, F>> plain = {
        {"neg", ops::neg}, {"exp", ops::exp}, {"abs", ops::abs}, {"sigmoid", ops::sigmoid}, {"tanh", ops::tanh},
        {"silu", ops::silu}, {"gelu", ops::gelu}, {"relu", ops::relu}, {"sin", ops::sin}, {"cos", ops::cos}};
    const std::vector<std::pair<const char*, F>> positive = {{"log", ops::log}, {"sqrt", ops::sqrt}, {"rsqrt", ops::rsqrt}};
    for (DType t : kFloatTypes) {
        const Tensor x = input({37, 53}, 1, t);
        for (const auto& [name, f] : plain)
            expect_op_matches_cpu(name, [f = f](const auto& in) { return f(in[0]); }, {x}, elementwise_tolerance(t),
                                  elementwise_tolerance(t));
        for (const auto& [name, f] : positive)  // on |x| + 0.1, and through a transposed (non-contiguous) view
            expect_op_matches_cpu(
                name, [f = f](const auto& in) { return f(ops::add_scalar(ops::abs(in[0]), 0.1).transpose(0, 1)); },
                {x}, elementwise_tolerance(t), elementwise_tolerance(t));
        expect_op_matches_cpu("pow", [](const auto& in) { return ops::pow(ops::add_scalar(ops::abs(in[0]), 0.1), 1.7); },
                              {x}, elementwise_tolerance(t), elementwise_tolerance(t));
        expect_op_matches_cpu("clamp", [](const auto& in) { return ops::clamp(in[0], -0.5, 0.8); }, {x},
                              elementwise_tolerance(t), elementwise_tolerance(t));
        expect_op_matches_cpu("softplus", [](const auto& in) { return ops::softplus(ops::mul_scalar(in[0], 12.0), 2.0, 20.0); },
                              {x}, elementwise_tolerance(t), elementwise_tolerance(t));
    }
}

TEST_CASE("gpu: binary ops broadcast like the CPU, forward and backward") {
    for (DType t : kFloatTypes) {
        const std::vector<std::pair<Shape, Shape>> shapes = {
            {{5, 1, 7}, {3, 1}}, {{4, 6}, {6}}, {{2, 3, 4}, {2, 3, 4}}, {{1}, {9, 2}}, {{}, {3, 5}}};
        for (const auto& [sa, sb] : shapes) {
            const Tensor a = input(sa, 2, t);
            Tensor bl = ops::add_scalar(ops::abs(input(sb, 3, t, false)), 0.5);  // away from 0 for div
            bl.set_requires_grad(true);
            for (const char* name : {"add", "sub", "mul", "div"}) {
                const std::string n = std::string(name) + " " + shape_str(sa) + " " + shape_str(sb);
                expect_op_matches_cpu(n, [name = std::string(name)](const auto& in) {
                    if (name == "add") return ops::add(in[0], in[1]);
                    if (name == "sub") return ops::sub(in[0], in[1]);
                    if (name == "mul") return ops::mul(in[0], in[1]);
                    return ops::div(in[0], in[1]);
                }, {a, bl}, elementwise_tolerance(t), summation_tolerance(t));
            }
        }
        // A non-contiguous operand and the scalar forms.
        const Tensor m = input({6, 10}, 4, t);
        expect_op_matches_cpu("mul of a transposed view", [](const auto& in) {
            return ops::mul(in[0].transpose(0, 1), ops::add_scalar(in[0].transpose(0, 1), 3.0));
        }, {m}, elementwise_tolerance(t), summation_tolerance(t));
    }
}

TEST_CASE("gpu: in-place accumulation add_ broadcasts src into a strided dst") {
    Tensor dst_cpu = Tensor::randn({4, 6}, 5), src = Tensor::randn({6}, 6);
    Tensor dst_gpu = dst_cpu.to(Device::cuda());
    Tensor view_cpu = dst_cpu.transpose(0, 1), view_gpu = dst_gpu.transpose(0, 1);
    const Tensor src_t = Tensor::randn({6, 1}, 7);
    ops::add_(view_cpu, src_t);
    ops::add_(view_gpu, src_t.to(Device::cuda()));
    expect_gpu_close(dst_gpu, dst_cpu, elementwise_tolerance(DType::F32), "add_ into a transposed view");
    ops::add_(dst_cpu, src);
    ops::add_(dst_gpu, src.to(Device::cuda()));
    expect_gpu_close(dst_gpu, dst_cpu, elementwise_tolerance(DType::F32), "add_ broadcast");
}

TEST_CASE("gpu: sum, mean, max and argmax over any dims") {
    for (DType t : kFloatTypes) {
        const Tensor x = input({6, 7, 300}, 8, t);
        const std::vector<std::vector<int64_t>> dim_sets = {{}, {0}, {1, 2}, {-1}, {0, 2}};
        for (const auto& dims : dim_sets)
            for (bool keep : {false, true}) {
                const std::string n = "dims " + shape_str(dims) + (keep ? " keepdim" : "");
                expect_op_matches_cpu("sum " + n, [&](const auto& in) { return ops::sum(in[0], dims, keep); }, {x},
                                      summation_tolerance(t), elementwise_tolerance(t));
                expect_op_matches_cpu("mean " + n, [&](const auto& in) { return ops::mean(in[0], dims, keep); }, {x},
                                      summation_tolerance(t), elementwise_tolerance(t));
            }
        // Ties and NaN: the first maximum, NaN first, as on the CPU.
        Tensor tied = Tensor::from_vector(std::vector<double>{1, 3, 3, 2, 5, 5, NAN, 5, 0, 0, 0, 0}, {3, 4}).to(t);
        for (int64_t d : {0, 1}) {
            const Tensor ig = ops::argmax(tied.to(Device::cuda()), d).to(Device::cpu());
            CHECK(ig.to_vector<int64_t>() == ops::argmax(tied, d).to_vector<int64_t>());
        }
        for (int64_t d : {0, 1, 2})
            expect_op_matches_cpu("max dim " + std::to_string(d), [d](const auto& in) { return ops::max(in[0], d, d == 1); },
                                  {x}, elementwise_tolerance(t), elementwise_tolerance(t));
    }
}

TEST_CASE("gpu: matmul and linear (cuBLAS, TF32 off) match the CPU, batched, broadcast and transposed") {
    for (DType t : kFloatTypes) {
        const GpuTolerance tol = summation_tolerance(t);
        const std::vector<std::pair<Shape, Shape>> shapes = {
            {{3, 5, 7}, {7, 4}}, {{2, 1, 5, 7}, {3, 7, 4}}, {{5, 7}, {7}}, {{7}, {7, 4}}, {{33, 65}, {65, 17}}};
        for (const auto& [sa, sb] : shapes)
            expect_op_matches_cpu("matmul " + shape_str(sa) + " @ " + shape_str(sb),
                                  [](const auto& in) { return ops::matmul(in[0], in[1]); },
                                  {input(sa, 9, t), input(sb, 10, t)}, tol, tol);
        expect_op_matches_cpu("matmul of transposed views",
                              [](const auto& in) { return ops::matmul(in[0].transpose(-1, -2), in[1].transpose(0, 1)); },
                              {input({4, 9, 6}, 11, t), input({5, 9}, 12, t)}, tol, tol);
        for (bool bias : {false, true})
            expect_op_matches_cpu(bias ? "linear with bias" : "linear", [bias](const auto& in) {
                return ops::linear(in[0], in[1], bias ? in[2] : Tensor());
            }, {input({2, 11, 13}, 13, t), input({19, 13}, 14, t), input({19}, 15, t)}, tol, tol);
    }
}

TEST_CASE("gpu: softmax, log_softmax and cross_entropy") {
    for (DType t : kFloatTypes) {
        const Tensor x = input({9, 1000}, 16, t);
        for (int64_t d : {0, 1}) {
            expect_op_matches_cpu("softmax dim " + std::to_string(d), [d](const auto& in) { return ops::softmax(in[0], d); },
                                  {x}, summation_tolerance(t), summation_tolerance(t));
            expect_op_matches_cpu("log_softmax dim " + std::to_string(d),
                                  [d](const auto& in) { return ops::log_softmax(in[0], d); }, {x}, summation_tolerance(t),
                                  summation_tolerance(t));
        }
        const Tensor target = Tensor::from_vector(std::vector<int64_t>{3, -100, 999, 0, 7, 7, -100, 12, 500}, {9});
        expect_op_matches_cpu("cross_entropy", [&](const auto& in) {
            return ops::cross_entropy(in[0], in[0].device().is_cuda() ? target.to(Device::cuda()) : target);
        }, {x}, summation_tolerance(t), summation_tolerance(t));
        // Out-of-range targets are the same clean error on both devices.
        const Tensor bad = Tensor::from_vector(std::vector<int64_t>{1000, 0, 0, 0, 0, 0, 0, 0, 0}, {9});
        CHECK_THROWS_AS(ops::cross_entropy(x.to(Device::cuda()), bad.to(Device::cuda())), Error);
    }
}

TEST_CASE("gpu: copies on the device: contiguous, permute, dtype conversion, clone, fill") {
    const Tensor x = Tensor::randn({3, 4, 5}, 17, DType::F64);
    const Tensor g = x.to(Device::cuda());
    CHECK(g.permute({2, 0, 1}).contiguous().to(Device::cpu()).to_vector<double>() ==
          x.permute({2, 0, 1}).contiguous().to_vector<double>());
    CHECK(g.narrow(1, 1, 2).to(DType::F32).to(Device::cpu()).to_vector<float>() ==
          x.narrow(1, 1, 2).to(DType::F32).to_vector<float>());
    CHECK(g.clone().to(Device::cpu()).to_vector<double>() == x.to_vector<double>());
    CHECK(Tensor::full({7}, 2.5, DType::F32, Device::cuda()).to(Device::cpu()).to_vector<float>() ==
          std::vector<float>(7, 2.5f));
    CHECK(Tensor::full({3}, -4, DType::I64, Device::cuda()).to(Device::cpu()).to_vector<int64_t>() ==
          std::vector<int64_t>(3, -4));
    CHECK(ops::sum(g).item() == doctest::Approx(ops::sum(x).item()).epsilon(1e-12));
}

TEST_CASE("gpu: caching allocator reuses freed blocks and reports its bytes") {
    cuda::synchronize();
    const auto before = cuda::memory_stats();
    {
        Tensor a = Tensor::empty({1 << 20}, DType::F32, Device::cuda());
        CHECK(cuda::memory_stats().in_use >= before.in_use + (4u << 20));
    }
    const auto freed = cuda::memory_stats();
    CHECK(freed.cached >= (4u << 20));
    Tensor b = Tensor::empty({1 << 20}, DType::F32, Device::cuda());
    CHECK(cuda::memory_stats().reuses > freed.reuses);
    cuda::empty_cache();
    CHECK(cuda::memory_stats().cached == 0);
}

TEST_CASE("gpu: mixed devices and inputs a GPU kernel cannot take are clean errors") {
    const Tensor c = Tensor::randn({3}, 18), g = c.to(Device::cuda());
    std::string msg;
    try {
        ops::add(c, g);
    } catch (const Error& e) {
        msg = e.what();
    }
    CHECK(msg.find("devices differ") != std::string::npos);
    msg.clear();
    try {  // the conv kernel takes widths up to kMaxConvWidth = 8
        const Tensor x = Tensor::randn({1, 2, 5}, 3).to(Device::cuda()), w = Tensor::randn({2, 9}, 4).to(Device::cuda());
        ops::causal_conv1d(x, w);
    } catch (const Error& e) {
        msg = e.what();
    }
    CHECK(msg.find("above the CUDA kernel's") != std::string::npos);
    CHECK(msg.find("fix: run this conv on the CPU") != std::string::npos);
}

TEST_CASE("gpu: embedding and index_select, with repeated indices in the backward") {
    for (DType t : kFloatTypes) {
        const Tensor ids = Tensor::from_vector(std::vector<int64_t>{3, 0, 3, 9, 3, 1, 0, 2}, {2, 4});
        expect_op_matches_cpu("embedding", [&](const auto& in) {
            return ops::embedding(in[0], in[0].device().is_cuda() ? ids.to(Device::cuda()) : ids);
        }, {input({10, 33}, 19, t)}, elementwise_tolerance(t), elementwise_tolerance(t));
        const Tensor idx = Tensor::from_vector(std::vector<int64_t>{4, 1, 4, 4, 0}, {5});
        for (int64_t d : {0, 1, 2})
            expect_op_matches_cpu("index_select dim " + std::to_string(d), [&, d](const auto& in) {
                return ops::index_select(in[0], d, in[0].device().is_cuda() ? idx.to(Device::cuda()) : idx);
            }, {input({5, 6, 7}, 20, t)}, elementwise_tolerance(t), elementwise_tolerance(t));
    }
    // Integer tables gather too (forward only).
    const Tensor table = Tensor::arange(20).reshape({4, 5});
    const Tensor idx = Tensor::from_vector(std::vector<int64_t>{2, 2, 0}, {3});
    CHECK(ops::index_select(table.to(Device::cuda()), 0, idx.to(Device::cuda())).to(Device::cpu()).to_vector<int64_t>() ==
          ops::index_select(table, 0, idx).to_vector<int64_t>());
}

TEST_CASE("gpu: concat, split, slice, where and masked_fill") {
    for (DType t : kFloatTypes) {
        expect_op_matches_cpu("concat dim 1", [](const auto& in) {
            return ops::concat({in[0], in[1].transpose(1, 2), in[0]}, 1);
        }, {input({3, 4, 5}, 21, t), input({3, 5, 2}, 22, t)}, elementwise_tolerance(t), elementwise_tolerance(t));
        expect_op_matches_cpu("split and slice", [](const auto& in) {
            const auto parts = ops::split(in[0], {2, 5}, 1);
            return ops::mul(ops::slice(parts[1], 1, 1, -1), ops::sum(parts[0], {1}, true));
        }, {input({4, 7}, 23, t)}, elementwise_tolerance(t), summation_tolerance(t));
        const Tensor cond = Tensor::from_vector(std::vector<int64_t>{1, 0, 0, 2, 0, -1}, {6});
        expect_op_matches_cpu("where", [&](const auto& in) {
            return ops::where(in[0].device().is_cuda() ? cond.to(Device::cuda()) : cond, in[0], in[1]);
        }, {input({5, 6}, 24, t), input({6}, 25, t)}, elementwise_tolerance(t), elementwise_tolerance(t));
        const Tensor fmask = Tensor::from_vector(std::vector<float>{0.0f, NAN, -0.0f, 3.0f}, {4, 1});
        expect_op_matches_cpu("masked_fill", [&](const auto& in) {
            return ops::masked_fill(in[0], in[0].device().is_cuda() ? fmask.to(Device::cuda()) : fmask, -7.5);
        }, {input({4, 3}, 26, t)}, elementwise_tolerance(t), elementwise_tolerance(t));
    }
}

TEST_CASE("gpu: rmsnorm and layernorm, forward and every gradient") {
    for (DType t : kFloatTypes) {
        for (int64_t D : {int64_t(7), int64_t(600)}) {
            const std::string n = " D=" + std::to_string(D);
            expect_op_matches_cpu("rmsnorm" + n, [](const auto& in) { return ops::rmsnorm(in[0], in[1], 1e-5); },
                                  {input({3, 5, D}, 27, t), input({D}, 28, t)}, summation_tolerance(t),
                                  summation_tolerance(t));
            expect_op_matches_cpu("layernorm" + n, [](const auto& in) { return ops::layernorm(in[0], in[1], in[2], 1e-5); },
                                  {input({3, 5, D}, 29, t), input({D}, 30, t), input({D}, 31, t)},
                                  summation_tolerance(t), summation_tolerance(t));
            expect_op_matches_cpu("layernorm without affine" + n,
                                  [](const auto& in) { return ops::layernorm(in[0], Tensor(), Tensor(), 1e-5); },
                                  {input({4, D}, 32, t)}, summation_tolerance(t), summation_tolerance(t));
        }
    }
}

TEST_CASE("gpu: dropout draws the CPU's mask") {
    for (DType t : kFloatTypes) {
        Generator gen_cpu(123), gen_gpu(123);
        Tensor x = input({37, 41}, 33, t), xg = gpu_leaf(x);
        const Tensor y = ops::dropout(x, 0.3, true, gen_cpu), yg = ops::dropout(xg, 0.3, true, gen_gpu);
        expect_gpu_close(yg, y, elementwise_tolerance(t), "dropout output");
        CHECK(gen_gpu.offset() == gen_cpu.offset());
        ops::sum(y).backward();
        ops::sum(yg).backward();
        expect_gpu_close(xg.grad(), x.grad(), elementwise_tolerance(t), "dropout gradient");
    }
}

TEST_CASE("gpu: causal conv1d (Mamba's short conv), forward and every gradient") {
    for (DType t : kFloatTypes)
        for (int64_t K : {int64_t(1), int64_t(4), int64_t(8)})
            for (int64_t L : {int64_t(3), int64_t(300)})
                expect_op_matches_cpu("causal_conv1d K=" + std::to_string(K) + " L=" + std::to_string(L),
                                      [](const auto& in) { return ops::causal_conv1d(in[0], in[1], in[2]); },
                                      {input({2, 5, L}, 34, t), input({5, K}, 35, t), input({5}, 36, t)},
                                      summation_tolerance(t), summation_tolerance(t));
    const Tensor wide = Tensor::randn({2, 9}, 37).to(Device::cuda());
    CHECK_THROWS_AS(ops::causal_conv1d(Tensor::randn({1, 2, 5}, 38).to(Device::cuda()), wide), Error);
}

TEST_CASE("gpu: SURM's structured products (x @ denseᵀ on the GPU) match the CPU's FFT products, with gradients") {
    for (DType t : kFloatTypes) {
        const GpuTolerance tol = t == DType::F64 ? GpuTolerance{1e-10, 1e-11} : GpuTolerance{1e-4, 1e-4};
        expect_op_matches_cpu("block_circulant_matmul", [](const auto& in) { return ops::block_circulant_matmul(in[0], in[1]); },
                              {input({2, 3, 5}, 40, t), input({4, 7, 15}, 41, t)}, tol, tol);
        expect_op_matches_cpu("skew_circulant_matmul", [](const auto& in) { return ops::skew_circulant_matmul(in[0], in[1]); },
                              {input({12}, 42, t), input({3, 12}, 43, t)}, tol, tol);
        expect_op_matches_cpu("symmetric_toeplitz_matmul",
                              [](const auto& in) { return ops::symmetric_toeplitz_matmul(in[0], in[1]); },
                              {input({9}, 44, t), input({2, 5, 9}, 45, t)}, tol, tol);
        expect_op_matches_cpu("kronecker_matmul", [](const auto& in) { return ops::kronecker_matmul(in[0], in[1], in[2]); },
                              {input({3, 2}, 46, t), input({4, 5}, 47, t), input({6, 10}, 48, t)}, tol, tol);
        expect_op_matches_cpu("ldr_matmul", [](const auto& in) { return ops::ldr_matmul(in[0], in[1], in[2]); },
                              {input({2, 8}, 49, t), input({2, 8}, 50, t), input({3, 8}, 51, t)}, tol, tol);
    }
}
