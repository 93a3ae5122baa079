#pragma once
// A Llama-family decoder: token embeddings, pre-norm blocks (self-attention + MLP), final norm,
// lm_head. The MLP is a template parameter (DenseMlp, MoeMlp). Some layer slots may be owned by a
// fusion policy (Mllama's cross-attention layers); the decoder only asks the policy, through a small
// seam, to adjust the input embeddings and to run the layers it owns.
#include <Eigen/Core>
#include <concepts>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../ops/attention.hpp"
#include "../ops/embedding.hpp"
#include "../ops/kv_cache.hpp"
#include "../ops/linear.hpp"
#include "../ops/norm.hpp"
#include "../ops/rope.hpp"
#include "attention.hpp"

namespace fusionlm {

struct DecoderConfig {
    std::int64_t hidden_size = 0;
    std::int64_t num_layers = 0;
    std::int64_t num_heads = 0;
    std::int64_t num_kv_heads = 0;
    std::int64_t head_dim = 0;
    float rms_norm_eps = 1e-5f;
    double rope_theta = 10000.0;
    std::optional<RopeScaling> rope_scaling;

    AttentionShape attention() const { return {hidden_size, num_heads, num_kv_heads, head_dim}; }
};

template <class Mlp>
struct DecoderLayer {
    std::vector<float> input_layernorm;           // [hidden]
    SelfAttention self_attn;
    std::vector<float> post_attention_layernorm;  // [hidden]
    Mlp mlp;
};

// A batch of token sequences, all of the same length (shorter ones left padded).
struct TokenBatch {
    std::int64_t batch = 0;
    std::int64_t seq = 0;
    std::span<const std::int64_t> input_ids;       // [batch * seq]
    std::span<const std::int64_t> attention_mask;  // [batch * seq], 1 = token, 0 = padding; empty = all 1
    std::span<const std::int64_t> position_ids;    // [batch * seq]; empty = continue each item's count
};

// What a fusion policy learns about the step it takes part in.
struct DecoderStep {
    std::int64_t batch = 0;
    std::int64_t seq = 0;   // new tokens per item in this call
    std::int64_t past = 0;  // tokens per item already in the cache before this call
};

// Everything that changes while generating; one per conversation, owned by the caller.
struct DecoderState {
    std::int64_t batch = 0;
    std::vector<std::vector<KvCache>> kv;            // [layer][item]; empty for policy-owned slots
    std::vector<std::vector<std::int64_t>> key_mask;  // [item]: attention mask of every cached token
    std::vector<std::int64_t> real_tokens;            // [item]: tokens with mask 1 so far

    std::int64_t length() const { return key_mask.empty() ? 0 : std::int64_t(key_mask.front().size()); }
};

// Intermediate results in Hugging Face's output_hidden_states layout, rows = item * seq + token.
struct DecoderTrace {
    std::vector<RowMatrix> hidden_states;  // [0] embeddings, [i] output of layer i-1, [L] after the final norm
    RowMatrix last_layer_output;           // the last layer's output before the final norm
    std::map<std::int64_t, RowMatrix> router_logits;  // per layer index, for MLPs that route
};

// The seam between the decoder and whatever feeds it images:
// - embed(): may rewrite the token embeddings (early fusion splices image features here);
// - owns_layer(i): the policy provides layer slot i (the decoder has no block there);
// - forward_layer(i): runs that slot on the hidden states in place.
template <class P>
concept FusionPolicy = requires(const P& p, typename P::State& st, ThreadPool& pool, const DecoderStep& step,
                                std::span<const std::int64_t> ids, Eigen::Ref<RowMatrix> h, std::int64_t i) {
    p.embed(pool, st, step, ids, h);
    { p.owns_layer(i) } -> std::convertible_to<bool>;
    p.forward_layer(i, pool, st, step, h);
};

// The policy of a text-only model: it owns nothing.
struct NoFusion {
    struct State {};
    void embed(ThreadPool&, State&, const DecoderStep&, std::span<const std::int64_t>, Eigen::Ref<RowMatrix>) const {}
    bool owns_layer(std::int64_t) const { return false; }
    void forward_layer(std::int64_t, ThreadPool&, State&, const DecoderStep&, Eigen::Ref<RowMatrix>) const {}
};

enum class Logits { All, Last };

template <class Mlp>
class Decoder {
public:
    using Layer = DecoderLayer<Mlp>;

