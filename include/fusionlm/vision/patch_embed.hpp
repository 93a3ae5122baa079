#pragma once
// Patch embedding: the stride-p, bias-free p x p convolution of a ViT as ONE GEMM. The pixels are
// unfolded into rows of C*p*p values ordered (channel, ky, kx), which is the memory order of the
// conv weight [hidden, C, p, p], so the weight is used in place as a [hidden, C*p*p] matrix.
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../ops/linear.hpp"

namespace fusionlm {

class PatchEmbed {
public:
    template <class Binder>
    static PatchEmbed bind(Binder& w, const std::string& name, std::int64_t hidden, std::int64_t channels,
                           std::int64_t patch) {
        PatchEmbed p;
        p.channels_ = channels;
        p.patch_ = patch;
        p.proj_.weight = w.require(name, {hidden, channels, patch, patch});
        p.proj_.weight.shape = {hidden, channels * patch * patch};
        return p;
    }

    std::int64_t patch_size() const { return patch_; }
    std::int64_t channels() const { return channels_; }
    std::int64_t hidden_size() const { return proj_.out_features(); }
    std::int64_t unfolded_size() const { return channels_ * patch_ * patch_; }

    // Writes the patches of one planar image [C, size, size] into rows [grid*grid, C*p*p] of `cols`,
    // patches in row-major order; a remainder narrower than a patch is dropped, as the conv does.
    void unfold(const float* pixels, std::int64_t size, Eigen::Ref<RowMatrix> cols) const {
        const std::int64_t grid = size / patch_, p = patch_;
        for (std::int64_t py = 0; py < grid; ++py)
            for (std::int64_t px = 0; px < grid; ++px) {
                float* row = cols.row(Eigen::Index(py * grid + px)).data();
                for (std::int64_t c = 0; c < channels_; ++c)
                    for (std::int64_t ky = 0; ky < p; ++ky) {
                        const float* src = pixels + (c * size + py * p + ky) * size + px * p;
                        std::copy_n(src, p, row + (c * p + ky) * p);
                    }
            }
    }

    // cols: [patches, C*p*p] -> out: [patches, hidden].
    void project(ThreadPool& pool, const Eigen::Ref<const RowMatrix>& cols, Eigen::Ref<RowMatrix> out) const {
        linear(pool, cols, proj_, out);
    }

private:
    std::int64_t channels_ = 3, patch_ = 14;
    Linear proj_;
};

}  // namespace fusionlm
