#pragma once
// The Mllama (Llama 3.2 Vision) tiled ViT: an image is up to max_num_tiles tiles, encoded together.
//   per tile: patch conv -> + tanh(g_pre) * pre_tile[aspect_ratio_id][tile] on the patches -> CLS
//   -> + (1 - tanh(g)) * pos + tanh(g) * tile_pos[aspect_ratio_id][tile] -> layernorm_pre
//   -> zero-pad to a multiple of 8 tokens; all tiles as one sequence: local layers -> layernorm_post
//   -> + tanh(g_post) * post_tile[aspect_ratio_id][tile] -> gated global layers -> drop the padding
//   -> [final | local states at intermediate_layers_indices, interleaved per channel].
#include <algorithm>
#include <cmath>
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
#include "../ops/embedding.hpp"
#include "encoder_layer.hpp"
#include "observer.hpp"
#include "patch_embed.hpp"

namespace fusionlm {

class TiledViT {
public:
    // prefix: where the vision tower's names start, e.g. "vision_model.".
    template <class Binder>
    static TiledViT bind(Binder& w, const MllamaVisionConfig& c, std::string_view prefix) {
        const std::string p(prefix);
        const auto fail = [](const std::string& field, const std::string& why) {
            throw ConfigError("config.json: vision_config." + field + ": " + why);
        };
        if (c.patch_size <= 0 || c.image_size < c.patch_size)
            fail("image_size", std::to_string(c.image_size) + " is smaller than patch_size " +
                                   std::to_string(c.patch_size));
        if (c.max_num_tiles <= 0) fail("max_num_tiles", "must be positive");
        if (c.num_channels <= 0) fail("num_channels", "must be positive");

        TiledViT v;
        v.hidden_ = c.hidden_size;
        v.tiles_ = c.max_num_tiles;
        v.image_size_ = c.image_size;
        const std::int64_t grid = c.image_size / c.patch_size;
        v.tokens_ = grid * grid + 1;
        v.padded_tokens_ = (v.tokens_ + 7) / 8 * 8;
        v.aspect_ratios_ = std::int64_t(c.supported_aspect_ratios.size()) + 1;

        // The reference keeps hidden_states[idx] for idx in the list, in ascending order, each once.
        for (std::int64_t idx : c.intermediate_layers_indices) {
            if (idx < 0 || idx > c.num_hidden_layers)
                fail("intermediate_layers_indices", std::to_string(idx) + " is not a local-encoder state (0.." +
                                                        std::to_string(c.num_hidden_layers) + ")");
            v.selected_.push_back(idx);
        }
        std::sort(v.selected_.begin(), v.selected_.end());
        v.selected_.erase(std::unique(v.selected_.begin(), v.selected_.end()), v.selected_.end());
        v.output_dim_ = v.hidden_ * std::int64_t(1 + v.selected_.size());
        if (c.vision_output_dim != v.output_dim_)
            fail("vision_output_dim", std::to_string(c.vision_output_dim) + " disagrees with hidden_size x (1 + " +
                                          std::to_string(v.selected_.size()) + " intermediate layers) = " +
                                          std::to_string(v.output_dim_));

        const std::int64_t H = v.hidden_, T = v.tiles_, P = v.tokens_, A = v.aspect_ratios_;
        v.patch_embed_ = PatchEmbed::bind(w, p + "patch_embedding.weight", H, c.num_channels, c.patch_size);
        v.class_embedding_ = w.require_f32(p + "class_embedding", {H});

        const std::string gpe = p + "gated_positional_embedding.";
        const float pos_gate = std::tanh(w.require_f32(gpe + "gate", {1}).at(0));
        const std::vector<float> pos = w.require_f32(gpe + "embedding", {P, H});
        v.gated_position_embedding_ = (1.0f - pos_gate) * ConstRowMap(pos.data(), P, H);
        v.tile_position_gate_ = pos_gate;
        v.tile_position_embedding_ = w.require(gpe + "tile_embedding.weight", {A, T * P * H});

        v.pre_tile_embedding_ = w.require(p + "pre_tile_positional_embedding.embedding.weight", {A, T * H});
        v.pre_tile_gate_ = std::tanh(w.require_f32(p + "pre_tile_positional_embedding.gate", {1}).at(0));
        v.post_tile_embedding_ = w.require(p + "post_tile_positional_embedding.embedding.weight", {A, T * H});
        v.post_tile_gate_ = std::tanh(w.require_f32(p + "post_tile_positional_embedding.gate", {1}).at(0));

        // layernorm_pre/post use nn.LayerNorm's default eps; the encoder layers read norm_eps.
        v.layernorm_pre_ = LayerNormParams::bind(w, p + "layernorm_pre", H, 1e-5f);
        v.layernorm_post_ = LayerNormParams::bind(w, p + "layernorm_post", H, 1e-5f);

        EncoderLayerDims dims;
        dims.hidden = H;
        dims.intermediate = c.intermediate_size;
        dims.heads = c.attention_heads;
        dims.activation = parse_activation(c.hidden_act);
        dims.norm_eps = float(c.norm_eps);
        EncoderLayerNames names{"input_layernorm",          "self_attn.q_proj", "self_attn.k_proj",
                                "self_attn.v_proj",         "self_attn.o_proj", "post_attention_layernorm",
                                "mlp.fc1",                  "mlp.fc2",          "",
                                ""};
        for (std::int64_t i = 0; i < c.num_hidden_layers; ++i)
            v.local_.push_back(EncoderLayer::bind(w, p + "transformer.layers." + std::to_string(i) + ".", dims, names));
        names.gate_attn = "gate_attn";
        names.gate_ffn = "gate_ffn";
        for (std::int64_t i = 0; i < c.num_global_layers; ++i)
            v.global_.push_back(
                EncoderLayer::bind(w, p + "global_transformer.layers." + std::to_string(i) + ".", dims, names));
        return v;
    }