    // embed_tokens: [rows >= vocab, hidden]; layers: one entry per slot, std::nullopt where the fusion policy
    // owns the slot; lm_head: [vocab, hidden].
    Decoder(DecoderConfig config, TensorView embed_tokens, std::vector<std::optional<Layer>> layers,
            std::vector<float> norm, Linear lm_head)
        : config_(std::move(config)), embed_tokens_(std::move(embed_tokens)), layers_(std::move(layers)),
          norm_(std::move(norm)), lm_head_(std::move(lm_head)),
          rope_(int(config_.head_dim), config_.rope_theta, config_.rope_scaling ? &*config_.rope_scaling : nullptr) {
        const auto hidden = config_.hidden_size;
        if (std::int64_t(layers_.size()) != config_.num_layers)
            throw ConfigError("num_hidden_layers: " + std::to_string(config_.num_layers) + " but " +
                              std::to_string(layers_.size()) + " layer slots were bound");
        if (embed_tokens_.shape.size() != 2 || embed_tokens_.shape[1] != hidden)
            throw ShapeError("tensor '" + embed_tokens_.name + "': shape " + shape_str(embed_tokens_.shape) +
                             ", expected [vocab, " + std::to_string(hidden) + "]");
        if (lm_head_.in_features() != hidden)
            throw ShapeError("tensor '" + lm_head_.weight.name + "': shape " + shape_str(lm_head_.weight.shape) +
                             ", expected [vocab, " + std::to_string(hidden) + "]");
        check_norm(norm_, "final norm");
        for (const auto& layer : layers_) {
            if (!layer) continue;
            layer->self_attn.check(config_.attention());
            check_norm(layer->input_layernorm, layer->self_attn.q_proj.weight.name + " input_layernorm");
            check_norm(layer->post_attention_layernorm, layer->self_attn.q_proj.weight.name + " post_attention_layernorm");
        }
    }

    const DecoderConfig& config() const { return config_; }
    const Rope& rope() const { return rope_; }
    std::int64_t vocab_size() const { return lm_head_.out_features(); }
    std::int64_t embedding_rows() const { return embed_tokens_.shape[0]; }
    bool has_layer(std::int64_t i) const { return layers_.at(std::size_t(i)).has_value(); }
    const Layer& layer(std::int64_t i) const { return *layers_.at(std::size_t(i)); }
    const Linear& lm_head() const { return lm_head_; }

    DecoderState new_state(std::int64_t batch, std::int64_t capacity = 64) const {
        DecoderState st;
        st.batch = batch;
        st.kv.resize(layers_.size());
        for (std::size_t l = 0; l < layers_.size(); ++l) {
            if (!layers_[l]) continue;
            st.kv[l].reserve(std::size_t(batch));
            for (std::int64_t b = 0; b < batch; ++b) st.kv[l].emplace_back(config_.attention().kv_dim(), capacity);
        }
        st.key_mask.assign(std::size_t(batch), {});
        st.real_tokens.assign(std::size_t(batch), 0);
        return st;
    }

