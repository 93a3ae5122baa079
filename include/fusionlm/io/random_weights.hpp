#pragma once
// Random weights held in memory, bound through the same interface as a checkpoint's WeightBinder
// (require, require_f32, mark_used, ignore_prefix, finish), so benchmarks and comparisons build real
// model shapes without a checkpoint. Values are deterministic for a given seed.
//   - Matrices (require): uniform with variance 1/fan_in (fan_in = the last dimension), stored as
//     F32 or BF16; each tensor gets its own memory, so decode reads as many bytes as a real model.
//   - Tensors whose names start with `shared_prefix` share one f32 buffer per element count: meant
//     for compute-bound parts (vision towers), where a 24-layer tower then costs one layer's memory
//     and the products are the same.
//   - Small tensors (require_f32): norm weights near 1, everything else (biases, gates, embeddings
//     of classes and positions) small.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace fusionlm {

struct RandomWeightsOptions {
    DType dtype = DType::F32;                  // storage of matrices outside shared_prefix: F32 or BF16
    std::optional<std::string> shared_prefix;  // nullopt: nothing shared; "": every matrix shared
    std::uint64_t seed = 0x9e3779b97f4a7c15ull;
};

class RandomWeights {
public:
    explicit RandomWeights(RandomWeightsOptions options = {}) : options_(std::move(options)), state_(options_.seed) {
        if (options_.dtype != DType::F32 && options_.dtype != DType::BF16)
            throw UnsupportedError("random weights: dtype " + std::string(dtype_name(options_.dtype)) +
                                   " (supported: F32, BF16)");
        if (state_ == 0) state_ = 1;  // xorshift's one fixed point
    }
    RandomWeights(const RandomWeights&) = delete;  // views point into this object's buffers
    RandomWeights& operator=(const RandomWeights&) = delete;

    TensorView require(const std::string& name, const Shape& shape) {
        check_shape(name, shape);
        const std::size_t n = std::size_t(numel(shape));
        const float scale = shape.empty() ? 1.0f : 1.0f / std::sqrt(float(std::max<std::int64_t>(shape.back(), 1)));
        if (options_.shared_prefix && std::string_view(name).starts_with(*options_.shared_prefix)) {
            std::vector<float>& buf = shared_[numel(shape)];
            if (buf.size() != n) fill(buf, n, scale);
            return TensorView{name, DType::F32, shape, reinterpret_cast<const std::byte*>(buf.data())};
        }
        std::vector<float> f;
        fill(f, n, scale);
        if (options_.dtype == DType::BF16) {
            auto& h = bf16_.emplace_back(n);
            f32_to_bf16(f.data(), h.data(), n);
            bytes_ += n * sizeof(std::uint16_t);
            return TensorView{name, DType::BF16, shape, reinterpret_cast<const std::byte*>(h.data())};
        }
        auto& own = f32_.emplace_back(std::move(f));
        bytes_ += n * sizeof(float);
        return TensorView{name, DType::F32, shape, reinterpret_cast<const std::byte*>(own.data())};
    }

    std::vector<float> require_f32(const std::string& name, const Shape& shape) {
        check_shape(name, shape);
        // A LayerNorm / RMSNorm weight near 1 keeps activations in range; its bias, gates and the rest small.
        const bool norm_weight = name.find("norm") != std::string::npos && name.ends_with(".weight");
        std::vector<float> v;
        fill(v, std::size_t(numel(shape)), norm_weight ? 0.05f : 0.1f);
        if (norm_weight)
            for (float& x : v) x += 1.0f;
        return v;
    }

    // Nothing to check against: every requested tensor exists, and there are no unexpected ones.
    void mark_used(const std::string&) {}
    void ignore_prefix(const std::string&) {}
    void finish() const {}

    // Bytes of the matrices held (shared buffers counted once).
    std::size_t bytes() const {
        std::size_t shared = 0;
        for (const auto& [n, buf] : shared_) shared += buf.size() * sizeof(float);
        return bytes_ + shared;
    }

private:
    static void check_shape(const std::string& name, const Shape& shape) {
        for (auto d : shape)
            if (d < 0) throw ShapeError("random weights: tensor '" + name + "': shape " + shape_str(shape) +
                                        " has a negative dimension");
    }

    // Uniform in [-sqrt(3), sqrt(3)) (unit variance) times scale, from a xorshift64 stream: billions of
    // values must not take minutes.
    void fill(std::vector<float>& v, std::size_t n, float scale) {
        v.resize(n);
        for (float& x : v) {
            state_ ^= state_ << 13;
            state_ ^= state_ >> 7;
            state_ ^= state_ << 17;
            x = scale * (float(state_ >> 40) * 0x1p-24f * 2.0f - 1.0f) * 1.7320508f;
        }
    }

    RandomWeightsOptions options_;
    std::uint64_t state_;
    std::size_t bytes_ = 0;
    std::map<std::int64_t, std::vector<float>> shared_;
    std::deque<std::vector<std::uint16_t>> bf16_;
    std::deque<std::vector<float>> f32_;
};

}  // namespace fusionlm
