#pragma once
// A raw [rows, cols] row-major weight matrix in its storage dtype, as the matrix kernels see it.
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../core/dtype.hpp"

namespace fusionlm {

struct WeightMatrix {
    const std::byte* data = nullptr;
    DType dtype = DType::F32;  // F32, BF16 or F16
    std::int64_t rows = 0, cols = 0;

    template <class T>
    const T* as() const { return reinterpret_cast<const T*>(data); }
};

// Storage element of a weight dtype: float, or the raw 16 bits of a bf16 / f16 value.
template <DType D>
using storage_t = std::conditional_t<D == DType::F32, float, std::uint16_t>;

template <DType D>
inline float widen(storage_t<D> v) {
    if constexpr (D == DType::F32) return v;
    else if constexpr (D == DType::BF16) return bf16_to_f32(v);
    else return f16_to_f32(v);
}

}  // namespace fusionlm
