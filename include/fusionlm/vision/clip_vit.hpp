#pragma once
// The CLIP vision transformer (LLaVA's tower): patch conv (no bias) -> prepend class_embedding ->
// + position_embedding -> pre_layrnorm -> encoder layers (layer_norm1, q/k/v/out_proj with biases,
// layer_norm2, fc1 -> hidden_act -> fc2). post_layernorm only feeds CLIP's pooled output, which
// LLaVA never uses, so it is not bound. The tower runs up to the layer whose output its user reads
// (LLaVA's vision_feature_layer), so later layers cost nothing.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../io/config.hpp"
#include "../ops/activation.hpp"
#include "encoder_layer.hpp"
#include "observer.hpp"
#include "patch_embed.hpp"

namespace fusionlm {

class ClipViT {
public:
    // prefix: where the tower's names start, e.g. "vision_tower.vision_model.". output_layer: the
    // hidden_states index encode_image() returns (see resolve_layer).
    template <class Binder>
    static ClipViT bind(Binder& w, const ClipVisionConfig& c, std::string_view prefix, std::int64_t output_layer = -1) {
        const std::string p(prefix);
        if (c.patch_size <= 0 || c.image_size < c.patch_size)
            throw ConfigError("config.json: vision_config.image_size: " + std::to_string(c.image_size) +
                              " is smaller than patch_size " + std::to_string(c.patch_size));
        if (c.num_channels <= 0) throw ConfigError("config.json: vision_config.num_channels: must be positive");
        ClipViT v;
        v.hidden_ = c.hidden_size;
        v.image_size_ = c.image_size;
        const std::int64_t grid = c.image_size / c.patch_size, H = v.hidden_;
        v.tokens_ = grid * grid + 1;

        const std::string e = p + "embeddings.";
        v.patch_embed_ = PatchEmbed::bind(w, e + "patch_embedding.weight", H, c.num_channels, c.patch_size);
        v.class_embedding_ = w.require_f32(e + "class_embedding", {H});
        const std::vector<float> pos = w.require_f32(e + "position_embedding.weight", {v.tokens_, H});
        v.position_embedding_ = ConstRowMap(pos.data(), v.tokens_, H);
        w.mark_used(e + "position_ids");  // a constant arange buffer some exports include
        v.pre_layrnorm_ = LayerNormParams::bind(w, p + "pre_layrnorm", H, float(c.layer_norm_eps));
        w.ignore_prefix(p + "post_layernorm.");

        EncoderLayerDims dims;
        dims.hidden = H;
        dims.intermediate = c.intermediate_size;
        dims.heads = c.num_attention_heads;
        dims.attention_bias = true;
        dims.activation = parse_activation(c.hidden_act);
        dims.norm_eps = float(c.layer_norm_eps);
        const EncoderLayerNames names{"layer_norm1",        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.out_proj", "layer_norm2",      "mlp.fc1",          "mlp.fc2",
                                      "",                   ""};
        for (std::int64_t i = 0; i < c.num_hidden_layers; ++i)
            v.layers_.push_back(
                EncoderLayer::bind(w, p + "encoder.layers." + std::to_string(i) + ".", dims, names));
        v.output_layer_ = v.resolve_layer(output_layer);
        return v;
    }

    std::int64_t num_layers() const { return std::int64_t(layers_.size()); }
    std::int64_t tokens() const { return tokens_; }  // patches + class token
    std::int64_t hidden_size() const { return hidden_; }
    std::int64_t image_size() const { return image_size_; }
    std::int64_t channels() const { return patch_embed_.channels(); }
    std::int64_t output_layer() const { return output_layer_; }

    // The reference's hidden_states index as a layer count: 0 = after pre_layrnorm, k = output of
    // layer k, negative counts from the end (-1 = the last layer, -2 the one before).
    std::int64_t resolve_layer(std::int64_t layer) const {
        const std::int64_t states = num_layers() + 1;
        if (layer < -states || layer >= states)
            throw InputError("vision feature layer " + std::to_string(layer) + " is outside [" +
                             std::to_string(-states) + ", " + std::to_string(states - 1) + "] for a " +
                             std::to_string(num_layers()) + "-layer CLIP encoder");
        return layer < 0 ? layer + states : layer;
    }

    // One image [channels, image_size, image_size] -> hidden_states[layer] [tokens, hidden] (class
    // token first). Only the layers up to `layer` run.
    RowMatrix hidden_state(ThreadPool& pool, std::span<const float> pixel_values, std::int64_t layer,
                           const VisionObserver& observe = {}) const {
        const std::int64_t last = resolve_layer(layer), S = image_size_, C = patch_embed_.channels();
        if (std::int64_t(pixel_values.size()) != C * S * S)
            throw InputError("pixel_values: " + std::to_string(pixel_values.size()) + " values for one image, expected " +
                             shape_str({C, S, S}) + " = " + std::to_string(C * S * S));
        const Eigen::Index P = tokens_, H = hidden_;
        RowMatrix cols(P - 1, patch_embed_.unfolded_size());
        patch_embed_.unfold(pixel_values.data(), S, cols);
        RowMatrix h(P, H);
        h.row(0) = Eigen::Map<const Eigen::RowVectorXf>(class_embedding_.data(), H);
        patch_embed_.project(pool, cols, h.bottomRows(P - 1));
        h += position_embedding_;
        pre_layrnorm_.apply(h, h);
        if (observe) observe("encoder", 0, h);

        EncoderWorkspace ws;
        for (std::int64_t l = 0; l < last; ++l) {
            layers_[std::size_t(l)].forward(pool, h, P, ws);
            if (observe) observe("encoder", l + 1, h);
        }
        return h;
    }

    // Floating-point operations of hidden_state(..., layer).
    double flops(std::int64_t layer) const {
        const std::int64_t last = resolve_layer(layer);
        double f = 2.0 * double(tokens_ - 1) * double(patch_embed_.unfolded_size()) * double(hidden_);
        for (std::int64_t l = 0; l < last; ++l) f += layers_[std::size_t(l)].flops(tokens_);
        return f;
    }

private:
    std::int64_t hidden_ = 0, image_size_ = 0, tokens_ = 0, output_layer_ = 0;
    PatchEmbed patch_embed_;
    std::vector<float> class_embedding_;
    RowMatrix position_embedding_;  // [tokens, hidden]
    LayerNormParams pre_layrnorm_;
    std::vector<EncoderLayer> layers_;
};

// One image as CLIPImageProcessor lays it out: [channels, image_size, image_size].
struct ClipImage {
    std::span<const float> pixel_values;
};

// How FusionModel feeds a ClipImage to the tower (found by argument-dependent lookup): the hidden state
// the tower was bound to output, [tokens, hidden], class token first.
inline RowMatrix encode_image(const ClipViT& vit, ThreadPool& pool, const ClipImage& image,
                              const VisionObserver* observer) {
    return vit.hidden_state(pool, image.pixel_values, vit.output_layer(), observer ? *observer : VisionObserver{});
}

}  // namespace fusionlm
