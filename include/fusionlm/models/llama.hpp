#pragma once
// Hugging Face Llama-style checkpoint names for decoder blocks, shared by the families whose text model
// is Llama-shaped (Mllama, LLaVA's Llama, and the attention half of the MoE families):
//   {prefix}input_layernorm.weight, {prefix}self_attn.{q,k,v,o}_proj.{weight,bias},
//   {prefix}post_attention_layernorm.weight, {prefix}mlp.{gate,up,down}_proj.weight
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../io/config.hpp"
#include "../io/weights.hpp"
#include "../ops/activation.hpp"
#include "../ops/linear.hpp"
#include "../text_model/attention.hpp"
#include "../text_model/decoder.hpp"
#include "../text_model/mlp.hpp"
#include "causal_lm.hpp"

namespace fusionlm {

// Binder: WeightBinder, or anything with the same require / require_f32 (benchmarks bind random weights).
template <class Binder>
Linear bind_linear(Binder& w, const std::string& name, std::int64_t out, std::int64_t in,
                          bool bias = false) {
    Linear l{w.require(name + ".weight", {out, in}), {}};
    if (bias) l.bias = w.require_f32(name + ".bias", {out});
    return l;
}

// prefix ends with the dot: "language_model.model.layers.3.mlp."
template <class Binder>
DenseMlp bind_dense_mlp(Binder& w, const std::string& prefix, std::int64_t hidden,
                               std::int64_t intermediate, Activation act) {
    return DenseMlp(bind_linear(w, prefix + "gate_proj", intermediate, hidden),
                    bind_linear(w, prefix + "up_proj", intermediate, hidden),
                    bind_linear(w, prefix + "down_proj", hidden, intermediate), act);
}

// prefix ends with "self_attn.". qkv_bias: Qwen2-style q/k/v biases; qk_norm: OLMoE-style RMSNorm
// weights over the whole q and k projections ({prefix}q_norm.weight, {prefix}k_norm.weight).
template <class Binder>
SelfAttention bind_self_attention(Binder& w, const std::string& prefix, const AttentionShape& s,
                                         bool qkv_bias = false, bool qk_norm = false) {
    SelfAttention a;
    a.q_proj = bind_linear(w, prefix + "q_proj", s.q_dim(), s.hidden_size, qkv_bias);
    a.k_proj = bind_linear(w, prefix + "k_proj", s.kv_dim(), s.hidden_size, qkv_bias);
    a.v_proj = bind_linear(w, prefix + "v_proj", s.kv_dim(), s.hidden_size, qkv_bias);
    a.o_proj = bind_linear(w, prefix + "o_proj", s.hidden_size, s.q_dim());
    if (qk_norm) {
        a.q_norm = w.require_f32(prefix + "q_norm.weight", {s.q_dim()});
        a.k_norm = w.require_f32(prefix + "k_norm.weight", {s.kv_dim()});
    }
    return a;
}

// A whole dense block; prefix ends with the layer's dot: "model.layers.3.".
template <class Binder>
DecoderLayer<DenseMlp> bind_dense_layer(Binder& w, const std::string& prefix, const AttentionShape& s,
                                       std::int64_t intermediate, Activation act) {
    return DecoderLayer<DenseMlp>{w.require_f32(prefix + "input_layernorm.weight", {s.hidden_size}),
                                  bind_self_attention(w, prefix + "self_attn.", s),
                                  w.require_f32(prefix + "post_attention_layernorm.weight", {s.hidden_size}),
                                  bind_dense_mlp(w, prefix + "mlp.", s.hidden_size, intermediate, act)};
}

// The Llama decoder under `prefix` ("language_model." for LLaVA, "" for LlamaForCausalLM).
template <class Binder>
Decoder<DenseMlp> bind_llama_decoder(Binder& w, const LlamaConfig& c, const std::string& prefix) {
    if (c.attention_bias) throw UnsupportedError("config.json: text_config.attention_bias: true is not supported");
    if (c.mlp_bias) throw UnsupportedError("config.json: text_config.mlp_bias: true is not supported");
    const DecoderConfig dc = text_decoder_config(c);
    const Activation act = parse_activation(c.hidden_act);
    const std::string m = prefix + "model.";
    std::vector<std::optional<DecoderLayer<DenseMlp>>> layers;
    for (std::int64_t i = 0; i < c.num_hidden_layers; ++i)
        layers.push_back(bind_dense_layer(w, m + "layers." + std::to_string(i) + ".", dc.attention(), c.intermediate_size, act));
    const TensorView embed = w.require(m + "embed_tokens.weight", {c.vocab_size, c.hidden_size});
    std::vector<float> norm = w.require_f32(m + "norm.weight", {c.hidden_size});
    Linear lm_head = c.tie_word_embeddings ? Linear{embed, {}}
                                           : bind_linear(w, prefix + "lm_head", c.vocab_size, c.hidden_size);
    if (c.tie_word_embeddings) w.mark_used(prefix + "lm_head.weight");
    return Decoder<DenseMlp>(dc, embed, std::move(layers), std::move(norm), std::move(lm_head));
}

}  // namespace fusionlm
