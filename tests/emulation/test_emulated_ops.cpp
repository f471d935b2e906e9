// The other hand-written CUDA kernels executed by the host emulation (cuda/emulation/host_simt.h): the block
// reductions (row sums against the host copy of their schedule, bit for bit; maxima with NaN and ties; squared-norm
// chunks), softmax / log-softmax / cross-entropy, RMSNorm and LayerNorm forward and backward, Mamba's depthwise
// causal conv1d, S4D's Vandermonde kernel (against its formula) and the long convolution's three maps, direct and
// through the emulated cuFFT, and the GEMM launcher's row-major mapping onto (emulated) cuBLAS, against the CPU
// ops; and every kernel with barriers gives the same bits when each block's threads take turns in the reverse order.
// Sizes stay small: each block is 256 host fibers here. The elementwise, gather and optimizer kernels (no
// barriers) run in the whole-backend emulation's GPU suite (SSMTUNE_CUDA_EMULATION=ON, README).
#include <cmath>
#include <functional>
#include <limits>

#include "ops/ops.h"
#include "ops/ssm.h"
#include "emulation_util.h"
#include "test_util.h"

#include "cuda/emulation/schedule.h"
#include "emulated_kernels.h"  // after the ssmtune headers (see there)

using namespace ssmtune;
using namespace ssmtune::testing;

namespace {

void expect_emulated_close(const Tensor& actual, const Tensor& expected, DType t, const std::string& what) {
    const double rtol = t == DType::F64 ? 1e-11 : 2e-5, atol = t == DType::F64 ? 1e-12 : 2e-5;
    expect_close(actual, expected, rtol, atol, what + " (emulated CUDA kernel vs CPU op)");
}

}  // namespace

TEST_CASE("emulated CUDA: row sums follow the block-reduction schedule bit for bit, maxima and squared norms") {
    for (int64_t count : {int64_t(37), int64_t(1000)}) {  // one thread per row below 64, else one block per row
        const int64_t rows = 3;
        const Tensor x = input({rows, count}, 5, DType::F32);
        Tensor out = Tensor::empty({rows}, DType::F32);
        cuda_emu::sum_rows(0, DType::F32, x.raw_data(), out.raw_data(), rows, count, 0.5);
        const std::vector<float> xs = x.to_vector<float>(), got = out.to_vector<float>();
        for (int64_t r = 0; r < rows; ++r) {
            const double sum = count < 64
                                   ? cuda_emu::lane_partial<double>(xs.data() + r * count, count, 0, 1)
                                   : cuda_emu::reduce_row_emulated<double>(xs.data() + r * count, count, 256);
            CHECK(got[size_t(r)] == float(sum * 0.5));
        }
    }
    // Maxima: NaN wins, ties go to the first index, as ops::max on the CPU.
    const int64_t rows = 4, count = 600;
    std::vector<double> v(size_t(rows * count));
    for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(double(i) * 0.37);
    v[size_t(1 * count + 5)] = 7.0, v[size_t(1 * count + 400)] = 7.0;  // a tie
    v[size_t(2 * count + 300)] = std::numeric_limits<double>::quiet_NaN();
    v[size_t(3 * count + 599)] = 9.0;
    const Tensor x = Tensor::from_vector(v, {rows, count});
    Tensor values = Tensor::empty({rows}, DType::F64), index = Tensor::empty({rows}, DType::I64);
    cuda_emu::max_rows(0, DType::F64, x.raw_data(), values.raw_data(), static_cast<int64_t*>(index.raw_data()), rows,
                       count);
    const std::vector<int64_t> idx = index.to_vector<int64_t>();
    CHECK(idx[1] == 5);
    CHECK(idx[2] == 300);
    CHECK(std::isnan(values.to_vector<double>()[2]));
    CHECK(idx[3] == 599);
    for (int64_t r = 0; r < rows; ++r) {
        int64_t best = 0;
        for (int64_t j = 1; j < count; ++j)
            if (cuda_emu::max_candidate_wins(v[size_t(r * count + j)], j, v[size_t(r * count + best)], best)) best = j;
        CHECK(idx[size_t(r)] == best);
    }
    // Squared norms per chunk (grad_norm's partials), against a host sum.
    const Tensor y = input({1234}, 9);
    std::vector<double> partials(3);
    cuda_emu::sum_squares_chunks(0, DType::F64, y.raw_data(), 1234, 500, partials.data());
    const std::vector<double> ys = y.to_vector<double>();
    for (int c = 0; c < 3; ++c) {
        double ref = 0;
        for (int64_t j = c * 500; j < std::min<int64_t>(1234, (c + 1) * 500); ++j) ref += ys[size_t(j)] * ys[size_t(j)];
        CHECK(partials[size_t(c)] == doctest::Approx(ref).epsilon(1e-13));
    }
}

