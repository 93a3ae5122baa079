#pragma once
// Gated cross-attention fusion (Llama 3.2 Vision): image features are projected to the text width and
// enter the decoder through whole layers placed at given depths. Those layers have no self-attention:
//   h += tanh(attn_gate) * xattn(rmsnorm(h), image)
//   h += tanh(mlp_gate) * row_mask * mlp(rmsnorm(h))
// Their keys and values depend only on the images, so they are computed once when the images are
// attached and reused for every prompt chunk and generated token.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../ops/attention.hpp"
#include "../ops/linear.hpp"
#include "../ops/norm.hpp"
#include "../text_model/attention.hpp"
#include "../text_model/decoder.hpp"
#include "../text_model/mlp.hpp"

namespace fusionlm {

struct CrossAttentionLayer {
    std::vector<float> input_layernorm;  // [hidden]
    Linear q_proj;                       // [heads * head_dim, hidden]
    Linear k_proj;                       // [kv_heads * head_dim, hidden]
    Linear v_proj;                       // [kv_heads * head_dim, hidden]
    Linear o_proj;                       // [hidden, heads * head_dim]
    std::vector<float> q_norm;           // [head_dim], RMSNorm per query head
    std::vector<float> k_norm;           // [head_dim], RMSNorm per key head
    float attn_gate = 0.f;               // raw gate; tanh is applied
    std::vector<float> post_attention_layernorm;  // [hidden]
    float mlp_gate = 0.f;
    DenseMlp mlp;
};

// Which vision tokens each text token may attend to, at tile granularity, as MllamaProcessor builds it:
// values[(b * seq + s) * images * tiles + i * tiles + t] = 1 when token s of item b sees tile t of image i.
struct CrossAttentionMask {
    std::int64_t batch = 0;
    std::int64_t seq = 0;
    std::int64_t images = 0;
    std::int64_t tiles = 0;
    std::span<const std::int64_t> values;
};

class GatedCrossAttention {
public:
    struct State {
        bool attached = false;
        std::int64_t batch = 0;
        std::int64_t vision_tokens = 0;   // per item: images * tiles * tokens_per_tile
        std::int64_t tokens_per_tile = 0;
        std::int64_t entries = 0;         // images * tiles
        std::int64_t prompt_len = 0;      // rows of the mask; later tokens reuse the last row
        std::vector<std::uint8_t> tile_mask;  // [batch, prompt_len, entries]
        std::vector<RowMatrix> cross_states;  // [item]: projected vision tokens [vision_tokens, hidden]
        std::vector<std::vector<RowMatrix>> keys, values;  // [cross layer][item]: [vision_tokens, kv_dim]
    };

    // layer_indices[j] is the decoder slot of layers[j]; projector maps vision features to hidden.
    GatedCrossAttention(AttentionShape shape, float rms_norm_eps, Linear projector,
                        std::vector<std::int64_t> layer_indices, std::vector<CrossAttentionLayer> layers)
        : shape_(shape), eps_(rms_norm_eps), projector_(std::move(projector)),
          indices_(std::move(layer_indices)), layers_(std::move(layers)) {
        if (indices_.size() != layers_.size())
            throw ConfigError("cross_attention_layers: " + std::to_string(indices_.size()) + " indices for " +
                              std::to_string(layers_.size()) + " layers");
        if (projector_.out_features() != shape_.hidden_size)
            throw ShapeError("tensor '" + projector_.weight.name + "': shape " + shape_str(projector_.weight.shape) +
                             ", expected [" + std::to_string(shape_.hidden_size) + ", vision_output_dim]");
        if (!projector_.bias.empty() && std::int64_t(projector_.bias.size()) != shape_.hidden_size)
            throw ShapeError("bias of '" + projector_.weight.name + "': " + std::to_string(projector_.bias.size()) +
                             " values, expected " + std::to_string(shape_.hidden_size));
        for (const auto& l : layers_) check(l);
    }

    const std::vector<std::int64_t>& layer_indices() const { return indices_; }
    std::int64_t vision_dim() const { return projector_.in_features(); }
    const AttentionShape& shape() const { return shape_; }

    State new_state(std::int64_t batch) const {
        State st;
        st.batch = batch;
        return st;
    }

