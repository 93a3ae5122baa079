#pragma once
// Rotary position embedding with the half-split rotation (pairs i and i + head_dim/2, rotate_half),
// frequencies and angles computed in f32 exactly as the transformers reference does.
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/rope_scaling.hpp"
#include "../core/tensor.hpp"

namespace fusionlm {

class Rope {
public:
    Rope(int head_dim, double theta, const RopeScaling* scaling = nullptr) : head_dim_(head_dim) {
        if (head_dim <= 0 || head_dim % 2 != 0)
            throw ConfigError("rope: head_dim must be positive and even, got " + std::to_string(head_dim));
        if (!(theta > 0.0)) throw ConfigError("rope_theta must be positive, got " + std::to_string(theta));
        const int half = head_dim / 2;
        inv_freq_.resize(std::size_t(half));
        // torch: 1.0 / (theta ** (arange(0, d, 2).float() / d)), every step in f32.
        for (int i = 0; i < half; ++i) {
            const float exponent = float(2 * i) / float(head_dim);
            inv_freq_[std::size_t(i)] = 1.0f / std::pow(float(theta), exponent);
        }
        if (scaling && !scaling->rope_type.empty() && scaling->rope_type != "default") {
            if (scaling->rope_type != "llama3")
                throw ConfigError("rope_scaling.rope_type '" + scaling->rope_type + "' is not supported");
            apply_llama3(*scaling);
        }
    }

    int head_dim() const { return head_dim_; }
    const std::vector<float>& inv_freq() const { return inv_freq_; }

    // x: [S, heads * head_dim], row s rotated by angle positions[s] * inv_freq, in place.
    void apply(Eigen::Ref<RowMatrix> x, int heads, std::span<const std::int64_t> positions) const {
        if (heads <= 0 || x.cols() != Eigen::Index(heads) * head_dim_)
            throw ShapeError("rope: input has " + std::to_string(x.cols()) + " columns, expected heads (" +
                             std::to_string(heads) + ") x head_dim (" + std::to_string(head_dim_) + ")");
        if (Eigen::Index(positions.size()) != x.rows())
            throw ShapeError("rope: " + std::to_string(positions.size()) + " positions for " +
                             std::to_string(x.rows()) + " rows");
        const int half = head_dim_ / 2;
        std::vector<float> cos_pos(static_cast<std::size_t>(half)), sin_pos(static_cast<std::size_t>(half));
        for (Eigen::Index s = 0; s < x.rows(); ++s) {
            const float pos = float(positions[std::size_t(s)]);
            for (int i = 0; i < half; ++i) {
                const float angle = pos * inv_freq_[std::size_t(i)];
                cos_pos[std::size_t(i)] = std::cos(angle);
                sin_pos[std::size_t(i)] = std::sin(angle);
            }
            float* row = x.row(s).data();
            for (int h = 0; h < heads; ++h) {
                float* x1 = row + std::ptrdiff_t(h) * head_dim_;
                float* x2 = x1 + half;
                // q * cos + rotate_half(q) * sin, rotate_half(q) = cat(-q2, q1).
                for (int i = 0; i < half; ++i) {
                    const float a = x1[i], b = x2[i];
                    const float c = cos_pos[std::size_t(i)], sn = sin_pos[std::size_t(i)];
                    x1[i] = a * c + (-b) * sn;
                    x2[i] = b * c + a * sn;
                }
            }
        }
    }

private:
    // transformers' _compute_llama3_parameters, in f32: long wavelengths are divided by factor, short ones
    // kept, the band between interpolated smoothly.
    void apply_llama3(const RopeScaling& s) {
        if (!(s.factor > 0.0f) || !(s.high_freq_factor > s.low_freq_factor) || !(s.low_freq_factor > 0.0f) ||
            s.original_max_position_embeddings <= 0)
            throw ConfigError("rope_scaling (llama3): need factor > 0, high_freq_factor > low_freq_factor > 0 and "
                              "original_max_position_embeddings > 0");
        const float old_len = float(s.original_max_position_embeddings);
        const float low_freq_wavelen = old_len / s.low_freq_factor;
        const float high_freq_wavelen = old_len / s.high_freq_factor;
        constexpr float two_pi = float(2.0 * 3.14159265358979323846);
        for (float& f : inv_freq_) {
            const float wavelen = two_pi / f;
            const float scaled = wavelen > low_freq_wavelen ? f / s.factor : f;
            const float smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
            const float smoothed = (1.0f - smooth) * scaled / s.factor + smooth * scaled;
            const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
            f = medium ? smoothed : scaled;
        }
    }

    int head_dim_;
    std::vector<float> inv_freq_;
};

}  // namespace fusionlm
