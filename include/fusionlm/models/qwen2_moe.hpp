#pragma once
// Qwen2-MoE (Hugging Face Qwen2MoeForCausalLM): a Llama-shaped decoder with q/k/v biases whose layers are
// sparse MoE blocks (top-k, renormalised only if norm_topk_prob, plus a shared expert scaled by
// sigmoid(shared_expert_gate(x))) or dense MLPs, as mlp_only_layers / decoder_sparse_step say.
// Checkpoint names:
//   model.embed_tokens.weight                                   [vocab, hidden]
//   model.layers.{i}.input_layernorm.weight                     [hidden]
//   model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}, self_attn.o_proj.weight
//   model.layers.{i}.post_attention_layernorm.weight            [hidden]
//   sparse layer:
//   model.layers.{i}.mlp.gate.weight                            [experts, hidden]   router
//   model.layers.{i}.mlp.experts.{e}.{gate,up}_proj.weight      [moe_intermediate, hidden]
//   model.layers.{i}.mlp.experts.{e}.down_proj.weight           [hidden, moe_intermediate]
//   model.layers.{i}.mlp.shared_expert.{gate,up,down}_proj.weight   (shared_expert_intermediate_size)
//   model.layers.{i}.mlp.shared_expert_gate.weight              [1, hidden]
//   dense layer:
//   model.layers.{i}.mlp.{gate,up,down}_proj.weight             (intermediate_size)
//   model.norm.weight, lm_head.weight (or tied to embed_tokens)
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../io/checkpoint.hpp"
#include "../io/config.hpp"
#include "../io/weights.hpp"
#include "../ops/activation.hpp"
#include "../text_model/decoder.hpp"
#include "../text_model/mlp.hpp"
#include "../text_model/moe.hpp"
#include "causal_lm.hpp"
#include "llama.hpp"

namespace fusionlm {

using Qwen2MoeModel = CausalLM<DenseOrMoeMlp>;

namespace detail {

// prefix ends with "mlp.".
inline MoeMlp bind_qwen2_moe_block(WeightBinder& w, const std::string& prefix, const Qwen2MoeConfig& c,
                                   Activation act) {
    const std::int64_t H = c.hidden_size, I = c.moe_intermediate_size, S = c.shared_expert_intermediate_size;
    std::vector<DenseMlp> experts;
    for (std::int64_t e = 0; e < c.num_experts; ++e)
        experts.push_back(bind_dense_mlp(w, prefix + "experts." + std::to_string(e) + ".", H, I, act));
    MoeMlp::SharedExpert shared{bind_dense_mlp(w, prefix + "shared_expert.", H, S, act),
                                bind_linear(w, prefix + "shared_expert_gate", 1, H)};
    return MoeMlp(bind_linear(w, prefix + "gate", c.num_experts, H), std::move(experts), int(c.num_experts_per_tok),
                  c.norm_topk_prob, std::move(shared));
}

}  // namespace detail

// Binds every parameter; throws one ShapeError listing all missing / mis-shaped / unexpected tensors.
inline Qwen2MoeModel bind_qwen2_moe(WeightBinder& w, const Qwen2MoeConfig& c) {
    const DecoderConfig dc = text_decoder_config(c);
    const AttentionShape shape = dc.attention();
    const Activation act = parse_activation(c.hidden_act);
    const std::int64_t H = c.hidden_size;

    std::vector<std::optional<DecoderLayer<DenseOrMoeMlp>>> layers;
    for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        DenseOrMoeMlp mlp = c.is_sparse_layer(i) ? DenseOrMoeMlp(detail::bind_qwen2_moe_block(w, p + "mlp.", c, act))
                                                 : DenseOrMoeMlp(bind_dense_mlp(w, p + "mlp.", H, c.intermediate_size, act));
        layers.push_back(DecoderLayer<DenseOrMoeMlp>{
            w.require_f32(p + "input_layernorm.weight", {H}),
            bind_self_attention(w, p + "self_attn.", shape, /*qkv_bias=*/true),
            w.require_f32(p + "post_attention_layernorm.weight", {H}), std::move(mlp)});
    }
    const TensorView embed = w.require("model.embed_tokens.weight", {c.vocab_size, H});
    std::vector<float> norm = w.require_f32("model.norm.weight", {H});
    Linear lm_head = c.tie_word_embeddings ? Linear{embed, {}} : bind_linear(w, "lm_head", c.vocab_size, H);
    if (c.tie_word_embeddings) w.mark_used("lm_head.weight");
    w.finish();
    std::optional<std::int64_t> window;
    if (c.use_sliding_window) window = c.sliding_window;
    return Qwen2MoeModel(Decoder<DenseOrMoeMlp>(dc, embed, std::move(layers), std::move(norm), std::move(lm_head)),
                         std::make_shared<const Checkpoint>(w.checkpoint()), window);
}

// Loads config.json and the safetensors checkpoint of a Hugging Face Qwen2-MoE folder.
inline Qwen2MoeModel load_qwen2_moe(const std::filesystem::path& dir) {
    const Qwen2MoeConfig config = load_family_config<Qwen2MoeConfig>(dir, "qwen2_moe");
    WeightBinder w(Checkpoint::open(dir));
    return bind_qwen2_moe(w, config);
}

}  // namespace fusionlm
