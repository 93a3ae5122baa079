#pragma once
// The two ways of feeding images to a decoder, built on equal footing from random weights, with the
// analytic costs that tell them apart. One CLIP ViT and one Llama decoder (same self-attention layers,
// embedding, final norm and lm_head in every model); only the fusion differs:
//   cross attention: FusionModel<ClipViT, GatedCrossAttention, Decoder<Mlp>>: one Mllama-style
//                    cross-attention layer (q/k/v/o, q_norm/k_norm, tanh gates, MLP) after every 4
//                    self-attention layers; each image is one (image, tile) entry of the mask and takes
//                    one marker token in the prompt; its K/V are computed once, at attach.
//   early fusion:    FusionModel<ClipViT, EarlyFusion<MlpProjector>, Decoder<Mlp>>: LLaVA-style, each
//                    image's features (class token dropped) spliced at its image tokens in the prompt.
// Each with Mlp = DenseMlp or MoeMlp (8 experts, top-2, expert intermediate = MLP / 2, so a token's
// active MLP parameters equal the dense MLP's). fusionlm-compare and the Fusion/ benchmarks are built on it:
//   RandomWeights w(comparison_weights_options());
//   const ComparisonShapes s = ComparisonShapes::standard();
//   const ComparisonText text = bind_comparison_text(w, s);
//   const ClipViT vit = bind_comparison_tower(w, s, 336);
//   const auto cross = make_cross_attention_model<MoeMlp>(text, s, vit);
//   const auto early = make_early_fusion_model<MoeMlp>(text, s, vit);
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../fusion/cross_attention.hpp"
#include "../fusion/early_fusion.hpp"
#include "../fusion/mlp_projector.hpp"
#include "../fusion_model.hpp"
#include "../io/config.hpp"
#include "../io/random_weights.hpp"
#include "../ops/activation.hpp"
#include "../ops/linear.hpp"
#include "../text_model/decoder.hpp"
#include "../text_model/mlp.hpp"
#include "../text_model/moe.hpp"
#include "../vision/clip_vit.hpp"
#include "llama.hpp"
#include "mllama.hpp"

namespace fusionlm {

struct ComparisonShapes {
    ClipVisionConfig vision;  // image_size is chosen per tower (bind_comparison_tower)
    std::int64_t hidden = 0, layers = 0, heads = 0, kv_heads = 0, intermediate = 0, vocab = 0;
    std::int64_t experts = 8, top_k = 2;

    std::int64_t head_dim() const { return hidden / heads; }
    std::int64_t q_dim() const { return heads * head_dim(); }
    std::int64_t kv_dim() const { return kv_heads * head_dim(); }
    std::int64_t expert_intermediate() const { return intermediate / top_k; }
    // Mllama's layout: a cross-attention layer after every 4 self-attention layers (slots 3, 8, 13, ...).
    std::int64_t cross_layers() const { return layers / 4; }
    std::vector<std::int64_t> cross_slots() const {
        std::vector<std::int64_t> s;
        for (std::int64_t k = 0; k < cross_layers(); ++k) s.push_back(5 * k + 3);
        return s;
    }

    // Vision: hidden, layers, heads (MLP 4x hidden, patch 14); text: hidden, self-attention layers, heads,
    // KV heads, MLP, vocab.
    static ComparisonShapes make(std::int64_t vision_hidden, std::int64_t vision_layers, std::int64_t vision_heads,
                                 std::int64_t hidden, std::int64_t layers, std::int64_t heads, std::int64_t kv_heads,
                                 std::int64_t intermediate, std::int64_t vocab) {
        ComparisonShapes s;
        s.vision.hidden_size = vision_hidden;
        s.vision.intermediate_size = 4 * vision_hidden;
        s.vision.num_attention_heads = vision_heads;
        s.vision.num_hidden_layers = vision_layers;
        s.vision.patch_size = 14;
        s.hidden = hidden;
        s.layers = layers;
        s.heads = heads;
        s.kv_heads = kv_heads;
        s.intermediate = intermediate;
        s.vocab = vocab;
        return s;
    }
    // fusionlm-compare's size.
    static ComparisonShapes standard() { return make(384, 6, 6, 512, 8, 8, 2, 1536, 4096); }
    // Half the standard widths and depths (4 self-attention layers, 1 cross-attention layer): the
    // benchmark grid's longest prompts (four 448 px images spliced into 1024 text tokens: 5120 tokens,
    // attention-bound) then take seconds, and its 144 points minutes.
    static ComparisonShapes small() { return make(256, 4, 4, 256, 4, 4, 2, 768, 4096); }
    // For tests: the same structure at a size that runs a whole sweep in well under a second.
    static ComparisonShapes tiny() { return make(32, 2, 2, 64, 4, 4, 2, 128, 256); }

