#pragma once
// Element-wise activations, in place, in f32 with Eigen's vectorised exp / erf / tanh.
#include <cstddef>
#include <string>
#include <string_view>
#include <unsupported/Eigen/SpecialFunctions>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace fusionlm {

enum class Activation { Gelu, GeluTanh, Silu, QuickGelu, Relu };

// Maps a Hugging Face `hidden_act` / `projector_hidden_act` string to the function it names.
inline Activation parse_activation(std::string_view hf_name) {
    if (hf_name == "gelu") return Activation::Gelu;
    if (hf_name == "gelu_pytorch_tanh" || hf_name == "gelu_new") return Activation::GeluTanh;
    if (hf_name == "silu" || hf_name == "swish") return Activation::Silu;
    if (hf_name == "quick_gelu") return Activation::QuickGelu;
    if (hf_name == "relu") return Activation::Relu;
    throw ConfigError("hidden_act: unknown activation '" + std::string(hf_name) + "'");
}

using FloatArrayMap = Eigen::Map<Eigen::ArrayXf>;

// Exact GELU: x * 0.5 * (1 + erf(x / sqrt(2))).
inline void gelu_erf(float* x, std::size_t n) {
    FloatArrayMap a(x, Eigen::Index(n));
    a = a * 0.5f * (1.0f + (a * 0.70710678118654752f).erf());
}

// GELU with the tanh approximation (gelu_pytorch_tanh / gelu_new).
inline void gelu_tanh(float* x, std::size_t n) {
    constexpr float k = 0.7978845608028654f;  // sqrt(2 / pi)
    FloatArrayMap a(x, Eigen::Index(n));
    a = 0.5f * a * (1.0f + (k * (a + 0.044715f * a.cube())).tanh());
}

// SiLU: x / (1 + exp(-x)).
inline void silu(float* x, std::size_t n) {
    FloatArrayMap a(x, Eigen::Index(n));
    a = a / (1.0f + (-a).exp());
}

// QuickGELU (CLIP): x * sigmoid(1.702 x).
inline void quick_gelu(float* x, std::size_t n) {
    FloatArrayMap a(x, Eigen::Index(n));
    a = a * (1.0f / (1.0f + (-1.702f * a).exp()));
}

inline void relu(float* x, std::size_t n) {
    FloatArrayMap a(x, Eigen::Index(n));
    a = a.max(0.0f);
}

inline void apply_activation(Activation act, float* x, std::size_t n) {
    switch (act) {
        case Activation::Gelu: gelu_erf(x, n); return;
        case Activation::GeluTanh: gelu_tanh(x, n); return;
        case Activation::Silu: silu(x, n); return;
        case Activation::QuickGelu: quick_gelu(x, n); return;
        case Activation::Relu: relu(x, n); return;
    }
}

namespace detail {
// Applies fn to each row's contiguous span (a Ref may have an outer stride larger than its width).
template <class Fn>
void for_each_row(Eigen::Ref<RowMatrix> x, Fn&& fn) {
    if (x.outerStride() == x.cols()) {
        fn(x.data(), std::size_t(x.size()));
        return;
    }
    for (Eigen::Index r = 0; r < x.rows(); ++r) fn(x.row(r).data(), std::size_t(x.cols()));
}
}  // namespace detail

inline void gelu_erf(Eigen::Ref<RowMatrix> x) { detail::for_each_row(x, [](float* p, std::size_t n) { gelu_erf(p, n); }); }
inline void gelu_tanh(Eigen::Ref<RowMatrix> x) { detail::for_each_row(x, [](float* p, std::size_t n) { gelu_tanh(p, n); }); }
inline void silu(Eigen::Ref<RowMatrix> x) { detail::for_each_row(x, [](float* p, std::size_t n) { silu(p, n); }); }
inline void quick_gelu(Eigen::Ref<RowMatrix> x) { detail::for_each_row(x, [](float* p, std::size_t n) { quick_gelu(p, n); }); }
inline void relu(Eigen::Ref<RowMatrix> x) { detail::for_each_row(x, [](float* p, std::size_t n) { relu(p, n); }); }

inline void apply_activation(Activation act, Eigen::Ref<RowMatrix> x) {
    detail::for_each_row(x, [act](float* p, std::size_t n) { apply_activation(act, p, n); });
}

// The SwiGLU core: gate = silu(gate) * up, element-wise.
inline void silu_mul(Eigen::Ref<RowMatrix> gate, const Eigen::Ref<const RowMatrix>& up) {
    if (gate.rows() != up.rows() || gate.cols() != up.cols())
        throw ShapeError("silu_mul: gate is [" + std::to_string(gate.rows()) + ", " + std::to_string(gate.cols()) +
                         "] but up is [" + std::to_string(up.rows()) + ", " + std::to_string(up.cols()) + "]");
    for (Eigen::Index r = 0; r < gate.rows(); ++r) {
        auto g = gate.row(r).array();
        g = g / (1.0f + (-g).exp()) * up.row(r).array();
    }
}

}  // namespace fusionlm