    std::int64_t max_tiles() const { return tiles_; }
    std::int64_t image_size() const { return image_size_; }
    std::int64_t channels() const { return patch_embed_.channels(); }
    std::int64_t hidden_size() const { return hidden_; }
    // Tokens per tile in the output (patches + CLS), and in the encoder (padded to a multiple of 8).
    std::int64_t tokens_per_tile() const { return tokens_; }
    std::int64_t padded_tokens_per_tile() const { return padded_tokens_; }
    std::int64_t output_dim() const { return output_dim_; }

    // One image: pixel_values [max_tiles, channels, image_size, image_size] (as the processor makes it),
    // aspect_ratio_mask [max_tiles] of 0/1. Padding tiles and empty image slots are encoded too: real
    // tokens attend to them. Returns [max_tiles * tokens_per_tile, output_dim], tile-major.
    RowMatrix encode(ThreadPool& pool, std::span<const float> pixel_values, std::int64_t aspect_ratio_id,
                     std::span<const std::int64_t> aspect_ratio_mask, const VisionObserver& observe = {}) const {
        const Eigen::Index T = tiles_, P = tokens_, Lp = padded_tokens_, H = hidden_, np = P - 1;
        const std::int64_t S = image_size_, C = patch_embed_.channels();
        check_inputs(pixel_values, aspect_ratio_id, aspect_ratio_mask);

        RowMatrix cols(T * np, patch_embed_.unfolded_size());
        for (Eigen::Index t = 0; t < T; ++t)
            patch_embed_.unfold(pixel_values.data() + t * C * S * S, S, cols.middleRows(t * np, np));
        RowMatrix patches(T * np, H);
        patch_embed_.project(pool, cols, patches);

        const RowMatrix pre_tile = table_row(pre_tile_embedding_, aspect_ratio_id);        // [1, T*H]
        const RowMatrix tile_position = table_row(tile_position_embedding_, aspect_ratio_id);  // [1, T*P*H]
        RowMatrix padded = RowMatrix::Zero(T * Lp, H);
        for (Eigen::Index t = 0; t < T; ++t) {
            auto tile = padded.middleRows(t * Lp, P);
            tile.row(0) = Eigen::Map<const Eigen::RowVectorXf>(class_embedding_.data(), H);
            tile.bottomRows(np) = patches.middleRows(t * np, np).rowwise() +
                                  Eigen::Map<const Eigen::RowVectorXf>(pre_tile.data() + t * H, H) * pre_tile_gate_;
            tile += gated_position_embedding_;
            tile += tile_position_gate_ * ConstRowMap(tile_position.data() + t * P * H, P, H);
            layernorm_pre_.apply(tile, tile);
        }

        // Encode in "real first" order: the P tokens of each real tile, then the padding tokens
        // (padding tiles and the 8-alignment tokens), so the mask is two contiguous attention calls.
        std::vector<Eigen::Index> order;
        order.reserve(std::size_t(T * Lp));
        for (Eigen::Index t = 0; t < T; ++t)
            if (aspect_ratio_mask[std::size_t(t)])
                for (Eigen::Index j = 0; j < P; ++j) order.push_back(t * Lp + j);
        const auto real = std::int64_t(order.size());
        for (Eigen::Index t = 0; t < T; ++t)
            for (Eigen::Index j = 0; j < Lp; ++j)
                if (!aspect_ratio_mask[std::size_t(t)] || j >= P) order.push_back(t * Lp + j);

        RowMatrix h(T * Lp, H);
        for (Eigen::Index i = 0; i < T * Lp; ++i) h.row(i) = padded.row(order[std::size_t(i)]);

        RowMatrix out(T * P, output_dim_);
        const auto emit = [&](std::string_view stack, std::int64_t index) {
            if (!observe) return;
            for (Eigen::Index i = 0; i < T * Lp; ++i) padded.row(order[std::size_t(i)]) = h.row(i);
            observe(stack, index, padded);
        };
        // Writes h's unpadded rows into output columns: [col, col + H) with a stride between channels.
        const auto write_out = [&](Eigen::Index col, Eigen::Index stride) {
            for (Eigen::Index i = 0; i < T * Lp; ++i) {
                const Eigen::Index t = order[std::size_t(i)] / Lp, j = order[std::size_t(i)] % Lp;
                if (j >= P) continue;
                Eigen::Map<Eigen::RowVectorXf, 0, Eigen::InnerStride<>>(out.row(t * P + j).data() + col, H,
                                                                        Eigen::InnerStride<>(stride)) = h.row(i);
            }
        };
        const auto K = Eigen::Index(selected_.size());
        const auto capture = [&](std::int64_t index) {
            for (Eigen::Index k = 0; k < K; ++k)
                if (selected_[std::size_t(k)] == index) write_out(H + k, K);
        };

        EncoderWorkspace ws;
        emit("local", 0);
        capture(0);
        for (std::size_t l = 0; l < local_.size(); ++l) {
            local_[l].forward(pool, h, real, ws);
            emit("local", std::int64_t(l + 1));
            capture(std::int64_t(l + 1));
        }

        layernorm_post_.apply(h, h);
        const RowMatrix post_tile = table_row(post_tile_embedding_, aspect_ratio_id) * post_tile_gate_;  // [1, T*H]
        for (Eigen::Index i = 0; i < T * Lp; ++i)
            h.row(i) += Eigen::Map<const Eigen::RowVectorXf>(post_tile.data() + order[std::size_t(i)] / Lp * H, H);
        emit("global", 0);
        for (std::size_t l = 0; l < global_.size(); ++l) {
            global_[l].forward(pool, h, real, ws);
            emit("global", std::int64_t(l + 1));
        }
        write_out(0, 1);
        return out;
    }