TEST_CASE("emulated CUDA: softmax, log-softmax and the cross-entropy kernels match the CPU ops") {
    for (DType t : {DType::F64, DType::F32}) {
        const int64_t M = 3, V = 300;
        const Tensor logits = input({M, V}, 11, t, 3.0);
        for (bool log_space : {false, true}) {
            Tensor y = Tensor::empty({M, V}, t);
            cuda_emu::softmax_rows(0, t, logits.raw_data(), y.raw_data(), M, V, log_space);
            expect_emulated_close(y, log_space ? ops::log_softmax(logits, 1) : ops::softmax(logits, 1), t,
                                  log_space ? "log_softmax" : "softmax");
        }
        const Tensor target = Tensor::from_vector(std::vector<int64_t>{4, -100, 299}, {M});
        Tensor logp = Tensor::empty({M, V}, t), nll = Tensor::empty({M}, t), loss = Tensor::empty({1}, t);
        cuda_emu::softmax_rows(0, t, logits.raw_data(), logp.raw_data(), M, V, true);
        cuda_emu::nll_rows(0, t, logp.raw_data(), static_cast<const int64_t*>(target.raw_data()), nll.raw_data(), M, V,
                           -100);
        cuda_emu::sum_rows(0, t, nll.raw_data(), loss.raw_data(), 1, M, 0.5);  // mean over the 2 counted rows
        Tensor leaf = logits.detach().clone();
        leaf.set_requires_grad(true);
        const Tensor ref = ops::cross_entropy(leaf, target, -100);
        ref.backward();
        expect_emulated_close(loss.reshape({}), ref, t, "cross-entropy loss");
        Tensor d = Tensor::empty({M, V}, t);
        cuda_emu::cross_entropy_backward(0, t, logp.raw_data(), static_cast<const int64_t*>(target.raw_data()),
                                         d.raw_data(), M, V, -100, 0.5);
        expect_emulated_close(d, leaf.grad(), t, "cross-entropy gradient");
    }
}