    // vision[b]: every image slot of item b encoded and concatenated, [images * tiles * tokens_per_tile,
    // vision_dim]. Projects them, computes every cross-attention layer's keys and values, and keeps the mask.
    void attach(ThreadPool& pool, State& st, std::span<const RowMatrix> vision, const CrossAttentionMask& mask) const {
        if (std::int64_t(vision.size()) != st.batch || mask.batch != st.batch)
            throw InputError("cross-attention: " + std::to_string(vision.size()) + " image sets and a mask for batch " +
                             std::to_string(mask.batch) + ", but the session has batch " + std::to_string(st.batch));
        if (mask.seq <= 0 || mask.images <= 0 || mask.tiles <= 0 ||
            std::int64_t(mask.values.size()) != mask.batch * mask.seq * mask.images * mask.tiles)
            throw InputError("cross_attention_mask: " + std::to_string(mask.values.size()) + " values for shape [" +
                             std::to_string(mask.batch) + ", " + std::to_string(mask.seq) + ", " +
                             std::to_string(mask.images) + ", " + std::to_string(mask.tiles) + "]");
        const std::int64_t entries = mask.images * mask.tiles;
        const std::int64_t rows = vision.empty() ? 0 : vision[0].rows();
        if (rows <= 0 || rows % entries != 0)
            throw InputError("cross-attention: " + std::to_string(rows) + " vision tokens per item do not split into " +
                             std::to_string(entries) + " (image, tile) entries");
        for (const auto& v : vision)
            if (v.rows() != rows || v.cols() != vision_dim())
                throw InputError("cross-attention: vision features [" + std::to_string(v.rows()) + ", " +
                                 std::to_string(v.cols()) + "], expected [" + std::to_string(rows) + ", " +
                                 std::to_string(vision_dim()) + "]");

        st.tile_mask.resize(mask.values.size());
        for (std::size_t i = 0; i < mask.values.size(); ++i) {
            const auto m = mask.values[i];
            if (m != 0 && m != 1)
                throw InputError("cross_attention_mask: value " + std::to_string(m) + " is not 0 or 1");
            st.tile_mask[i] = std::uint8_t(m);
        }
        st.vision_tokens = rows;
        st.entries = entries;
        st.tokens_per_tile = rows / entries;
        st.prompt_len = mask.seq;
        st.cross_states.assign(std::size_t(st.batch), RowMatrix());
        st.keys.assign(layers_.size(), std::vector<RowMatrix>(std::size_t(st.batch)));
        st.values.assign(layers_.size(), std::vector<RowMatrix>(std::size_t(st.batch)));
        for (std::int64_t b = 0; b < st.batch; ++b) {
            RowMatrix& x = st.cross_states[std::size_t(b)];
            x.resize(Eigen::Index(rows), Eigen::Index(shape_.hidden_size));
            linear(pool, vision[std::size_t(b)], projector_, x);
            for (std::size_t j = 0; j < layers_.size(); ++j) {
                const auto& l = layers_[j];
                RowMatrix& k = st.keys[j][std::size_t(b)];
                RowMatrix& v = st.values[j][std::size_t(b)];
                k.resize(x.rows(), Eigen::Index(shape_.kv_dim()));
                v.resize(x.rows(), Eigen::Index(shape_.kv_dim()));
                linear(pool, x, l.k_proj, k);
                linear(pool, x, l.v_proj, v);
                norm_heads(k, l.k_norm);
            }
        }
        st.attached = true;
    }

    // full_text_row_masked_out_mask of token t of item b: 0 when the token sees no tile at all.
    bool row_sees_image(const State& st, std::int64_t b, std::int64_t t) const {
        const std::uint8_t* row = mask_row(st, b, t);
        return std::any_of(row, row + st.entries, [](std::uint8_t m) { return m != 0; });
    }

    // --- the decoder seam ---
    void embed(ThreadPool&, State&, const DecoderStep&, std::span<const std::int64_t>, Eigen::Ref<RowMatrix>) const {}

    bool owns_layer(std::int64_t i) const { return slot(i) >= 0; }