    // Sizes the products below divide by or allocate from; a bad one is a ConfigError naming it.
    void check() const {
        const auto positive = [](std::int64_t v, const char* field) {
            if (v <= 0) throw ConfigError("comparison shapes: " + std::string(field) + " " + std::to_string(v) +
                                          " is not positive");
        };
        positive(hidden, "hidden");
        positive(layers, "layers");
        positive(heads, "heads");
        positive(kv_heads, "kv_heads");
        positive(intermediate, "intermediate");
        positive(vocab, "vocab");
        positive(experts, "experts");
        positive(top_k, "top_k");
        if (hidden % heads != 0 || heads % kv_heads != 0)
            throw ConfigError("comparison shapes: hidden " + std::to_string(hidden) + ", heads " + std::to_string(heads) +
                              ", kv_heads " + std::to_string(kv_heads) + " do not split into whole heads and groups");
        if (top_k > experts)
            throw ConfigError("comparison shapes: top_k " + std::to_string(top_k) + " exceeds experts " +
                              std::to_string(experts));
        if (intermediate % top_k != 0)  // each expert's MLP is intermediate / top_k wide
            throw ConfigError("comparison shapes: intermediate " + std::to_string(intermediate) +
                              " is not a multiple of top_k " + std::to_string(top_k));
    }
};

// Where the tower's weights live: under this prefix they share one f32 buffer per shape (the tower is
// compute-bound, so its products cost the same), while the text weights are bf16, each tensor its own
// memory, so decode reads what a real model reads.
inline const std::string kComparisonTowerPrefix = "vision_tower.";

inline RandomWeightsOptions comparison_weights_options() {
    RandomWeightsOptions options;
    options.dtype = DType::BF16;
    options.shared_prefix = kComparisonTowerPrefix;
    return options;
}

// The tower at one image size (image_size / 14 squared patches + the class token), whole-tower output.
inline ClipViT bind_comparison_tower(RandomWeights& w, const ComparisonShapes& s, std::int64_t image_size) {
    ClipVisionConfig c = s.vision;
    c.image_size = image_size;
    return ClipViT::bind(w, c, kComparisonTowerPrefix + "vision_model.", -1);
}

template <class Mlp>
using CrossAttentionVlm = FusionModel<ClipViT, GatedCrossAttention, Decoder<Mlp>>;
template <class Mlp>
using EarlyFusionVlm = FusionModel<ClipViT, EarlyFusion<MlpProjector>, Decoder<Mlp>>;

// Everything but the vision tower and the early-fusion wrapper, bound once: both strategies and both MLP
// kinds use the same self-attention layers, embedding, final norm and lm_head.
struct ComparisonText {
    DecoderConfig self_config, cross_config;
    std::vector<DecoderLayer<DenseMlp>> dense;
    std::vector<DecoderLayer<MoeMlp>> moe;  // the dense layers' attention and norms, MoE MLPs
    TensorView embed;                        // [vocab + 8, hidden]: the image token (id vocab) lives past the vocabulary
    std::vector<float> norm;
    Linear lm_head;
    Linear cross_projector;
    std::vector<CrossAttentionLayer> cross_layers;
    std::optional<MlpProjector> early_projector;