TEST_CASE("emulated CUDA: RMSNorm and LayerNorm kernels match the CPU ops (forward, dx, dw, db)") {
    for (DType t : {DType::F64, DType::F32}) {
        const int64_t rows = 3, D = 300;
        const Tensor x = input({rows, D}, 21, t, 2.0, 0.5), w = input({D}, 22, t), b = input({D}, 23, t);
        const Tensor g = input({rows, D}, 24, t);
        {  // RMSNorm
            std::vector<Tensor> l = leaves_of({x, w});
            const Tensor ref = ops::rmsnorm(l[0], l[1], 1e-5);
            ops::sum(ops::mul(ref, g)).backward();
            Tensor out = Tensor::empty({rows, D}, t), rstd = Tensor::empty({rows}, DType::F64);
            Tensor dx = Tensor::empty({rows, D}, t), dw = Tensor::empty({D}, t);
            cuda_emu::rmsnorm_forward(0, t, x.raw_data(), w.raw_data(), out.raw_data(), rstd.data<double>(), rows, D, 1e-5);
            cuda_emu::rmsnorm_backward_dx(0, t, g.raw_data(), x.raw_data(), w.raw_data(), rstd.data<double>(),
                                          dx.raw_data(), rows, D);
            cuda_emu::norm_column_sums(0, t, 0, g.raw_data(), x.raw_data(), nullptr, rstd.data<double>(), dw.raw_data(),
                                       rows, D);
            expect_emulated_close(out, ref.detach(), t, "rmsnorm");
            expect_emulated_close(dx, l[0].grad(), t, "rmsnorm dx");
            expect_emulated_close(dw, l[1].grad(), t, "rmsnorm dw");
        }
        for (bool affine : {true, false}) {  // LayerNorm, with and without weight and bias
            std::vector<Tensor> l = leaves_of({x, affine ? w : Tensor(), affine ? b : Tensor()});
            const Tensor ref = ops::layernorm(l[0], l[1], l[2], 1e-5);
            ops::sum(ops::mul(ref, g)).backward();
            Tensor out = Tensor::empty({rows, D}, t), xhat = Tensor::empty({rows, D}, DType::F64);
            Tensor rstd = Tensor::empty({rows}, DType::F64), dx = Tensor::empty({rows, D}, t);
            cuda_emu::layernorm_forward(0, t, x.raw_data(), affine ? w.raw_data() : nullptr,
                                        affine ? b.raw_data() : nullptr, out.raw_data(), xhat.data<double>(),
                                        rstd.data<double>(), rows, D, 1e-5);
            cuda_emu::layernorm_backward_dx(0, t, g.raw_data(), affine ? w.raw_data() : nullptr, xhat.data<double>(),
                                            rstd.data<double>(), dx.raw_data(), rows, D);
            expect_emulated_close(out, ref.detach(), t, "layernorm");
            expect_emulated_close(dx, l[0].grad(), t, "layernorm dx");
            if (!affine) continue;
            Tensor dw = Tensor::empty({D}, t), db = Tensor::empty({D}, t);
            cuda_emu::norm_column_sums(0, t, 1, g.raw_data(), nullptr, xhat.data<double>(), nullptr, dw.raw_data(), rows, D);
            cuda_emu::norm_column_sums(0, t, 2, g.raw_data(), nullptr, nullptr, nullptr, db.raw_data(), rows, D);
            expect_emulated_close(dw, l[1].grad(), t, "layernorm dw");
            expect_emulated_close(db, l[2].grad(), t, "layernorm db");
        }
    }
}

TEST_CASE("emulated CUDA: Mamba's depthwise causal conv1d kernels match the CPU op") {
    for (DType t : {DType::F64, DType::F32})
        for (int64_t K : {int64_t(1), int64_t(4), int64_t(8)}) {
            const int64_t B = 2, C = 5, L = 37;
            const Tensor x = input({B, C, L}, 31, t), w = input({C, K}, 32, t), bias = input({C}, 33, t);
            const Tensor g = input({B, C, L}, 34, t);
            std::vector<Tensor> l = leaves_of({x, w, bias});
            const Tensor ref = ops::causal_conv1d(l[0], l[1], l[2]);
            ops::sum(ops::mul(ref, g)).backward();
            Tensor out = Tensor::empty({B, C, L}, t), dx = Tensor::empty({B, C, L}, t);
            Tensor dw = Tensor::empty({C, K}, t), db = Tensor::empty({C}, t);
            cuda_emu::causal_conv1d_forward(0, t, x.raw_data(), w.raw_data(), bias.raw_data(), out.raw_data(), B, C, L, K);
            cuda_emu::causal_conv1d_backward(0, t, g.raw_data(), x.raw_data(), w.raw_data(), dx.raw_data(), dw.raw_data(),
                                             db.raw_data(), B, C, L, K);
            const std::string name = "conv1d K=" + std::to_string(K);
            expect_emulated_close(out, ref.detach(), t, name);
            expect_emulated_close(dx, l[0].grad(), t, name + " dx");
            expect_emulated_close(dw, l[1].grad(), t, name + " dw");
            expect_emulated_close(db, l[2].grad(), t, name + " dbias");
        }
}