    // Without images the layer is skipped, as the reference does for text-only prompts.
    void forward_layer(std::int64_t i, ThreadPool& pool, State& st, const DecoderStep& step,
                       Eigen::Ref<RowMatrix> h) const {
        if (!st.attached) return;
        if (step.batch != st.batch)
            throw InputError("cross-attention: step of batch " + std::to_string(step.batch) + ", images attached for " +
                             std::to_string(st.batch));
        const std::size_t j = std::size_t(slot(i));
        const CrossAttentionLayer& l = layers_[j];
        const Eigen::Index n = h.rows(), hidden = Eigen::Index(shape_.hidden_size);

        RowMatrix normed(n, hidden), q(n, Eigen::Index(shape_.q_dim()));
        rms_norm(h, l.input_layernorm.data(), eps_, normed);
        linear(pool, normed, l.q_proj, q);
        norm_heads(q, l.q_norm);

        RowMatrix attn(n, Eigen::Index(shape_.q_dim()));
        std::vector<float> row_mask(static_cast<std::size_t>(n));
        RowMatrix mask(Eigen::Index(step.seq), Eigen::Index(st.vision_tokens));
        for (std::int64_t b = 0; b < step.batch; ++b) {
            for (std::int64_t s = 0; s < step.seq; ++s)
                row_mask[std::size_t(b * step.seq + s)] =
                    fill_mask_row(st, b, step.past + s, mask.row(Eigen::Index(s)).data()) ? 1.f : 0.f;
            const Eigen::Index r0 = Eigen::Index(b * step.seq), rows = Eigen::Index(step.seq);
            attention(pool, q.middleRows(r0, rows), st.keys[j][std::size_t(b)], st.values[j][std::size_t(b)],
                      int(shape_.num_heads), int(shape_.num_kv_heads), mask.data(), attn.middleRows(r0, rows));
        }
        RowMatrix out(n, hidden);
        linear(pool, attn, l.o_proj, out);
        h += std::tanh(l.attn_gate) * out;

        rms_norm(h, l.post_attention_layernorm.data(), eps_, normed);
        l.mlp.forward(pool, normed, out, nullptr);
        const float gate = std::tanh(l.mlp_gate);
        for (Eigen::Index r = 0; r < n; ++r) h.row(r) += (gate * row_mask[std::size_t(r)]) * out.row(r);
    }

private:
    std::int64_t slot(std::int64_t i) const {
        for (std::size_t j = 0; j < indices_.size(); ++j)
            if (indices_[j] == i) return std::int64_t(j);
        return -1;
    }

    // Token t's row of the tile mask; tokens past the prompt reuse its last row, as generation does.
    const std::uint8_t* mask_row(const State& st, std::int64_t b, std::int64_t t) const {
        const std::int64_t row = std::min(t, st.prompt_len - 1);
        return st.tile_mask.data() + std::size_t((b * st.prompt_len + row) * st.entries);
    }

    // Writes token t's additive mask over the vision tokens (each tile entry repeated tokens_per_tile
    // times; lowest float where masked, as the reference adds finfo.min). A row that sees no tile gets
    // no mask at all: the reference zeroes such rows, so they attend to every vision token. Returns
    // whether the row sees any tile.
    bool fill_mask_row(const State& st, std::int64_t b, std::int64_t t, float* out) const {
        const std::uint8_t* row = mask_row(st, b, t);
        const bool any = std::any_of(row, row + st.entries, [](std::uint8_t m) { return m != 0; });
        constexpr float masked = std::numeric_limits<float>::lowest();
        for (std::int64_t e = 0; e < st.entries; ++e)
            std::fill_n(out + e * st.tokens_per_tile, st.tokens_per_tile, (!any || row[e]) ? 0.f : masked);
        return any;
    }

    // RMSNorm over head_dim, per head of x [rows, heads * head_dim].
    void norm_heads(RowMatrix& x, const std::vector<float>& w) const {
        const Eigen::Index d = Eigen::Index(shape_.head_dim);
        RowMap heads(x.data(), x.size() / d, d);
        rms_norm(heads, w.data(), eps_, heads);
    }

    void check(const CrossAttentionLayer& l) const {
        SelfAttention projections;
        projections.q_proj = l.q_proj;
        projections.k_proj = l.k_proj;
        projections.v_proj = l.v_proj;
        projections.o_proj = l.o_proj;
        projections.check(shape_);
        const auto expect = [&](const std::vector<float>& w, std::int64_t n, const char* what) {
            if (std::int64_t(w.size()) != n)
                throw ShapeError(std::string(what) + " of cross-attention layer '" + l.q_proj.weight.name + "': " +
                                 std::to_string(w.size()) + " weights, expected " + std::to_string(n));
        };
        expect(l.input_layernorm, shape_.hidden_size, "input_layernorm");
        expect(l.post_attention_layernorm, shape_.hidden_size, "post_attention_layernorm");
        expect(l.q_norm, shape_.head_dim, "q_norm");
        expect(l.k_norm, shape_.head_dim, "k_norm");
        if (l.mlp.hidden_size() != shape_.hidden_size)
            throw ShapeError("mlp of cross-attention layer '" + l.q_proj.weight.name + "': hidden size " +
                             std::to_string(l.mlp.hidden_size()) + ", expected " + std::to_string(shape_.hidden_size));
    }

    AttentionShape shape_;
    float eps_;
    Linear projector_;  // multi_modal_projector: [hidden, vision_output_dim] + bias
    std::vector<std::int64_t> indices_;
    std::vector<CrossAttentionLayer> layers_;
};

}  // namespace fusionlm