    template <class Mlp>
    const std::vector<DecoderLayer<Mlp>>& self_layers() const {
        if constexpr (std::is_same_v<Mlp, MoeMlp>) return moe;
        else return dense;
    }
};

inline ComparisonText bind_comparison_text(RandomWeights& w, const ComparisonShapes& s) {
    s.check();
    const std::string text = "language_model.model.";
    ComparisonText t;
    DecoderConfig c;
    c.hidden_size = s.hidden;
    c.num_layers = s.layers;
    c.num_heads = s.heads;
    c.num_kv_heads = s.kv_heads;
    c.head_dim = s.head_dim();
    c.rope_theta = 500000.0;
    t.self_config = c;
    t.cross_config = c;
    t.cross_config.num_layers = s.layers + s.cross_layers();
    const AttentionShape shape = c.attention();
    const std::int64_t H = s.hidden, I = s.intermediate, V = s.vision.hidden_size;

    for (std::int64_t i = 0; i < s.layers; ++i) {
        const std::string p = text + "layers." + std::to_string(i) + ".";
        t.dense.push_back(bind_dense_layer(w, p, shape, I, Activation::Silu));
        std::vector<DenseMlp> experts;
        for (std::int64_t e = 0; e < s.experts; ++e)
            experts.push_back(bind_dense_mlp(w, p + "mlp.experts." + std::to_string(e) + ".", H,
                                             s.expert_intermediate(), Activation::Silu));
        const DecoderLayer<DenseMlp>& d = t.dense.back();
        t.moe.push_back(DecoderLayer<MoeMlp>{d.input_layernorm, d.self_attn, d.post_attention_layernorm,
                                             MoeMlp(bind_linear(w, p + "mlp.gate", s.experts, H), std::move(experts),
                                                    int(s.top_k), /*norm_topk_prob=*/true)});
    }
    for (std::int64_t slot : s.cross_slots()) {
        CrossAttentionLayer layer = bind_cross_attention_layer(w, text + "cross_layers." + std::to_string(slot) + ".",
                                                               shape, I, Activation::Silu);
        // Open gates: a closed gate (0, as Mllama initialises it) would still cost the same.
        layer.attn_gate = layer.mlp_gate = 1.0f;
        t.cross_layers.push_back(std::move(layer));
    }
    t.embed = w.require(text + "embed_tokens.weight", {s.vocab + 8, H});
    t.norm = w.require_f32(text + "norm.weight", {H});
    t.lm_head = bind_linear(w, "language_model.lm_head", s.vocab, H);
    t.cross_projector = bind_linear(w, "cross.multi_modal_projector", H, V, /*bias=*/true);
    t.early_projector.emplace(bind_linear(w, "early.multi_modal_projector.linear_1", H, V, true), Activation::Gelu,
                              bind_linear(w, "early.multi_modal_projector.linear_2", H, H, true));
    return t;
}

template <class Mlp>
CrossAttentionVlm<Mlp> make_cross_attention_model(const ComparisonText& t, const ComparisonShapes& s,
                                                  const ClipViT& vit) {
    const std::vector<std::int64_t> slots = s.cross_slots();
    std::vector<std::optional<DecoderLayer<Mlp>>> layers(std::size_t(t.cross_config.num_layers));
    std::size_t next = 0;
    for (std::size_t i = 0; i < layers.size(); ++i)
        if (std::find(slots.begin(), slots.end(), std::int64_t(i)) == slots.end())
            layers[i] = t.self_layers<Mlp>()[next++];
    GatedCrossAttention fusion(t.cross_config.attention(), t.cross_config.rms_norm_eps, t.cross_projector, slots,
                               t.cross_layers);
    return CrossAttentionVlm<Mlp>(vit, std::move(fusion),
                                  Decoder<Mlp>(t.cross_config, t.embed, std::move(layers), t.norm, t.lm_head));
}

template <class Mlp>
EarlyFusionVlm<Mlp> make_early_fusion_model(const ComparisonText& t, const ComparisonShapes& s, const ClipViT& vit) {
    std::vector<std::optional<DecoderLayer<Mlp>>> layers;
    for (const auto& l : t.self_layers<Mlp>()) layers.emplace_back(l);
    EarlyFusion<MlpProjector> fusion(*t.early_projector, /*image_token_id=*/s.vocab, s.hidden, vit.tokens(),
                                     /*drop_class_token=*/true);
    return EarlyFusionVlm<Mlp>(vit, std::move(fusion),
                               Decoder<Mlp>(t.self_config, t.embed, std::move(layers), t.norm, t.lm_head));
}

// ---------------------------------------------------------------- workload

// The prompt as each strategy lays it out, `text` text tokens in both: BOS, the images, then text.
// Early fusion: tokens_per_image image tokens per image; cross attention: one marker per image, and a
// mask where each token sees the images whose marker it follows (as MllamaProcessor builds it).
struct ComparisonPrompt {
    std::vector<std::int64_t> ids;
    std::int64_t images = 0;
    std::vector<std::int64_t> cross_mask;  // [seq, images]; empty for early fusion

