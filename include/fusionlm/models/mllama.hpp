#pragma once
// Llama 3.2 Vision (Hugging Face MllamaForConditionalGeneration): a tiled ViT whose output enters a
// Llama 3.1 decoder through gated cross-attention layers. This file maps the config and the checkpoint
// names onto the generic modules:
//   vision_model.*                                  -> TiledViT
//   multi_modal_projector.{weight,bias}             -> GatedCrossAttention projector
//   language_model.model.layers.{i}.cross_attn.*    -> GatedCrossAttention layers (i in cross_attention_layers)
//   language_model.model.layers.{i}.self_attn.*     -> Decoder<DenseMlp> blocks (every other i)
//   language_model.model.{embed_tokens,norm}, language_model.lm_head
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../fusion/cross_attention.hpp"
#include "../fusion_model.hpp"
#include "../io/checkpoint.hpp"
#include "../io/config.hpp"
#include "../io/weights.hpp"
#include "../ops/activation.hpp"
#include "../text_model/decoder.hpp"
#include "../text_model/mlp.hpp"
#include "../vision/tiled_vit.hpp"
#include "llama.hpp"

namespace fusionlm {

using MllamaModel = FusionModel<TiledViT, GatedCrossAttention, Decoder<DenseMlp>>;

// One image slot as MllamaImageProcessor lays it out.
struct MllamaImage {
    std::span<const float> pixel_values;             // [max_tiles, channels, tile, tile]
    std::int64_t aspect_ratio_id = 0;                // 0 for an empty slot
    std::span<const std::int64_t> aspect_ratio_mask;  // [max_tiles]
};

// How FusionModel feeds an MllamaImage to the tiled ViT (found by argument-dependent lookup).
inline RowMatrix encode_image(const TiledViT& vit, ThreadPool& pool, const MllamaImage& image,
                              const VisionObserver* observer) {
    return vit.encode(pool, image.pixel_values, image.aspect_ratio_id, image.aspect_ratio_mask,
                      observer ? *observer : VisionObserver{});
}

namespace detail {

inline void mllama_fail(const std::string& field, const std::string& why) {
    throw ConfigError("config.json: text_config." + field + ": " + why);
}

inline DecoderConfig mllama_decoder_config(const MllamaTextConfig& t) {
    if (t.num_attention_heads <= 0 || t.hidden_size % t.num_attention_heads != 0)
        mllama_fail("num_attention_heads", std::to_string(t.num_attention_heads) + " does not divide hidden_size " +
                                               std::to_string(t.hidden_size));
    if (t.num_key_value_heads <= 0 || t.num_attention_heads % t.num_key_value_heads != 0)
        mllama_fail("num_key_value_heads", std::to_string(t.num_key_value_heads) +
                                               " does not divide num_attention_heads " +
                                               std::to_string(t.num_attention_heads));
    DecoderConfig c = text_decoder_config(t);
    c.head_dim = t.hidden_size / t.num_attention_heads;  // not a Mllama key, whatever config.json holds
    return c;
}

inline std::vector<std::int64_t> mllama_cross_layers(const MllamaTextConfig& t) {
    std::vector<std::int64_t> idx(t.cross_attention_layers.begin(), t.cross_attention_layers.end());
    std::vector<std::int64_t> sorted = idx;
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < sorted.size(); ++i) {
        if (sorted[i] < 0 || sorted[i] >= t.num_hidden_layers)
            mllama_fail("cross_attention_layers", std::to_string(sorted[i]) + " is not a layer index (0.." +
                                                      std::to_string(t.num_hidden_layers - 1) + ")");
        if (i && sorted[i] == sorted[i - 1])
            mllama_fail("cross_attention_layers", std::to_string(sorted[i]) + " is listed twice");
    }
    return idx;
}

}  // namespace detail

