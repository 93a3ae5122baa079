#pragma once
// OLMoE (Hugging Face OlmoeForCausalLM): a Llama-shaped decoder with RMSNorms over the whole q and k
// projections (before heads are split and RoPE), optional clipping of q/k/v (clip_qkv), and sparse MoE
// MLPs (top-k, renormalised only if norm_topk_prob). Checkpoint names:
//   model.embed_tokens.weight                                   [vocab, hidden]
//   model.layers.{i}.input_layernorm.weight                     [hidden]
//   model.layers.{i}.self_attn.{q,k,v,o}_proj.weight (+ .bias when attention_bias)
//   model.layers.{i}.self_attn.q_norm.weight                    [heads * head_dim]
//   model.layers.{i}.self_attn.k_norm.weight                    [kv_heads * head_dim]
//   model.layers.{i}.post_attention_layernorm.weight            [hidden]
//   model.layers.{i}.mlp.gate.weight                            [experts, hidden]   router
//   model.layers.{i}.mlp.experts.{e}.{gate,up}_proj.weight      [intermediate, hidden]
//   model.layers.{i}.mlp.experts.{e}.down_proj.weight           [hidden, intermediate]
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
#include "../text_model/attention.hpp"
#include "../text_model/decoder.hpp"
#include "../text_model/moe.hpp"
#include "causal_lm.hpp"
#include "llama.hpp"

namespace fusionlm {

using OlmoeModel = CausalLM<MoeMlp>;

// Binds every parameter; throws one ShapeError listing all missing / mis-shaped / unexpected tensors.
inline OlmoeModel bind_olmoe(WeightBinder& w, const OlmoeConfig& c) {
    const DecoderConfig dc = text_decoder_config(c);
    const AttentionShape s = dc.attention();
    const Activation act = parse_activation(c.hidden_act);
    const std::int64_t H = c.hidden_size, I = c.intermediate_size, E = c.num_experts;
    const bool bias = c.attention_bias;

    std::vector<std::optional<DecoderLayer<MoeMlp>>> layers;
    for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        const std::string a = p + "self_attn.";
        SelfAttention attn{bind_linear(w, a + "q_proj", s.q_dim(), H, bias),
                           bind_linear(w, a + "k_proj", s.kv_dim(), H, bias),
                           bind_linear(w, a + "v_proj", s.kv_dim(), H, bias),
                           bind_linear(w, a + "o_proj", H, s.q_dim(), bias),
                           w.require_f32(a + "q_norm.weight", {s.q_dim()}),
                           w.require_f32(a + "k_norm.weight", {s.kv_dim()})};
        if (c.clip_qkv) attn.clip_qkv = float(*c.clip_qkv);
        std::vector<DenseMlp> experts;
        for (std::int64_t e = 0; e < E; ++e)
            experts.push_back(bind_dense_mlp(w, p + "mlp.experts." + std::to_string(e) + ".", H, I, act));
        layers.push_back(DecoderLayer<MoeMlp>{
            w.require_f32(p + "input_layernorm.weight", {H}), std::move(attn),
            w.require_f32(p + "post_attention_layernorm.weight", {H}),
            MoeMlp(bind_linear(w, p + "mlp.gate", E, H), std::move(experts), int(c.num_experts_per_tok),
                   c.norm_topk_prob)});
    }
    const TensorView embed = w.require("model.embed_tokens.weight", {c.vocab_size, H});
    std::vector<float> norm = w.require_f32("model.norm.weight", {H});
    Linear lm_head = c.tie_word_embeddings ? Linear{embed, {}} : bind_linear(w, "lm_head", c.vocab_size, H);
    if (c.tie_word_embeddings) w.mark_used("lm_head.weight");
    w.finish();
    return OlmoeModel(Decoder<MoeMlp>(dc, embed, std::move(layers), std::move(norm), std::move(lm_head)),
                      std::make_shared<const Checkpoint>(w.checkpoint()));
}

// Loads config.json and the safetensors checkpoint of a Hugging Face OLMoE folder.
inline OlmoeModel load_olmoe(const std::filesystem::path& dir) {
    const OlmoeConfig config = load_family_config<OlmoeConfig>(dir, "olmoe");
    WeightBinder w(Checkpoint::open(dir));
    return bind_olmoe(w, config);
}

}  // namespace fusionlm