    std::int64_t seq() const { return std::int64_t(ids.size()); }
    TokenBatch tokens() const { return TokenBatch{1, seq(), ids, {}, {}}; }
    // Each image one (image, tile) entry.
    CrossAttentionMask cross_attention_mask() const { return CrossAttentionMask{1, seq(), images, 1, cross_mask}; }
};

// What a fusion policy's attach takes to place a prompt's images: cross-attention reads them through the
// prompt's mask, early fusion splices them in at its image tokens.
inline CrossAttentionMask image_placement(const GatedCrossAttention&, const ComparisonPrompt& p) {
    return p.cross_attention_mask();
}
template <class Projector>
TokenBatch image_placement(const EarlyFusion<Projector>&, const ComparisonPrompt& p) {
    return p.tokens();
}

inline ComparisonPrompt make_comparison_prompt(const ComparisonShapes& s, std::int64_t text, std::int64_t images,
                                               std::int64_t tokens_per_image, bool cross_attention) {
    ComparisonPrompt p;
    p.images = images;
    p.ids.push_back(1);
    p.ids.insert(p.ids.end(), std::size_t(images * tokens_per_image), s.vocab);
    for (std::int64_t i = 1; i < text; ++i) p.ids.push_back((i * 7919 + 11) % s.vocab);
    if (cross_attention) {
        const std::int64_t seq = p.seq();
        p.cross_mask.assign(std::size_t(seq * images), 0);
        for (std::int64_t t = 0; t < seq; ++t)
            for (std::int64_t i = 0; i < images; ++i) p.cross_mask[std::size_t(t * images + i)] = t >= 1 + i ? 1 : 0;
    }
    return p;
}

// Distinct deterministic pixels per seed, roughly the range of normalised CLIP inputs.
inline std::vector<float> comparison_pixels(std::size_t n, std::uint32_t seed) {
    std::vector<float> v(n);
    std::uint32_t x = seed * 2654435761u + 12345u;
    for (float& p : v) {
        x = x * 1664525u + 1013904223u;
        p = float(x >> 8) * 0x1p-24f * 4.0f - 2.0f;
    }
    return v;
}

// ---------------------------------------------------------------- bytes

// Cached self-attention keys and values (rows in use, f32).
inline std::size_t kv_cache_bytes(const DecoderState& st) {
    std::size_t n = 0;
    for (const auto& layer : st.kv)
        for (const auto& c : layer) n += std::size_t(c.size() * c.kv_dim()) * 2 * sizeof(float);
    return n;
}

inline std::size_t matrix_bytes(const RowMatrix& m) { return std::size_t(m.size()) * sizeof(float); }

// The images' keys and values in the cross-attention layers.
inline std::size_t cross_kv_bytes(const GatedCrossAttention::State& st) {
    std::size_t n = 0;
    for (std::size_t j = 0; j < st.keys.size(); ++j)
        for (std::size_t b = 0; b < st.keys[j].size(); ++b) n += matrix_bytes(st.keys[j][b]) + matrix_bytes(st.values[j][b]);
    return n;
}
inline std::size_t cross_kv_bytes(const EarlyFusion<MlpProjector>::State&) { return 0; }

// Everything the fusion state keeps for the session.
inline std::size_t fusion_state_bytes(const GatedCrossAttention::State& st) {
    std::size_t n = cross_kv_bytes(st) + st.tile_mask.size();
    for (const auto& x : st.cross_states) n += matrix_bytes(x);
    return n;
}
inline std::size_t fusion_state_bytes(const EarlyFusion<MlpProjector>::State& st) {
    std::size_t n = 0;
    for (const auto& x : st.image_embeds) n += matrix_bytes(x);
    return n;
}

// Peak bytes of the f32 activations the decoder's forward over an n-token prompt (batch 1, empty cache)
// holds at once. Analytic, from the buffers decoder.hpp, text_model/ and fusion/cross_attention.hpp
// allocate, not measured. Held through every layer: h, normed, delta [n, hidden] and the causal mask
// [n, n]. On top, the largest block's own:
//   self-attention  q, k, v, out; one [64, n] score panel per busy thread (ops/attention.hpp)
//   dense MLP       gate, up [n, intermediate]
//   MoE MLP         router logits [n, experts]; gathered tokens, expert output [m, hidden]; expert gate,
//                   up [m, expert intermediate], with m = n (bound: one expert takes every token)
//   cross-attention normed, out [n, hidden]; q, attention [n, q_dim]; mask [n, vision tokens]; row mask
//                   [n]; then the larger of the score panels [64, vision tokens] and its MLP's gate, up
// The lm_head's [1, vocab] logits come after the layers, with h down to its last row. Integer routing
// and position arrays and the GEMM's packing buffers (bounded, whatever n) are not counted.
template <class Mlp>
std::size_t prefill_activation_bytes(const ComparisonShapes& s, std::int64_t n, std::int64_t cross_layers,
                                     std::int64_t vision_tokens, int threads) {
    const std::int64_t H = s.hidden, Q = s.q_dim(), KV = s.kv_dim();
    const auto panels = [&](std::int64_t keys) {
        const std::int64_t rows = std::min<std::int64_t>(64, n), units = s.heads * ((n + 63) / 64);
        return std::min<std::int64_t>(threads, units) * rows * keys;
    };
    const std::int64_t held = 3 * n * H + n * n;
    std::int64_t block = 2 * n * Q + 2 * n * KV + panels(n);
    if constexpr (std::is_same_v<Mlp, MoeMlp>)
        block = std::max(block, n * s.experts + 2 * n * H + 2 * n * s.expert_intermediate());
    else
        block = std::max(block, 2 * n * s.intermediate);
    if (cross_layers > 0)
        block = std::max(block, n * (2 * H + 2 * Q + vision_tokens + 1) +
                                    std::max(panels(vision_tokens), 2 * n * s.intermediate));
    const std::int64_t head = 2 * n * H + n * n + H + s.vocab;
    return std::size_t(std::max(held + block, head)) * sizeof(float);
}

// ---------------------------------------------------------------- FLOPs

// Weight elements one token multiplies with in a self-attention layer (its MLP's active part) and in a
// cross-attention layer (q, o and its dense MLP; k and v ran on the image at attach).
template <class Mlp>
double self_layer_params(const ComparisonShapes& s) {
    const double H = double(s.hidden), q = double(s.q_dim()), kv = double(s.kv_dim());
    const double mlp = std::is_same_v<Mlp, MoeMlp>
                           ? H * double(s.experts) + double(s.top_k) * 3 * H * double(s.expert_intermediate())
                           : 3 * H * double(s.intermediate);
    return 2 * H * q + 2 * H * kv + mlp;
}
inline double cross_layer_params(const ComparisonShapes& s) {
    return 2 * double(s.hidden) * double(s.q_dim()) + 3 * double(s.hidden) * double(s.intermediate);
}

// Matrix-product FLOPs (2 per multiply-add) of the prompt: n new tokens, no cache before them, the
// logits of the last token only. Attention costs 4 * q_dim per (token, key): QK^T and AV. Early fusion
// passes cross_layers = vision_tokens = 0 (its projector runs at attach).
template <class Mlp>
double prefill_flops(const ComparisonShapes& s, std::int64_t n, std::int64_t cross_layers, std::int64_t vision_tokens) {
    const double N = double(n), q = double(s.q_dim());
    const double self_layer = 2 * N * self_layer_params<Mlp>(s) + 4 * q * N * (N + 1) / 2;  // causal
    const double cross_layer = 2 * N * cross_layer_params(s) + 4 * q * N * double(vision_tokens);
    return double(s.layers) * self_layer + double(cross_layers) * cross_layer + 2 * double(s.hidden * s.vocab);
}

// One decode token after `past` cached ones: FLOPs and weight bytes read (bf16). The cache is read on top.
struct DecodeCost {
    double flops = 0, weight_bytes = 0;
};

template <class Mlp>
DecodeCost decode_cost(const ComparisonShapes& s, double past, std::int64_t cross_layers, std::int64_t vision_tokens) {
    const double q = double(s.q_dim()), C = double(cross_layers), L = double(s.layers);
    const double head = double(s.hidden * s.vocab);
    const double flops = L * (2 * self_layer_params<Mlp>(s) + 4 * q * (past + 1)) +
                         C * (2 * cross_layer_params(s) + 4 * q * double(vision_tokens)) + 2 * head;
    const double params = L * self_layer_params<Mlp>(s) + C * cross_layer_params(s) + head;
    return {flops, 2 * params};
}

}  // namespace fusionlm
