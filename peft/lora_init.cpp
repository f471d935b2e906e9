// LoRA inits that read the base weight W [out, in] (reference/peft-methods.md §1; HF PEFT's LoraLayer.pissa_init,
// olora_init, orthogonal_init), all computed in float64 and rounded once to the model's dtype:
//
//   PiSSA (Meng et al. 2024):  W = U S Vᵀ;  A = diag(√(S_r / s)) V_rᵀ [r, in],  B = U_r diag(√(S_r / s)) [out, r],
//                              so s·B A = U_r S_r V_rᵀ, the best rank-r part of W; the base becomes W − s·B A.
//   pissa_niter_K:             the same from torch.svd_lowrank's randomized SVD with K power iterations (our random
//                              draws, not torch's; the residual is W − s·B A of the values drawn, so the adapted
//                              model still starts exactly at the base, as HF's).
//   OLoRA (Büyükakyüz 2024):   W = Q R (Householder, R's diagonal signed as LAPACK's geqrf signs it);
//                              A = R[:r] [r, in], B = Q[:, :r] [out, r] (no 1/s); the base becomes W − s·B A.
//   orthogonal:                X ~ N(0, 1) [r, r], Q = qr(X).Q; A = (N(0,1) [in, r/2] · Q[0::2])ᵀ / 10,
//                              B = N(0,1) [out, r/2] · Q[1::2] / 10, so B A = 0 (the rows of Q are orthonormal);
//                              the base is unchanged. r must be even.
//
// A singular vector's sign is arbitrary (LAPACK and Eigen may choose differently): B A, the residual and every
// output do not depend on it, the stored A and B rows may differ from HF's by a sign per rank component.
// Not here: LoftQ (needs a quantised base), EVA and CorDA (need activation statistics from data), refused by name.
#include "peft/lora_init.h"

#include <cmath>
#include <regex>

#include <Eigen/Dense>
#include <Eigen/SVD>

#include "engine/error.h"