// One Mllama cross-attention layer; prefix ends with the layer's dot: "language_model.model.layers.3.".
template <class Binder>
CrossAttentionLayer bind_cross_attention_layer(Binder& w, const std::string& prefix, const AttentionShape& shape,
                                               std::int64_t intermediate, Activation act) {
    const std::int64_t H = shape.hidden_size;
    const std::string a = prefix + "cross_attn.";
    return CrossAttentionLayer{
        w.require_f32(prefix + "input_layernorm.weight", {H}),
        bind_linear(w, a + "q_proj", shape.q_dim(), H),
        bind_linear(w, a + "k_proj", shape.kv_dim(), H),
        bind_linear(w, a + "v_proj", shape.kv_dim(), H),
        bind_linear(w, a + "o_proj", H, shape.q_dim()),
        w.require_f32(a + "q_norm.weight", {shape.head_dim}),
        w.require_f32(a + "k_norm.weight", {shape.head_dim}),
        w.require_f32(prefix + "cross_attn_attn_gate", {1}).at(0),
        w.require_f32(prefix + "post_attention_layernorm.weight", {H}),
        w.require_f32(prefix + "cross_attn_mlp_gate", {1}).at(0),
        bind_dense_mlp(w, prefix + "mlp.", H, intermediate, act),
    };
}

// Binds every parameter; w.finish() throws one ShapeError listing all missing / mis-shaped / unexpected
// tensors. weights: what owns the memory the bound views point into (kept alive by the model).
template <class Binder>
MllamaModel bind_mllama(Binder& w, const MllamaConfig& config, std::shared_ptr<const void> weights) {
    const MllamaTextConfig& t = config.text_config;
    const DecoderConfig dc = detail::mllama_decoder_config(t);
    const AttentionShape shape = dc.attention();
    const std::vector<std::int64_t> cross = detail::mllama_cross_layers(t);
    const Activation act = parse_activation(t.hidden_act);
    const std::int64_t H = t.hidden_size, I = t.intermediate_size;

    TiledViT vision = TiledViT::bind(w, config.vision_config, "vision_model.");
    const std::int64_t vision_dim = vision.output_dim();
    Linear projector = bind_linear(w, "multi_modal_projector", H, vision_dim, /*bias=*/true);

    const std::string lm = "language_model.model.";
    std::vector<std::optional<DecoderLayer<DenseMlp>>> layers(std::size_t(t.num_hidden_layers));
    std::vector<CrossAttentionLayer> cross_layers;
    for (std::int64_t i = 0; i < t.num_hidden_layers; ++i) {
        const std::string p = lm + "layers." + std::to_string(i) + ".";
        if (std::find(cross.begin(), cross.end(), i) == cross.end()) {
            layers[std::size_t(i)] = bind_dense_layer(w, p, shape, I, act);
            continue;
        }
        cross_layers.push_back(bind_cross_attention_layer(w, p, shape, I, act));
    }
    // The embedding table carries 8 extra rows past the vocabulary (the image token lives there).
    const TensorView embed = w.require(lm + "embed_tokens.weight", {t.vocab_size + 8, H});
    std::vector<float> norm = w.require_f32(lm + "norm.weight", {H});
    // Tied: Hugging Face makes lm_head the embedding matrix itself, extra rows included.
    Linear lm_head = t.tie_word_embeddings ? Linear{embed, {}}
                                           : bind_linear(w, "language_model.lm_head", t.vocab_size, H);
    if (t.tie_word_embeddings) w.mark_used("language_model.lm_head.weight");
    w.finish();

    GatedCrossAttention fusion(shape, dc.rms_norm_eps, std::move(projector), cross, std::move(cross_layers));
    Decoder<DenseMlp> decoder(dc, embed, std::move(layers), std::move(norm), std::move(lm_head));
    return MllamaModel(std::move(vision), std::move(fusion), std::move(decoder), std::move(weights));
}

inline MllamaModel bind_mllama(WeightBinder& w, const MllamaConfig& config) {
    return bind_mllama(w, config, std::make_shared<const Checkpoint>(w.checkpoint()));
}

// Loads config.json and the safetensors checkpoint of a Hugging Face Mllama folder.
inline MllamaModel load_mllama(const std::filesystem::path& dir) {
    const MllamaConfig config = load_family_config<MllamaConfig>(dir, "mllama");
    WeightBinder w(Checkpoint::open(dir));
    return bind_mllama(w, config);
}

}  // namespace fusionlm
