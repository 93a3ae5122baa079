#pragma once
// Row-wise normalisations in f32, with PyTorch's arithmetic (RMSNorm as in Llama, LayerNorm with the
// biased variance). Both allow y to alias x: each row is read fully before it is written.
#include <cmath>
#include <string>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace fusionlm {

namespace detail {
inline void check_norm_shapes(const char* op, Eigen::Index xr, Eigen::Index xc, Eigen::Index yr,
                              Eigen::Index yc) {
    if (xr != yr || xc != yc)
        throw ShapeError(std::string(op) + ": output is [" + std::to_string(yr) + ", " + std::to_string(yc) +
                         "] but input is [" + std::to_string(xr) + ", " + std::to_string(xc) + "]");
}
}  // namespace detail

// y = w * (x * rsqrt(mean(x^2) + eps)), per row.
inline void rms_norm(const Eigen::Ref<const RowMatrix>& x, const float* weight, float eps, Eigen::Ref<RowMatrix> y) {
    detail::check_norm_shapes("rms_norm", x.rows(), x.cols(), y.rows(), y.cols());
    const Eigen::Index d = x.cols();
    if (d == 0) return;
    const Eigen::Map<const Eigen::RowVectorXf> w(weight, d);
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
        const float variance = x.row(r).squaredNorm() / float(d);
        const float scale = 1.0f / std::sqrt(variance + eps);
        y.row(r) = w.cwiseProduct(x.row(r) * scale);
    }
}

// y = (x - mean) * rsqrt(var + eps) * w + b, per row, var biased (divided by d) like PyTorch.
inline void layer_norm(const Eigen::Ref<const RowMatrix>& x, const float* weight, const float* bias, float eps,
                       Eigen::Ref<RowMatrix> y) {
    detail::check_norm_shapes("layer_norm", x.rows(), x.cols(), y.rows(), y.cols());
    const Eigen::Index d = x.cols();
    if (d == 0) return;
    const Eigen::Map<const Eigen::RowVectorXf> w(weight, d), b(bias, d);
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
        const float mean = x.row(r).sum() / float(d);
        const float variance = (x.row(r).array() - mean).square().sum() / float(d);
        const float scale = 1.0f / std::sqrt(variance + eps);
        y.row(r) = (((x.row(r).array() - mean) * scale) * w.array() + b.array()).matrix();
    }
}

}  // namespace fusionlm
