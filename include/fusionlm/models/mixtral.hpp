#pragma once
// Mixtral (Hugging Face MixtralForCausalLM): a Llama-shaped decoder whose MLP is a sparse MoE block,
// top-k experts with the k routing weights always renormalised to sum 1. Checkpoint names:
//   model.embed_tokens.weight                                   [vocab, hidden]
//   model.layers.{i}.input_layernorm.weight                     [hidden]
//   model.layers.{i}.self_attn.{q,k,v,o}_proj.weight            (no biases)
//   model.layers.{i}.post_attention_layernorm.weight            [hidden]
//   model.layers.{i}.block_sparse_moe.gate.weight               [experts, hidden]   router
//   model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight     [intermediate, hidden]  gate_proj
//   model.layers.{i}.block_sparse_moe.experts.{e}.w3.weight     [intermediate, hidden]  up_proj
//   model.layers.{i}.block_sparse_moe.experts.{e}.w2.weight     [hidden, intermediate]  down_proj
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
#include "../text_model/moe.hpp"
#include "causal_lm.hpp"
#include "llama.hpp"

namespace fusionlm {

using MixtralModel = CausalLM<MoeMlp>;

// Binds every parameter; throws one ShapeError listing all missing / mis-shaped / unexpected tensors.
inline MixtralModel bind_mixtral(WeightBinder& w, const MixtralConfig& c) {
    const DecoderConfig dc = text_decoder_config(c);
    const AttentionShape shape = dc.attention();
    const Activation act = parse_activation(c.hidden_act);
    const std::int64_t H = c.hidden_size, I = c.intermediate_size, E = c.num_local_experts;

    std::vector<std::optional<DecoderLayer<MoeMlp>>> layers;
    for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        const std::string moe = p + "block_sparse_moe.";
        std::vector<DenseMlp> experts;
        for (std::int64_t e = 0; e < E; ++e) {
            const std::string x = moe + "experts." + std::to_string(e) + ".";
            experts.emplace_back(bind_linear(w, x + "w1", I, H), bind_linear(w, x + "w3", I, H),
                                 bind_linear(w, x + "w2", H, I), act);
        }
        layers.push_back(DecoderLayer<MoeMlp>{
            w.require_f32(p + "input_layernorm.weight", {H}), bind_self_attention(w, p + "self_attn.", shape),
            w.require_f32(p + "post_attention_layernorm.weight", {H}),
            MoeMlp(bind_linear(w, moe + "gate", E, H), std::move(experts), int(c.num_experts_per_tok),
                   /*norm_topk_prob=*/true)});
    }
    const TensorView embed = w.require("model.embed_tokens.weight", {c.vocab_size, H});
    std::vector<float> norm = w.require_f32("model.norm.weight", {H});
    Linear lm_head = c.tie_word_embeddings ? Linear{embed, {}} : bind_linear(w, "lm_head", c.vocab_size, H);
    if (c.tie_word_embeddings) w.mark_used("lm_head.weight");
    w.finish();
    return MixtralModel(Decoder<MoeMlp>(dc, embed, std::move(layers), std::move(norm), std::move(lm_head)),
                        std::make_shared<const Checkpoint>(w.checkpoint()), c.sliding_window);
}

// Loads config.json and the safetensors checkpoint of a Hugging Face Mixtral folder.
inline MixtralModel load_mixtral(const std::filesystem::path& dir) {
    const MixtralConfig config = load_family_config<MixtralConfig>(dir, "mixtral");
    WeightBinder w(Checkpoint::open(dir));
    return bind_mixtral(w, config);
}

}  // namespace fusionlm
