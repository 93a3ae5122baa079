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
#include "softmax.hpp"

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
    const float scale_divisor = std::sqrt(float(d));
    // Query blocks keep each head's score panel small enough for the cache (vision: 1601 x 1601 per head).
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
            const Eigen::Index keys = additive_mask ? detail::visible_keys(additive_mask + r0 * sk, rows, sk) : sk;
            scores.resize(rows, keys);
            scores.noalias() = q.block(r0, h * d, rows, d) * k.block(0, j * d, keys, d).transpose();
            scores /= scale_divisor;
            if (additive_mask) scores += ConstRowMap(additive_mask + r0 * sk, rows, sk).leftCols(keys);
            softmax_rows(scores);
            out.block(r0, h * d, rows, d).noalias() = scores * v.block(0, j * d, keys, d);
        }
    });
}

}  // namespace fusionlm
