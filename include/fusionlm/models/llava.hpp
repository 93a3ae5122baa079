#pragma once
// LLaVA (Hugging Face LlavaForConditionalGeneration): a CLIP vision tower whose selected features are
// projected by a 2-layer MLP and spliced into the token sequence at the image tokens of a Llama decoder.
// This file maps the config and the checkpoint names onto the generic modules:
//   vision_tower.vision_model.*                      -> ClipViT (run up to vision_feature_layer)
//   multi_modal_projector.linear_{1,2}.{weight,bias} -> MlpProjector inside EarlyFusion
//   language_model.model.layers.{i}.*                -> Decoder<DenseMlp> blocks (every i)
//   language_model.model.{embed_tokens,norm}, language_model.lm_head
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../fusion/early_fusion.hpp"
#include "../fusion/mlp_projector.hpp"
#include "../fusion_model.hpp"
#include "../io/checkpoint.hpp"
#include "../io/config.hpp"
#include "../io/weights.hpp"
#include "../ops/activation.hpp"
#include "../text_model/decoder.hpp"
#include "../text_model/mlp.hpp"
#include "../vision/clip_vit.hpp"
#include "llama.hpp"

namespace fusionlm {

using LlavaModel = FusionModel<ClipViT, EarlyFusion<MlpProjector>, Decoder<DenseMlp>>;

// Binds every parameter; w.finish() throws one ShapeError listing all missing / mis-shaped / unexpected
// tensors. weights: what owns the memory the bound views point into (kept alive by the model).
template <class Binder>
LlavaModel bind_llava(Binder& w, const LlavaConfig& c, std::shared_ptr<const void> weights) {
    ClipViT vision = ClipViT::bind(w, c.vision_config, "vision_tower.vision_model.", c.vision_feature_layer);
    const std::int64_t H = c.text_config.hidden_size, V = vision.hidden_size();
    const bool bias = c.multimodal_projector_bias;
    MlpProjector projector(bind_linear(w, "multi_modal_projector.linear_1", H, V, bias),
                           parse_activation(c.projector_hidden_act),
                           bind_linear(w, "multi_modal_projector.linear_2", H, H, bias));
    Decoder<DenseMlp> decoder = bind_llama_decoder(w, c.text_config, "language_model.");
    w.finish();
    EarlyFusion<MlpProjector> fusion(std::move(projector), c.image_token_index, H, vision.tokens(),
                                     c.vision_feature_select_strategy == "default");
    return LlavaModel(std::move(vision), std::move(fusion), std::move(decoder), std::move(weights));
}

inline LlavaModel bind_llava(WeightBinder& w, const LlavaConfig& c) {
    return bind_llava(w, c, std::make_shared<const Checkpoint>(w.checkpoint()));
}

// Loads config.json and the safetensors checkpoint of a Hugging Face LLaVA folder.
inline LlavaModel load_llava(const std::filesystem::path& dir) {
    const LlavaConfig config = load_family_config<LlavaConfig>(dir, "llava");
    WeightBinder w(Checkpoint::open(dir));
    return bind_llava(w, config);
}

}  // namespace fusionlm