namespace ssmtune::peft {

using json = nlohmann::json;

namespace {

using Mat = Eigen::MatrixXd;
using RowMajorMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Mat from_row_major(const std::vector<double>& v, int64_t rows, int64_t cols) {
    return Eigen::Map<const RowMajorMat>(v.data(), rows, cols);
}

std::vector<double> to_row_major(const Mat& m) {
    std::vector<double> v(size_t(m.size()));
    Eigen::Map<RowMajorMat>(v.data(), m.rows(), m.cols()) = m;
    return v;
}

Tensor to_tensor(const Mat& m, DType dtype) {
    return Tensor::from_vector(to_row_major(m), {int64_t(m.rows()), int64_t(m.cols())}).to(dtype);
}

Mat gaussian(int64_t rows, int64_t cols, Generator& gen) {
    return from_row_major(Tensor::randn({rows, cols}, gen, DType::F64).to_vector<double>(), rows, cols);
}

// The thin Q [m, min(m, n)] of a Householder QR of X [m, n] (torch.linalg.qr(X).Q, mode "reduced").
Mat thin_q(const Mat& x) {
    Eigen::HouseholderQR<Mat> qr(x);
    return qr.householderQ() * Mat::Identity(x.rows(), std::min(x.rows(), x.cols()));
}

// torch's get_approximate_basis: an orthonormal basis [m, q] of the range of M [m, n], refined by niter power steps.
Mat approximate_basis(const Mat& m, int64_t q, int64_t niter, Generator& gen) {
    Mat basis = thin_q(m * gaussian(m.cols(), q, gen));
    for (int64_t i = 0; i < niter; ++i) {
        basis = thin_q(m.transpose() * basis);
        basis = thin_q(m * basis);
    }
    return basis;
}

// "pissa_niter_K" with K in [0, kMaxPowerIterations] (HF allows any K; a huge one would run for hours, so it is
// refused like every other huge size; PiSSA's authors use 4 to 16).
constexpr int64_t kMaxPowerIterations = 1000;
constexpr int64_t kMaxOrthogonalRank = 4096;
bool is_pissa_niter(const std::string& init, int64_t* niter) {
    static const std::regex re("pissa_niter_([0-9]{1,4})");
    std::smatch match;
    if (!std::regex_match(init, match, re) || std::stoll(match[1].str()) > kMaxPowerIterations) return false;
    if (niter) *niter = std::stoll(match[1].str());
    return true;
}

// A, B and the residual from a factorisation W ≈ B A (both in the model's dtype: the residual uses the rounded
// values, so residual + s·B A = W to the dtype's rounding, as HF's).
LoraStart with_residual(const Mat& w, const Mat& a, const Mat& b, double scale, DType dtype) {
    LoraStart out;
    out.a = to_tensor(a, dtype);
    out.b = to_tensor(b, dtype);
    const Mat a_rounded = from_row_major(out.a.to_vector<double>(), a.rows(), a.cols());
    const Mat b_rounded = from_row_major(out.b.to_vector<double>(), b.rows(), b.cols());
    out.residual = to_tensor(w - scale * (b_rounded * a_rounded), dtype);
    return out;
}

}  // namespace

bool lora_init_is_computed(const std::string& init) {
    return init == "pissa" || init == "olora" || init == "orthogonal" || is_pissa_niter(init, nullptr);
}

bool lora_init_changes_base(const std::string& init) { return init == "pissa" || init == "olora" || is_pissa_niter(init, nullptr); }

std::string lora_init_refusal(const json& init) {
    if (init.is_boolean()) return "";
    if (!init.is_string())
        return "true (Kaiming A, zero B), false (random B too), \"gaussian\", \"pissa\", \"pissa_niter_K\", \"olora\" "
               "or \"orthogonal\"";
    const std::string v = init.get<std::string>();
    if (v == "gaussian" || lora_init_is_computed(v)) return "";
    if (v == "loftq") return "LoftQ initialises against a quantised base, and ssmtune has no quantised weights; use "
                             "\"pissa\" (the same principal-part start without quantisation) or true";
    if (v == "eva" || v == "corda")
        return v + " derives A and B from activation statistics gathered on data beforehand, which is not built; use "
                   "\"pissa\" (the weight's own principal part) or true";
    return "true (Kaiming A, zero B), false (random B too), \"gaussian\", \"pissa\", \"pissa_niter_K\" (K power "
           "iterations, 0 to " + std::to_string(kMaxPowerIterations) + "), \"olora\" or \"orthogonal\"";
}

LowRankSvd svd_lowrank(const std::vector<double>& values, int64_t rows, int64_t cols, int64_t q, int64_t niter,
                       Generator& gen) {
    SSMTUNE_CHECK(q >= 1 && q <= std::min(rows, cols), "svd_lowrank: q = ", q, " must be in [1, min(", rows, ", ",
                  cols, ")]");
    const Mat m = from_row_major(values, rows, cols);
    Mat u, v;
    Eigen::VectorXd s;
    if (rows < cols || cols > q) {  // as torch: sketch the transpose (a small B, or a small V)
        const Mat basis = approximate_basis(m.transpose(), q, niter, gen);  // [n, q]
        Eigen::JacobiSVD<Mat> svd(m * basis, Eigen::ComputeThinU | Eigen::ComputeThinV);  // [m, q]
        u = svd.matrixU();
        s = svd.singularValues();
        v = basis * svd.matrixV();
    } else {
        const Mat basis = approximate_basis(m, q, niter, gen);  // [m, q]
        Eigen::JacobiSVD<Mat> svd(basis.transpose() * m, Eigen::ComputeThinU | Eigen::ComputeThinV);  // [q, n]
        u = basis * svd.matrixU();
        s = svd.singularValues();
        v = svd.matrixV();
    }
    return {to_row_major(u), std::vector<double>(s.data(), s.data() + s.size()), to_row_major(v)};
}

LowRankSvd svd_thin(const std::vector<double>& values, int64_t rows, int64_t cols) {
    Eigen::BDCSVD<Mat> svd(from_row_major(values, rows, cols), Eigen::ComputeThinU | Eigen::ComputeThinV);
    const Eigen::VectorXd& s = svd.singularValues();
    return {to_row_major(svd.matrixU()), std::vector<double>(s.data(), s.data() + s.size()), to_row_major(svd.matrixV())};
}

LoraStart lora_computed_start(const std::string& init, const std::string& module, const Tensor& weight, int64_t r,
                              double scale, Generator& gen, DType dtype) {
    const int64_t out = weight.size(0), in = weight.size(1);
    if (init == "orthogonal") {
        SSMTUNE_CHECK(r % 2 == 0, "init_lora_weights \"orthogonal\" needs an even rank, but ", module, " has r = ", r,
                      " (HF refuses it too); fix: an even r, or rank_pattern for this module");
        // the r × r QR costs r³: a rank in the tens of thousands would run for hours and take gigabytes
        SSMTUNE_CHECK(r <= kMaxOrthogonalRank, "init_lora_weights \"orthogonal\" factors a random r × r matrix, and r = ",
                      r, " (", module, ") is above the ", kMaxOrthogonalRank, " allowed; fix: a smaller r");
        const Mat q = thin_q(gaussian(r, r, gen));  // [r, r], orthonormal rows
        Mat q_odd(r / 2, r), q_even(r / 2, r);      // HF's Q[0::2] and Q[1::2]
        for (int64_t i = 0; i < r / 2; ++i) {
            q_odd.row(i) = q.row(2 * i);
            q_even.row(i) = q.row(2 * i + 1);
        }
        const Mat a = (gaussian(in, r / 2, gen) * q_odd).transpose() / 10.0;  // [r, in]
        const Mat b = gaussian(r / 2, out, gen).transpose() * q_even / 10.0;  // [out, r]
        return {to_tensor(a, dtype), to_tensor(b, dtype), Tensor()};
    }
    SSMTUNE_CHECK(r <= std::min(out, in), "init_lora_weights \"", init, "\" takes the first r = ", r,
                  " components of ", module, "'s weight, which has only min(", out, ", ", in, ") = ", std::min(out, in),
                  "; fix: r <= ", std::min(out, in), " (rank_pattern can lower it for this module)");
    const std::vector<double> w_values = weight.to_vector<double>();  // row-major [out, in]
    const Mat w = from_row_major(w_values, out, in);
    if (init == "olora") {
        Eigen::HouseholderQR<Mat> qr(w);
        const Mat q = qr.householderQ() * Mat::Identity(out, r);                                   // Q[:, :r]
        const Mat rr = qr.matrixQR().topRows(r).triangularView<Eigen::Upper>().toDenseMatrix();  // R[:r]
        return with_residual(w, rr, q, scale, dtype);
    }
    SSMTUNE_CHECK(scale > 0, "init_lora_weights \"", init, "\" splits the singular values as √(S / s), so it needs a "
                  "positive scale s = lora_alpha / r, but ", module, " has s = ", scale, "; fix: a positive lora_alpha");
    int64_t niter = 0;
    const bool sketched = is_pissa_niter(init, &niter);
    const LowRankSvd svd = sketched ? svd_lowrank(w_values, out, in, r, niter, gen) : svd_thin(w_values, out, in);
    const int64_t k = sketched ? r : std::min(out, in);  // the columns svd holds, of which the first r are used
    const Mat u = from_row_major(svd.u, out, k).leftCols(r);  // U_r [out, r]
    const Mat v = from_row_major(svd.v, in, k).leftCols(r);   // V_r [in, r]
    const Eigen::VectorXd s = Eigen::Map<const Eigen::VectorXd>(svd.s.data(), r);
    const Eigen::VectorXd root = (s / scale).cwiseSqrt();
    const Mat a = root.asDiagonal() * v.transpose();  // [r, in]
    const Mat b = u * root.asDiagonal();              // [out, r]
    return with_residual(w, a, b, scale, dtype);
}

json plain_lora_config(const json& config) {
    json c = config;
    const bool rslora = c.value("use_rslora", false) == true;
    const double alpha_factor = rslora ? std::sqrt(2.0) : 2.0;  // s = α/r or α/√r stays the same at rank 2r
    c["r"] = 2 * c.at("r").get<int64_t>();
    c["lora_alpha"] = alpha_factor * c.at("lora_alpha").get<double>();
    if (c.contains("rank_pattern") && c["rank_pattern"].is_object())
        for (auto& [k, v] : c["rank_pattern"].items()) v = 2 * v.get<int64_t>();
    if (c.contains("alpha_pattern") && c["alpha_pattern"].is_object())
        for (auto& [k, v] : c["alpha_pattern"].items()) v = alpha_factor * v.get<double>();
    c["init_lora_weights"] = true;
    return c;
}

}  // namespace ssmtune::peft
