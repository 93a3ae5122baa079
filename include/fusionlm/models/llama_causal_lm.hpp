#pragma once
// Hugging Face LlamaForCausalLM: the Llama decoder LLaVA uses, fed by no fusion policy. Checkpoint names
// model.layers.{i}.*, model.{embed_tokens,norm}.weight, lm_head.weight (or tied to embed_tokens).
#include <filesystem>
#include <memory>
#include <utility>

#include "../core/error.hpp"
#include "../io/checkpoint.hpp"
#include "../io/config.hpp"
#include "../io/weights.hpp"
#include "../text_model/decoder.hpp"
#include "../text_model/mlp.hpp"
#include "causal_lm.hpp"
#include "llama.hpp"

namespace fusionlm {

using LlamaModel = CausalLM<DenseMlp>;

// Binds every parameter; w.finish() throws one ShapeError listing all missing / mis-shaped / unexpected tensors.
inline LlamaModel bind_llama(WeightBinder& w, const LlamaConfig& c) {
    Decoder<DenseMlp> decoder = bind_llama_decoder(w, c, "");
    w.finish();
    return LlamaModel(std::move(decoder), std::make_shared<const Checkpoint>(w.checkpoint()));
}

// Loads config.json and the safetensors checkpoint of a Hugging Face Llama folder.
inline LlamaModel load_llama(const std::filesystem::path& dir) {
    const LlamaConfig config = load_family_config<LlamaConfig>(dir, "llama");
    WeightBinder w(Checkpoint::open(dir));
    return bind_llama(w, config);
}

}  // namespace fusionlm