    // Runs the new tokens through every layer, appending to the caches. Returns logits
    // [batch * seq, vocab] (Logits::All) or [batch, vocab] for each item's last token (Logits::Last).
    template <FusionPolicy Fusion>
    RowMatrix forward(ThreadPool& pool, const TokenBatch& tokens, DecoderState& state, const Fusion& fusion,
                      typename Fusion::State& fusion_state, Logits which, DecoderTrace* trace = nullptr) const {
        validate(tokens, state);
        for (std::size_t i = 0; i < layers_.size(); ++i)
            if (layers_[i].has_value() == fusion.owns_layer(std::int64_t(i)))
                throw ConfigError("decoder layer " + std::to_string(i) + ": " +
                                  (layers_[i] ? "bound as a decoder block and claimed by the fusion policy"
                                              : "neither bound as a decoder block nor provided by the fusion policy"));
        const std::int64_t B = tokens.batch, S = tokens.seq, past = state.length();
        const Eigen::Index n = Eigen::Index(B * S), hidden = Eigen::Index(config_.hidden_size);

        // The policy may reject the tokens (image tokens without images), so it runs before the state grows.
        RowMatrix h(n, hidden);
        embedding_lookup(embed_tokens_, tokens.input_ids, h);
        const DecoderStep step{B, S, past};
        fusion.embed(pool, fusion_state, step, tokens.input_ids, h);

        // Positions and per-item masks; the state's key mask grows before the masks are built so that
        // each item's mask covers its cached and its new keys.
        std::vector<std::int64_t> positions(std::size_t(B * S));
        std::vector<RowMatrix> masks;
        masks.reserve(std::size_t(B));
        for (std::int64_t b = 0; b < B; ++b) {
            auto& key_mask = state.key_mask[std::size_t(b)];
            for (std::int64_t s = 0; s < S; ++s) {
                const std::size_t at = std::size_t(b * S + s);
                const std::int64_t m = tokens.attention_mask.empty() ? 1 : tokens.attention_mask[at];
                // Hugging Face's generate() positions: cumsum(mask) - 1, and 1 on padding.
                positions[at] = tokens.position_ids.empty() ? (m ? state.real_tokens[std::size_t(b)] : 1)
                                                            : tokens.position_ids[at];
                state.real_tokens[std::size_t(b)] += m;
                key_mask.push_back(m);
            }
            masks.push_back(causal_mask(S, past, key_mask));
        }

        if (trace) {
            trace->hidden_states.clear();
            trace->router_logits.clear();
            trace->hidden_states.push_back(h);
        }

        const AttentionBatch batch{B, S, positions, masks};
        RowMatrix normed(n, hidden), delta(n, hidden);
        for (std::int64_t i = 0; i < std::int64_t(layers_.size()); ++i) {
            if (fusion.owns_layer(i)) {
                fusion.forward_layer(i, pool, fusion_state, step, h);
            } else {
                const Layer& layer = *layers_[std::size_t(i)];
                rms_norm(h, layer.input_layernorm.data(), config_.rms_norm_eps, normed);
                layer.self_attn.forward(pool, config_.attention(), rope_, config_.rms_norm_eps, normed, batch,
                                        state.kv[std::size_t(i)], delta);
                h += delta;
                rms_norm(h, layer.post_attention_layernorm.data(), config_.rms_norm_eps, normed);
                RowMatrix router_logits;
                layer.mlp.forward(pool, normed, delta, trace ? &router_logits : nullptr);
                h += delta;
                if (trace && router_logits.size() > 0) trace->router_logits[i] = std::move(router_logits);
            }
            if (trace && i + 1 < std::int64_t(layers_.size())) trace->hidden_states.push_back(h);
        }
        if (trace) trace->last_layer_output = h;

        if (which == Logits::Last) {
            RowMatrix last(Eigen::Index(B), hidden);
            for (std::int64_t b = 0; b < B; ++b) last.row(Eigen::Index(b)) = h.row(Eigen::Index(b * S + S - 1));
            h = std::move(last);
        }
        rms_norm(h, norm_.data(), config_.rms_norm_eps, h);
        if (trace && which == Logits::All) trace->hidden_states.push_back(h);
        RowMatrix logits(h.rows(), Eigen::Index(vocab_size()));
        linear(pool, h, lm_head_, logits);
        return logits;
    }

private:
    void check_norm(const std::vector<float>& w, const std::string& what) const {
        if (std::int64_t(w.size()) != config_.hidden_size)
            throw ShapeError(what + ": " + std::to_string(w.size()) + " weights, expected " +
                             std::to_string(config_.hidden_size));
    }

    void validate(const TokenBatch& t, const DecoderState& state) const {
        if (t.batch <= 0 || t.seq <= 0)
            throw InputError("token batch: empty (batch " + std::to_string(t.batch) + ", seq " +
                             std::to_string(t.seq) + ")");
        const std::size_t n = std::size_t(t.batch * t.seq);
        if (t.input_ids.size() != n)
            throw InputError("input_ids: " + std::to_string(t.input_ids.size()) + " ids for batch " +
                             std::to_string(t.batch) + " x seq " + std::to_string(t.seq));
        if (!t.attention_mask.empty() && t.attention_mask.size() != n)
            throw InputError("attention_mask: " + std::to_string(t.attention_mask.size()) + " entries, expected " +
                             std::to_string(n));
        if (!t.position_ids.empty() && t.position_ids.size() != n)
            throw InputError("position_ids: " + std::to_string(t.position_ids.size()) + " entries, expected " +
                             std::to_string(n));
        for (auto m : t.attention_mask)
            if (m != 0 && m != 1) throw InputError("attention_mask: value " + std::to_string(m) + " is not 0 or 1");
        for (auto p : t.position_ids)
            if (p < 0) throw InputError("position_ids: negative position " + std::to_string(p));
        // Checked here, before the state grows, so a bad id leaves the session usable.
        for (auto id : t.input_ids)
            if (id < 0 || id >= embedding_rows())
                throw InputError("input_ids: token id " + std::to_string(id) + " is outside the " +
                                 std::to_string(embedding_rows()) + " rows of '" + embed_tokens_.name + "'");
        if (state.batch != t.batch || state.kv.size() != layers_.size())
            throw InputError("decoder state was made for batch " + std::to_string(state.batch) + ", got batch " +
                             std::to_string(t.batch));
    }

    DecoderConfig config_;
    TensorView embed_tokens_;                  // [vocab (+ extra rows), hidden]
    std::vector<std::optional<Layer>> layers_;  // [num_layers]; nullopt = owned by the fusion policy
    std::vector<float> norm_;                  // [hidden]
    Linear lm_head_;                           // [vocab, hidden]
    Rope rope_;
};

}  // namespace fusionlm