    // Floating-point operations of one encode() (patch GEMM, projections, MLPs, and both attention
    // products counted over all token pairs, though padding queries only see the real keys).
    double flops() const {
        const double n = double(tiles_ * padded_tokens_), np = double(tiles_ * (tokens_ - 1));
        double f = 2.0 * np * double(patch_embed_.unfolded_size()) * double(hidden_);
        for (const auto& l : local_) f += l.flops(std::int64_t(n));
        for (const auto& l : global_) f += l.flops(std::int64_t(n));
        return f;
    }

private:
    void check_inputs(std::span<const float> pixel_values, std::int64_t aspect_ratio_id,
                      std::span<const std::int64_t> aspect_ratio_mask) const {
        const std::int64_t S = image_size_, want = tiles_ * patch_embed_.channels() * S * S;
        if (std::int64_t(pixel_values.size()) != want)
            throw InputError("pixel_values: " + std::to_string(pixel_values.size()) + " values for one image, expected " +
                             shape_str({tiles_, patch_embed_.channels(), S, S}) + " = " + std::to_string(want));
        if (aspect_ratio_id < 0 || aspect_ratio_id >= aspect_ratios_)
            throw InputError("aspect_ratio_ids: " + std::to_string(aspect_ratio_id) + " is outside [0, " +
                             std::to_string(aspect_ratios_) + ")");
        if (std::int64_t(aspect_ratio_mask.size()) != tiles_)
            throw InputError("aspect_ratio_mask: " + std::to_string(aspect_ratio_mask.size()) +
                             " entries for one image, expected max_num_tiles = " + std::to_string(tiles_));
        for (std::int64_t m : aspect_ratio_mask)
            if (m != 0 && m != 1)
                throw InputError("aspect_ratio_mask: value " + std::to_string(m) + ", expected 0 or 1");
    }

    static RowMatrix table_row(const TensorView& table, std::int64_t id) {
        RowMatrix row(1, table.dim(1));
        embedding_lookup(table, std::span<const std::int64_t>(&id, 1), row);
        return row;
    }

    std::int64_t hidden_ = 0, tiles_ = 0, image_size_ = 0, tokens_ = 0, padded_tokens_ = 0, aspect_ratios_ = 0;
    std::int64_t output_dim_ = 0;
    std::vector<std::int64_t> selected_;  // local-encoder states appended to the output, ascending
    PatchEmbed patch_embed_;
    std::vector<float> class_embedding_;
    RowMatrix gated_position_embedding_;  // (1 - tanh(gate)) * embedding, [tokens, hidden]
    float tile_position_gate_ = 0, pre_tile_gate_ = 0, post_tile_gate_ = 0;  // tanh of the stored gates
    TensorView tile_position_embedding_;  // [aspect ratios, tiles * tokens * hidden]
    TensorView pre_tile_embedding_, post_tile_embedding_;  // [aspect ratios, tiles * hidden]
    LayerNormParams layernorm_pre_, layernorm_post_;
    std::vector<EncoderLayer> local_, global_;
};

}  // namespace fusionlm
