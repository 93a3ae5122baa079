#pragma once
// fusionlm-parity for Mllama cases: vision states, cross-attention states, the prefill (hidden states,
// logits) and greedy decoding, computed through the public model API.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <fusionlm/core/error.hpp>
#include <fusionlm/core/tensor.hpp>
#include <fusionlm/core/threads.hpp>
#include <fusionlm/io/checkpoint.hpp>
#include <fusionlm/io/config.hpp>
#include <fusionlm/io/weights.hpp>
#include <fusionlm/models/mllama.hpp>

#include "parity_case.hpp"
#include "parity_decoder.hpp"

namespace fusionlm::parity {

inline TokenMask run_mllama_case(const Case& c, const MllamaConfig& config, ThreadPool& pool, CaseOutputs& out) {
    WeightBinder binder(Checkpoint::open(c.dir()));
    const MllamaModel model = bind_mllama(binder, config);
    const CaseTokens tokens = CaseTokens::read(c);
    const std::int64_t B = tokens.batch, S = tokens.seq;
    auto session = model.new_session(B);

    if (c.optional_input("pixel_values")) {
        const TiledViT& vit = model.vision();
        const std::int64_t T = vit.max_tiles(), px = vit.image_size(), ch = vit.channels();
        const TensorView& pixels = c.input("pixel_values", {B, -1, T, ch, px, px});
        const std::int64_t I = pixels.shape[1];
        if (I <= 0) throw InputError("pixel_values: no image slots " + shape_str(pixels.shape));
        if (pixels.dtype != DType::F32) throw InputError("pixel_values: dtype must be F32");
        const std::vector<std::int64_t> ids = to_i64(c.input("aspect_ratio_ids", {B, I}));
        const std::vector<std::int64_t> ar_mask = to_i64(c.input("aspect_ratio_mask", {B, I, T}));
        const std::vector<std::int64_t> xmask = to_i64(c.input("cross_attention_mask", {B, S, I, T}));
        const std::span<const float> all(pixels.as<float>(), std::size_t(pixels.numel()));
        const std::size_t image_floats = std::size_t(T * ch * px * px);

        std::vector<std::vector<MllamaImage>> images(static_cast<std::size_t>(B));
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t i = 0; i < I; ++i) {
                const std::size_t slot = std::size_t(b * I + i);
                images[std::size_t(b)].push_back(
                    {all.subspan(slot * image_floats, image_floats), ids[slot],
                     std::span<const std::int64_t>(ar_mask).subspan(slot * std::size_t(T), std::size_t(T))});
            }

        // The encoder reports each image's states in order; the reference stacks them (batch * images, ...).
        std::vector<std::vector<float>> local, global;
        std::int64_t state_rows = 0, state_cols = 0;
        const VisionObserver observer = [&](std::string_view stack, std::int64_t index,
                                            const Eigen::Ref<const RowMatrix>& state) {
            auto& states = stack == "global" ? global : local;
            if (std::int64_t(states.size()) <= index) states.resize(std::size_t(index + 1));
            states[std::size_t(index)].insert(states[std::size_t(index)].end(), state.data(),
                                              state.data() + state.size());
            state_rows = state.rows();
            state_cols = state.cols();
        };
        const bool want_states = c.wants("vision_local_hidden_states.0") || c.wants("vision_global_hidden_states.0");
        const std::vector<RowMatrix> features = model.attach_images(
            pool, session, images, CrossAttentionMask{B, S, I, T, xmask}, want_states ? &observer : nullptr);

        const std::int64_t P = vit.tokens_per_tile();
        std::vector<float> vision_output, cross_states;
        for (std::int64_t b = 0; b < B; ++b) {
            const RowMatrix& f = features[std::size_t(b)];
            vision_output.insert(vision_output.end(), f.data(), f.data() + f.size());
            const RowMatrix& x = session.fusion.cross_states[std::size_t(b)];
            cross_states.insert(cross_states.end(), x.data(), x.data() + x.size());
        }
        out.add_f32("vision_output", {B, I, T, P, vit.output_dim()}, vision_output);
        out.add_f32("cross_attention_states", {B, I * T * P, config.text_config.hidden_size}, cross_states);
        for (std::size_t i = 0; i < local.size(); ++i)
            out.add_f32("vision_local_hidden_states." + std::to_string(i), {B * I, state_rows, state_cols}, local[i]);
        for (std::size_t i = 0; i < global.size(); ++i)
            out.add_f32("vision_global_hidden_states." + std::to_string(i), {B * I, state_rows, state_cols}, global[i]);

        std::vector<float> row_mask(std::size_t(B * S));
        for (std::int64_t b = 0; b < B; ++b)
            for (std::int64_t s = 0; s < S; ++s)
                row_mask[std::size_t(b * S + s)] = model.fusion().row_sees_image(session.fusion, b, s) ? 1.f : 0.f;
        out.add_f32("full_text_row_masked_out_mask", {B, S}, row_mask);
    }

    prefill_and_decode(c, model, session, tokens, config.text_config.num_hidden_layers, pool, out);
    return tokens.mask();
}

}  // namespace fusionlm::parity
