#pragma once
// Token embedding gather from a stored table (f32, bf16 or f16), widened to f32.
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace fusionlm {

// out.row(i) = table[ids[i]]; table [V, H].
inline void embedding_lookup(const TensorView& table, std::span<const std::int64_t> ids, Eigen::Ref<RowMatrix> out) {
    if (table.shape.size() != 2)
        throw ShapeError("embedding '" + table.name + "': expected a 2-D table, got " + shape_str(table.shape));
    if (table.dtype != DType::F32 && table.dtype != DType::BF16 && table.dtype != DType::F16)
        throw ShapeError("embedding '" + table.name + "': dtype " + std::string(dtype_name(table.dtype)) +
                         " is not F32, BF16 or F16");
    const std::int64_t vocab = table.shape[0], hidden = table.shape[1];
    if (out.rows() != std::int64_t(ids.size()) || out.cols() != hidden)
        throw ShapeError("embedding '" + table.name + "': output is [" + std::to_string(out.rows()) + ", " +
                         std::to_string(out.cols()) + "], expected [" + std::to_string(ids.size()) + ", " +
                         std::to_string(hidden) + "]");
    for (std::size_t i = 0; i < ids.size(); ++i) {
        const std::int64_t id = ids[i];
        if (id < 0 || id >= vocab)
            throw InputError("embedding '" + table.name + "': token id " + std::to_string(id) + " at " +
                             std::to_string(i) + " is outside [0, " + std::to_string(vocab) + ")");
        float* dst = out.row(Eigen::Index(i)).data();
        const std::size_t offset = std::size_t(id) * std::size_t(hidden);
        switch (table.dtype) {
            case DType::F32: std::copy_n(table.as<float>() + offset, hidden, dst); break;
            case DType::BF16: bf16_to_f32(table.as<std::uint16_t>() + offset, dst, std::size_t(hidden)); break;
            default: f16_to_f32(table.as<std::uint16_t>() + offset, dst, std::size_t(hidden)); break;
        }
    }
}

}  // namespace fusionlm