TEST_CASE("emulated CUDA: S4D's Vandermonde kernel and its backward follow their formulas") {
    const int64_t H = 2, M = 3, L = 300;
    std::vector<double> modes(size_t(H * M * 4));
    for (size_t i = 0; i < modes.size(); i += 4) {  // W, and λ with Re λ < 0
        modes[i] = std::cos(double(i)), modes[i + 1] = std::sin(0.5 * double(i));
        modes[i + 2] = -0.01 - 0.002 * double(i), modes[i + 3] = 0.3 * double(i);
    }
    const Tensor gK = input({H, L}, 41);
    Tensor K = Tensor::empty({H, L}, DType::F64);
    std::vector<double> sums(size_t(H * M * 4));
    cuda_emu::s4d_vandermonde(0, DType::F64, modes.data(), K.raw_data(), H, M, L);
    cuda_emu::s4d_vandermonde_backward(0, DType::F64, modes.data(), gK.raw_data(), sums.data(), H, M, L);
    const std::vector<double> k = K.to_vector<double>(), g = gK.to_vector<double>();
    for (int64_t h = 0; h < H; ++h) {
        for (int64_t l = 0; l < L; l += 37) {  // K = 2 Re Σ_n W_n e^{λ_n l}
            double ref = 0;
            for (int64_t n = 0; n < M; ++n) {
                const double* m = &modes[size_t((h * M + n) * 4)];
                const double mag = std::exp(m[2] * double(l)), ph = m[3] * double(l);
                ref += 2.0 * (m[0] * mag * std::cos(ph) - m[1] * mag * std::sin(ph));
            }
            CHECK(k[size_t(h * L + l)] == doctest::Approx(ref).epsilon(1e-12).scale(1.0));
        }
        for (int64_t n = 0; n < M; ++n) {  // (Σ_l gK conj(e^{λl}), Σ_l gK l conj(e^{λl}))
            const double* m = &modes[size_t((h * M + n) * 4)];
            double s0r = 0, s0i = 0, s1r = 0, s1i = 0;
            for (int64_t l = 0; l < L; ++l) {
                const double mag = std::exp(m[2] * double(l)), ph = m[3] * double(l), gv = g[size_t(h * L + l)];
                s0r += gv * mag * std::cos(ph), s0i -= gv * mag * std::sin(ph);
                s1r += gv * double(l) * mag * std::cos(ph), s1i -= gv * double(l) * mag * std::sin(ph);
            }
            const double* s = &sums[size_t((h * M + n) * 4)];
            CHECK(s[0] == doctest::Approx(s0r).epsilon(1e-10).scale(1.0));
            CHECK(s[1] == doctest::Approx(s0i).epsilon(1e-10).scale(1.0));
            CHECK(s[2] == doctest::Approx(s1r).epsilon(1e-10).scale(100.0));
            CHECK(s[3] == doctest::Approx(s1i).epsilon(1e-10).scale(100.0));
        }
    }
}

