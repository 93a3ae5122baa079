#pragma once
// Causal self-attention of a decoder block with its KV cache: q/k/v projections (optional biases,
// optional RMSNorm over the whole q and k projections), RoPE, grouped-query attention, o_proj.
#include <Eigen/Core>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../ops/attention.hpp"
#include "../ops/kv_cache.hpp"
#include "../ops/linear.hpp"
#include "../ops/norm.hpp"
#include "../ops/rope.hpp"

namespace fusionlm {

// Sizes shared by every attention block of one decoder.
struct AttentionShape {
    std::int64_t hidden_size = 0;
    std::int64_t num_heads = 0;
    std::int64_t num_kv_heads = 0;
    std::int64_t head_dim = 0;
    std::int64_t q_dim() const { return num_heads * head_dim; }
    std::int64_t kv_dim() const { return num_kv_heads * head_dim; }
};

// Where each batch item's rows sit in a [batch * seq, ...] activation and which keys each item sees.
// Items are left padded to a common length, so item b owns rows [b * seq, (b + 1) * seq).
struct AttentionBatch {
    std::int64_t batch = 0;
    std::int64_t seq = 0;
    std::span<const std::int64_t> positions;  // [batch * seq]: RoPE positions
    std::span<const RowMatrix> masks;         // [batch]: additive [seq, past + seq] masks
};

struct SelfAttention {
    Linear q_proj;  // [heads * head_dim, hidden] (+ bias for Qwen2)
    Linear k_proj;  // [kv_heads * head_dim, hidden]
    Linear v_proj;  // [kv_heads * head_dim, hidden]
    Linear o_proj;  // [hidden, heads * head_dim]
    std::vector<float> q_norm;  // OLMoE: RMSNorm over all of q ([heads * head_dim]); empty = none
    std::vector<float> k_norm;  // OLMoE: RMSNorm over all of k ([kv_heads * head_dim]); empty = none
    float clip_qkv = 0.0f;      // OLMoE: clamp q, k, v to [-clip_qkv, clip_qkv] after the norms; 0 = none

    void check(const AttentionShape& s) const {
        expect(q_proj, s.q_dim(), s.hidden_size);
        expect(k_proj, s.kv_dim(), s.hidden_size);
        expect(v_proj, s.kv_dim(), s.hidden_size);
        expect(o_proj, s.hidden_size, s.q_dim());
        if (!q_norm.empty() && std::int64_t(q_norm.size()) != s.q_dim())
            throw ShapeError("q_norm of '" + q_proj.weight.name + "': " + std::to_string(q_norm.size()) +
                             " weights, expected " + std::to_string(s.q_dim()));
        if (!k_norm.empty() && std::int64_t(k_norm.size()) != s.kv_dim())
            throw ShapeError("k_norm of '" + k_proj.weight.name + "': " + std::to_string(k_norm.size()) +
                             " weights, expected " + std::to_string(s.kv_dim()));
    }

    // x: normed hidden states [batch * seq, hidden]; caches[b] receives item b's new keys and values;
    // y: [batch * seq, hidden] attention output after o_proj.
    void forward(ThreadPool& pool, const AttentionShape& s, const Rope& rope, float norm_eps,
                 const Eigen::Ref<const RowMatrix>& x, const AttentionBatch& batch, std::span<KvCache> caches,
                 Eigen::Ref<RowMatrix> y) const {
        const Eigen::Index n = x.rows();
        // Per-thread buffers kept from layer to layer (see DenseMlp::forward).
        thread_local RowMatrix q, k, v, out;
        q.resize(n, s.q_dim());
        k.resize(n, s.kv_dim());
        v.resize(n, s.kv_dim());
        linear(pool, x, q_proj, q);
        linear(pool, x, k_proj, k);
        linear(pool, x, v_proj, v);
        if (!q_norm.empty()) rms_norm(q, q_norm.data(), norm_eps, q);
        if (!k_norm.empty()) rms_norm(k, k_norm.data(), norm_eps, k);
        if (clip_qkv > 0.0f)
            for (RowMatrix* m : {&q, &k, &v}) *m = m->cwiseMax(-clip_qkv).cwiseMin(clip_qkv);
        rope.apply(q, int(s.num_heads), batch.positions);
        rope.apply(k, int(s.num_kv_heads), batch.positions);

        out.resize(n, s.q_dim());
        for (std::int64_t b = 0; b < batch.batch; ++b) {
            const Eigen::Index r0 = Eigen::Index(b * batch.seq), rows = Eigen::Index(batch.seq);
            KvCache& cache = caches[std::size_t(b)];
            cache.append(k.middleRows(r0, rows), v.middleRows(r0, rows));
            attention(pool, q.middleRows(r0, rows), cache.keys(), cache.values(), int(s.num_heads),
                      int(s.num_kv_heads), batch.masks[std::size_t(b)].data(), out.middleRows(r0, rows));
        }
        linear(pool, out, o_proj, y);
    }

private:
    static void expect(const Linear& l, std::int64_t out, std::int64_t in) {
        if (l.out_features() != out || l.in_features() != in)
            throw ShapeError("tensor '" + l.weight.name + "': shape " + shape_str(l.weight.shape) + ", expected " +
                             shape_str({out, in}));
    }
};

}  // namespace fusionlm
