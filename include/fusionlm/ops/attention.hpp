#pragma once
// Scaled dot-product attention in f32 (eager, like the reference): softmax(Q K^T / sqrt(d) + mask) V per
// head, grouped-query heads, an additive mask built by the caller (causal, padding, cross-attention).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "gemm.hpp"
#include "softmax.hpp"
#include "weight_matrix.hpp"

namespace fusionlm {

// The value Hugging Face adds at masked positions (torch.finfo(float32).min). Finite on purpose: a row
// with every key masked becomes a uniform softmax instead of NaN.
inline constexpr float kMaskedValue = std::numeric_limits<float>::lowest();

// Causal + padding mask for q_len new tokens after past_len cached ones: [q_len, past_len + q_len], 0 where
// query i (at position past_len + i) may see key j (j <= past_len + i and key j is a real token), else
// kMaskedValue. key_attention_mask holds 1 for tokens and 0 for padding over all past_len + q_len keys,
// or is empty (no padding).
inline RowMatrix causal_mask(std::int64_t q_len, std::int64_t past_len,
                             std::span<const std::int64_t> key_attention_mask = {}) {
    if (q_len < 0 || past_len < 0) throw ShapeError("causal_mask: negative length");
    const std::int64_t keys = past_len + q_len;
    if (!key_attention_mask.empty() && std::int64_t(key_attention_mask.size()) != keys)
        throw ShapeError("causal_mask: attention_mask has " + std::to_string(key_attention_mask.size()) +
                         " entries, expected past + query length " + std::to_string(keys));
    RowMatrix mask(q_len, keys);
    for (std::int64_t i = 0; i < q_len; ++i)
        for (std::int64_t j = 0; j < keys; ++j) {
            const bool visible = j <= past_len + i && (key_attention_mask.empty() || key_attention_mask[std::size_t(j)] != 0);
            mask(i, j) = visible ? 0.0f : kMaskedValue;
        }
    return mask;
}

namespace detail {
// The keys a block of mask rows can see: one past the last column any row leaves unmasked. Keys beyond it
// get exactly zero weight, so skipping them (the causal mask's upper triangle) changes nothing. A row
// with every key masked takes a uniform softmax over all keys, as the reference does, so then none are
// skipped.
inline Eigen::Index visible_keys(const float* mask, Eigen::Index rows, Eigen::Index keys) {
    Eigen::Index visible = 0;
    for (Eigen::Index i = 0; i < rows; ++i) {
        const float* row = mask + i * keys;
        Eigen::Index first = 0;
        while (first < keys && row[first] == kMaskedValue) ++first;
        if (first == keys) return keys;
        Eigen::Index end = keys;
        while (end > std::max(visible, first + 1) && row[end - 1] == kMaskedValue) --end;
        visible = std::max(visible, end);
    }
    return visible;
}

// Unmasked attention over this many query rows or more (vision towers) runs on our packed GEMM kernels,
// 1.4x Eigen's products there; masked (causal) attention gains more from skipping hidden keys per 64-row
// block, and short queries (decode) from sharing heads among the threads.
inline constexpr Eigen::Index kGemmQueryRows = 256;

// scores / sqrt(d) + mask, then softmax, over rows [r0, r0 + rows) of scores [rows, keys] (mask row
// stride mask_stride, or null).
inline void scaled_masked_softmax(Eigen::Ref<RowMatrix> scores, float scale_divisor, const float* mask,
                                  Eigen::Index mask_stride, Eigen::Index r0, Eigen::Index rows) {
    for (Eigen::Index r = r0; r < r0 + rows; ++r) {
        auto row = scores.row(r);
        row /= scale_divisor;
        if (mask) row += ConstRowMap(mask + r * mask_stride, 1, scores.cols());
        softmax_row(row.data(), scores.cols());
    }
}

// Per query block of 64 rows and head, Eigen products on the thread that owns the unit.
inline void attention_by_head(ThreadPool& pool, const Eigen::Ref<const RowMatrix>& q, const Eigen::Ref<const RowMatrix>& k,
                              const Eigen::Ref<const RowMatrix>& v, int num_heads, int group, Eigen::Index d,
                              const float* additive_mask, Eigen::Ref<RowMatrix> out) {
    const Eigen::Index sq = q.rows(), sk = k.rows();
    const float scale_divisor = std::sqrt(float(d));
    const Eigen::Index block = 64;
    const Eigen::Index blocks = (sq + block - 1) / block;
    const std::size_t units = std::size_t(num_heads) * std::size_t(blocks);
    pool.parallel_for(units, 1, [&](std::size_t begin, std::size_t end) {
        RowMatrix scores;
        for (std::size_t u = begin; u < end; ++u) {
            const int h = int(u / std::size_t(blocks));
            const Eigen::Index r0 = Eigen::Index(u % std::size_t(blocks)) * block;
            const Eigen::Index rows = std::min(block, sq - r0);
            const int j = h / group;
            const float* mask = additive_mask ? additive_mask + r0 * sk : nullptr;
            const Eigen::Index keys = mask ? visible_keys(mask, rows, sk) : sk;
            scores.resize(rows, keys);
            scores.noalias() = q.block(r0, h * d, rows, d) * k.block(0, j * d, keys, d).transpose();
            scaled_masked_softmax(scores, scale_divisor, mask, sk, 0, rows);
            out.block(r0, h * d, rows, d).noalias() = scores * v.block(0, j * d, keys, d);
        }
    });
}

// Per kv head, its keys are copied contiguous and its values transposed once; then per query head and block
// of up to 256 rows, scores = Q K^T and out^T = V^T P are packed GEMMs threaded over their columns (keys,
// query rows), the softmax threaded over rows. The f32 kernels of the pool's instruction set.
inline void attention_by_gemm(ThreadPool& pool, const Eigen::Ref<const RowMatrix>& q, const Eigen::Ref<const RowMatrix>& k,
                              const Eigen::Ref<const RowMatrix>& v, int num_kv_heads, int group, Eigen::Index d,
                              Eigen::Ref<RowMatrix> out) {
    const Eigen::Index sq = q.rows(), sk = k.rows();
    const float scale_divisor = std::sqrt(float(d));
    const Eigen::Index block = 256;
    RowMatrix head_keys, head_values_t, scores, out_t;
    for (int j = 0; j < num_kv_heads; ++j) {
        head_keys = k.middleCols(j * d, d);
        head_values_t = v.middleCols(j * d, d).transpose();
        for (int h = j * group; h < (j + 1) * group; ++h)
            for (Eigen::Index r0 = 0; r0 < sq; r0 += block) {
                const Eigen::Index rows = std::min(block, sq - r0);
                scores.resize(rows, sk);
                gemm(pool.isa(), pool, q.data() + r0 * q.outerStride() + h * d, q.outerStride(), rows,
                     WeightMatrix{reinterpret_cast<const std::byte*>(head_keys.data()), DType::F32, sk, d}, nullptr,
                     scores.data(), sk);
                pool.parallel_for(std::size_t(rows), 1, [&](std::size_t begin, std::size_t end) {
                    scaled_masked_softmax(scores, scale_divisor, nullptr, sk, Eigen::Index(begin),
                                          Eigen::Index(end - begin));
                });
                out_t.resize(d, rows);
                gemm(pool.isa(), pool, head_values_t.data(), sk, d,
                     WeightMatrix{reinterpret_cast<const std::byte*>(scores.data()), DType::F32, rows, sk}, nullptr,
                     out_t.data(), rows);
                out.block(r0, h * d, rows, d) = out_t.transpose();
            }
    }
}
}  // namespace detail

// q [Sq, Hq*D], k and v [Sk, Hkv*D], additive_mask [Sq, Sk] row-major or nullptr, out [Sq, Hq*D].
// KV head j serves query heads j*g .. j*g+g-1 (g = Hq / Hkv). out must not alias q, k or v.
inline void attention(ThreadPool& pool, const Eigen::Ref<const RowMatrix>& q, const Eigen::Ref<const RowMatrix>& k,
                      const Eigen::Ref<const RowMatrix>& v, int num_heads, int num_kv_heads,
                      const float* additive_mask, Eigen::Ref<RowMatrix> out) {
    if (num_heads <= 0 || num_kv_heads <= 0 || num_heads % num_kv_heads != 0)
        throw ShapeError("attention: num_heads (" + std::to_string(num_heads) + ") must be a positive multiple of num_kv_heads (" +
                         std::to_string(num_kv_heads) + ")");
    if (q.cols() % num_heads != 0 || q.cols() == 0)
        throw ShapeError("attention: query width " + std::to_string(q.cols()) + " is not a multiple of " +
                         std::to_string(num_heads) + " heads");
    const Eigen::Index d = q.cols() / num_heads;
    const Eigen::Index sq = q.rows(), sk = k.rows();
    if (k.cols() != d * num_kv_heads || v.cols() != d * num_kv_heads || v.rows() != sk)
        throw ShapeError("attention: key [" + std::to_string(sk) + ", " + std::to_string(k.cols()) + "] / value [" +
                         std::to_string(v.rows()) + ", " + std::to_string(v.cols()) + "] do not match " +
                         std::to_string(num_kv_heads) + " kv heads of dim " + std::to_string(d));
    if (out.rows() != sq || out.cols() != q.cols())
        throw ShapeError("attention: output is [" + std::to_string(out.rows()) + ", " + std::to_string(out.cols()) +
                         "], expected [" + std::to_string(sq) + ", " + std::to_string(q.cols()) + "]");
    if (sq == 0) return;
    if (sk == 0) {
        out.setZero();
        return;
    }
    const int group = num_heads / num_kv_heads;
    if (!additive_mask && sq >= detail::kGemmQueryRows)
        detail::attention_by_gemm(pool, q, k, v, num_kv_heads, group, d, out);
    else
        detail::attention_by_head(pool, q, k, v, num_heads, group, d, additive_mask, out);
}

}  // namespace fusionlm
