#pragma once
// y = x W^T + b with W stored [out, in] (f32, bf16 or f16, bound in place from the checkpoint).
// One row (decode, up to 3): threaded GEMV over output rows, half-precision rows widened in the dot product.
// More rows (prefill): threaded GEMM over column blocks, W panels widened to f32 once per call; on a pool
// set to Isa::Avx512Bf16, bf16 W is multiplied as bf16 pairs with x rounded to bf16 (vdpbf16ps); on one
// set to Isa::AmxBf16, the same on AMX tiles, read from W in place.
#include <cstdint>
#include <string>
#include <vector>

#include "../core/cpu.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "gemm.hpp"
#include "gemv.hpp"

namespace fusionlm {

struct Linear {
    TensorView weight;        // [out, in]
    std::vector<float> bias;  // [out], or empty for no bias

    std::int64_t in_features() const { return weight.shape.size() == 2 ? weight.shape[1] : 0; }
    std::int64_t out_features() const { return weight.shape.size() == 2 ? weight.shape[0] : 0; }
};

namespace detail {

inline constexpr Eigen::Index kMaxGemvRows = 3;

inline void check_linear(const Eigen::Ref<const RowMatrix>& x, const Linear& layer, Eigen::Index y_rows,
                         Eigen::Index y_cols) {
    const TensorView& w = layer.weight;
    if (w.shape.size() != 2)
        throw ShapeError("linear '" + w.name + "': weight must be 2-D [out, in], got " + shape_str(w.shape));
    if (w.dtype != DType::F32 && w.dtype != DType::BF16 && w.dtype != DType::F16)
        throw ShapeError("linear '" + w.name + "': weight dtype " + std::string(dtype_name(w.dtype)) +
                         " is not F32, BF16 or F16");
    if (w.data == nullptr && w.numel() > 0) throw ShapeError("linear '" + w.name + "': weight has no data");
    const std::int64_t out = w.shape[0], in = w.shape[1];
    if (x.cols() != in)
        throw ShapeError("linear '" + w.name + "': input has " + std::to_string(x.cols()) + " features, weight " +
                         shape_str(w.shape) + " expects " + std::to_string(in));
    if (y_rows != x.rows() || y_cols != out)
        throw ShapeError("linear '" + w.name + "': output is [" + std::to_string(y_rows) + ", " +
                         std::to_string(y_cols) + "], expected [" + std::to_string(x.rows()) + ", " +
                         std::to_string(out) + "]");
    if (!layer.bias.empty() && std::int64_t(layer.bias.size()) != out)
        throw ShapeError("linear '" + w.name + "': bias has " + std::to_string(layer.bias.size()) +
                         " entries, expected " + std::to_string(out));
}

// The kernel choice is a parameter so tests can run every path this CPU supports.
inline void linear_with(Isa isa, ThreadPool& pool, const Eigen::Ref<const RowMatrix>& x, const Linear& layer,
                        Eigen::Ref<RowMatrix> y) {
    check_linear(x, layer, y.rows(), y.cols());
    if (!isa_supported(isa)) throw UnsupportedError("linear: instruction set " + std::string(isa_name(isa)) +
                                                    " is not supported by this CPU");
    if (x.rows() == 0 || y.cols() == 0) return;
    if (x.cols() == 0) {  // empty sum: only the bias remains
        for (Eigen::Index r = 0; r < y.rows(); ++r)
            for (Eigen::Index c = 0; c < y.cols(); ++c) y(r, c) = layer.bias.empty() ? 0.0f : layer.bias[std::size_t(c)];
        return;
    }
    const WeightMatrix w{layer.weight.data, layer.weight.dtype, layer.weight.shape[0], layer.weight.shape[1]};
    const float* bias = layer.bias.empty() ? nullptr : layer.bias.data();
    // Up to 3 rows, streaming W once per row beats packing all of W for a GEMM.
    if (x.rows() <= kMaxGemvRows)
        for (Eigen::Index r = 0; r < x.rows(); ++r) gemv(isa, pool, x.row(r).data(), w, bias, y.row(r).data());
    else
        gemm(isa, pool, x.data(), x.outerStride(), x.rows(), w, bias, y.data(), y.outerStride());
}

}  // namespace detail

// y [n, out] = x [n, in] W^T + b. y must not alias x.
inline void linear(ThreadPool& pool, const Eigen::Ref<const RowMatrix>& x, const Linear& layer,
                   Eigen::Ref<RowMatrix> y) {
    detail::linear_with(pool.isa(), pool, x, layer, y);
}

inline RowMatrix linear(ThreadPool& pool, const Eigen::Ref<const RowMatrix>& x, const Linear& layer) {
    RowMatrix y(x.rows(), layer.out_features());
    linear(pool, x, layer, y);
    return y;
}

}  // namespace fusionlm