TEST_CASE("emulated CUDA: the long convolution's three maps (direct and through cuFFT) match the CPU op") {
    for (DType t : {DType::F64, DType::F32})
        for (int64_t Lk : {int64_t(37), int64_t(9)}) {
            const int64_t B = 2, H = 3, L = 37;
            const Tensor u = input({B, H, L}, 51, t), k = input({H, Lk}, 52, t), g = input({B, H, L}, 53, t);
            std::vector<Tensor> l = leaves_of({u, k});
            const Tensor ref = ops::causal_conv(l[0], l[1], ops::ConvAlgorithm::Direct);
            ops::sum(ops::mul(ref, g)).backward();
            for (bool fft : {false, true}) {
                Tensor y = Tensor::empty({B, H, L}, t), du = Tensor::empty({B, H, L}, t), dk = Tensor::empty({H, Lk}, t);
                cuda_emu::long_conv(0, t, 0, fft, u.raw_data(), k.raw_data(), y.raw_data(), B, H, L, Lk);
                cuda_emu::long_conv(0, t, 1, fft, g.raw_data(), k.raw_data(), du.raw_data(), B, H, L, Lk);
                cuda_emu::long_conv(0, t, 2, fft, g.raw_data(), u.raw_data(), dk.raw_data(), B, H, L, Lk);
                const std::string name = std::string(fft ? "FFT" : "direct") + " Lk=" + std::to_string(Lk);
                expect_emulated_close(y, ref.detach(), t, name + " y");
                expect_emulated_close(du, l[0].grad(), t, name + " du");
                expect_emulated_close(dk, l[1].grad(), t, name + " dK");
            }
        }
}

TEST_CASE("emulated CUDA: the GEMM launcher's row-major to cuBLAS mapping matches ops::matmul (both transposes)") {
    for (DType t : {DType::F64, DType::F32})
        for (bool ta : {false, true})
            for (bool tb : {false, true}) {
                const int64_t batch = 2, M = 5, N = 7, K = 3;
                const Tensor A = ta ? input({batch, K, M}, 61, t) : input({batch, M, K}, 61, t);
                const Tensor B = tb ? input({batch, N, K}, 62, t) : input({batch, K, N}, 62, t);
                const Tensor ref = ops::matmul(ta ? A.transpose(1, 2) : A, tb ? B.transpose(1, 2) : B);
                Tensor C = input({batch, M, N}, 63, t);
                cuda_emu::gemm(0, t, ta, tb, M, N, K, A.raw_data(), ta ? M : K, A.size(1) * A.size(2), B.raw_data(),
                               tb ? K : N, B.size(1) * B.size(2), C.raw_data(), M * N, batch, false);
                const std::string name = std::string("gemm") + (ta ? " Aᵀ" : "") + (tb ? " Bᵀ" : "");
                expect_emulated_close(C, ref, t, name);
                cuda_emu::gemm(0, t, ta, tb, M, N, K, A.raw_data(), ta ? M : K, A.size(1) * A.size(2), B.raw_data(),
                               tb ? K : N, B.size(1) * B.size(2), C.raw_data(), M * N, batch, true);
                expect_emulated_close(C, ops::mul_scalar(ref, 2.0), t, name + " accumulated");
            }
}

namespace {

// run() twice, each block's threads taking turns from thread 0 and from the last: the same bits, or a race.
void expect_order_independent(const std::string& name, const std::function<std::vector<double>()>& run) {
    const std::vector<double> forward = run();
    std::vector<double> reverse;
    {
        const ssmtune_simt::ScheduleScope scope(ssmtune_simt::Schedule::reverse);
        reverse = run();
    }
    CHECK_MESSAGE(forward == reverse, name, ": the result changes with the order the threads take turns in (a race)");
}

}  // namespace

