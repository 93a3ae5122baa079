#pragma once
// Row-major Eigen aliases and a non-owning view of a stored (checkpoint) tensor.
#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dtype.hpp"
#include "error.hpp"

namespace fusionlm {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMap = Eigen::Map<RowMatrix>;
using ConstRowMap = Eigen::Map<const RowMatrix>;
using Vector = Eigen::VectorXf;
using VectorMap = Eigen::Map<Eigen::VectorXf>;
using ConstVectorMap = Eigen::Map<const Eigen::VectorXf>;

using Shape = std::vector<std::int64_t>;

inline std::int64_t numel(const Shape& s) {
    std::int64_t n = 1;
    for (auto d : s) n *= d;
    return n;
}

inline std::string shape_str(const Shape& s) {
    std::string r = "[";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

// A tensor as stored: dtype, shape and bytes owned elsewhere (a mapped file or a loader buffer).
// Float data is aligned to its element size; the loader guarantees it.
struct TensorView {
    std::string name;
    DType dtype = DType::F32;
    Shape shape;
    const std::byte* data = nullptr;

    std::int64_t numel() const { return fusionlm::numel(shape); }
    std::size_t nbytes() const { return std::size_t(numel()) * dtype_size(dtype); }
    std::int64_t dim(std::size_t i) const { return shape.at(i); }

    template <class T>
    const T* as() const { return reinterpret_cast<const T*>(data); }

    // Widens any float dtype to an f32 copy (for small tensors: norms, biases, embeddings rows).
    std::vector<float> to_f32() const {
        std::vector<float> out(static_cast<std::size_t>(numel()));
        switch (dtype) {
            case DType::F32: std::copy_n(as<float>(), out.size(), out.data()); break;
            case DType::BF16: bf16_to_f32(as<std::uint16_t>(), out.data(), out.size()); break;
            case DType::F16: f16_to_f32(as<std::uint16_t>(), out.data(), out.size()); break;
            case DType::F64:
                for (std::size_t i = 0; i < out.size(); ++i) out[i] = float(as<double>()[i]);
                break;
            default: throw ShapeError("tensor '" + name + "': dtype " + std::string(dtype_name(dtype)) +
                                      " is not a float type");
        }
        return out;
    }
};

}  // namespace fusionlm
