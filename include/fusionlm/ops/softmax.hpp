#pragma once
// Numerically stable softmax over each row, in f32.
#include <cmath>
#include <limits>

#include "../core/tensor.hpp"

namespace fusionlm {

// Subtracts the row maximum before exp. A row whose entries are all -inf (nothing to attend to) becomes
// all zeros instead of NaN; rows masked with the lowest finite float (as Hugging Face masks) stay finite
// and become uniform, like the reference. NaN inputs propagate as NaN.
inline void softmax_row(float* row, Eigen::Index n) {
    if (n == 0) return;
    Eigen::Map<Eigen::ArrayXf> a(row, n);
    const float max = a.maxCoeff();
    if (max == -std::numeric_limits<float>::infinity()) {
        a.setZero();
        return;
    }
    a = (a - max).exp();
    a /= a.sum();
}

inline void softmax_rows(Eigen::Ref<RowMatrix> x) {
    for (Eigen::Index r = 0; r < x.rows(); ++r) softmax_row(x.row(r).data(), x.cols());
}

}  // namespace fusionlm