TEST_CASE("emulated CUDA: kernels with barriers give the same bits whichever thread takes its turn first") {
    const DType t = DType::F64;
    const int64_t rows = 3, D = 700;
    const Tensor x = input({rows, D}, 71, t), w = input({D}, 72, t), g = input({rows, D}, 73, t);
    expect_order_independent("sum_rows", [&] {
        Tensor out = Tensor::empty({rows}, t);
        cuda_emu::sum_rows(0, t, x.raw_data(), out.raw_data(), rows, D, 1.0);
        return out.to_vector<double>();
    });
    expect_order_independent("max_rows", [&] {
        Tensor out = Tensor::empty({rows}, t), index = Tensor::empty({rows}, DType::I64);
        cuda_emu::max_rows(0, t, x.raw_data(), out.raw_data(), static_cast<int64_t*>(index.raw_data()), rows, D);
        std::vector<double> v = out.to_vector<double>();
        for (int64_t i : index.to_vector<int64_t>()) v.push_back(double(i));
        return v;
    });
    expect_order_independent("softmax_rows", [&] {
        Tensor y = Tensor::empty({rows, D}, t);
        cuda_emu::softmax_rows(0, t, x.raw_data(), y.raw_data(), rows, D, true);
        return y.to_vector<double>();
    });
    expect_order_independent("rmsnorm forward and dx", [&] {
        Tensor out = Tensor::empty({rows, D}, t), rstd = Tensor::empty({rows}, DType::F64), dx = Tensor::empty({rows, D}, t);
        cuda_emu::rmsnorm_forward(0, t, x.raw_data(), w.raw_data(), out.raw_data(), rstd.data<double>(), rows, D, 1e-5);
        cuda_emu::rmsnorm_backward_dx(0, t, g.raw_data(), x.raw_data(), w.raw_data(), rstd.data<double>(), dx.raw_data(),
                                      rows, D);
        std::vector<double> v = out.to_vector<double>(), d = dx.to_vector<double>();
        v.insert(v.end(), d.begin(), d.end());
        return v;
    });
    expect_order_independent("layernorm forward and dx", [&] {
        Tensor out = Tensor::empty({rows, D}, t), xhat = Tensor::empty({rows, D}, DType::F64);
        Tensor rstd = Tensor::empty({rows}, DType::F64), dx = Tensor::empty({rows, D}, t);
        cuda_emu::layernorm_forward(0, t, x.raw_data(), w.raw_data(), nullptr, out.raw_data(), xhat.data<double>(),
                                    rstd.data<double>(), rows, D, 1e-5);
        cuda_emu::layernorm_backward_dx(0, t, g.raw_data(), w.raw_data(), xhat.data<double>(), rstd.data<double>(),
                                        dx.raw_data(), rows, D);
        std::vector<double> v = out.to_vector<double>(), d = dx.to_vector<double>();
        v.insert(v.end(), d.begin(), d.end());
        return v;
    });
    expect_order_independent("squared-norm chunks", [&] {
        std::vector<double> partials(2);
        cuda_emu::sum_squares_chunks(0, t, x.raw_data(), rows * D, 1200, partials.data());
        return partials;
    });
    expect_order_independent("conv1d backward (dw, dbias by block sums)", [&] {
        const int64_t B = 2, C = 3, L = 300, K = 4;
        const Tensor cx = input({B, C, L}, 74, t), cw = input({C, K}, 75, t), cg = input({B, C, L}, 76, t);
        Tensor dx = Tensor::empty({B, C, L}, t), dw = Tensor::empty({C, K}, t), db = Tensor::empty({C}, t);
        cuda_emu::causal_conv1d_backward(0, t, cg.raw_data(), cx.raw_data(), cw.raw_data(), dx.raw_data(), dw.raw_data(),
                                         db.raw_data(), B, C, L, K);
        std::vector<double> v = dw.to_vector<double>(), b = db.to_vector<double>();
        v.insert(v.end(), b.begin(), b.end());
        return v;
    });
    expect_order_independent("S4D Vandermonde backward sums", [&] {
        const int64_t H = 2, M = 2, L = 500;
        std::vector<double> modes(size_t(H * M * 4), 0.1);
        for (size_t i = 2; i < modes.size(); i += 4) modes[i] = -0.01;
        const Tensor gK = input({H, L}, 77);
        std::vector<double> sums(size_t(H * M * 4));
        cuda_emu::s4d_vandermonde_backward(0, t, modes.data(), gK.raw_data(), sums.data(), H, M, L);
        return sums;
    });
}
