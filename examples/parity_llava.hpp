#pragma once
// fusionlm-parity for LLaVA cases: the CLIP hidden states, the selected and projected image features,
// the prefill with the features spliced in (hidden states, logits) and greedy decoding, computed through
// the public model API. As in the reference, the case's images (pixel_values, [images, 3, s, s]) fill
// the image tokens of the batch in order: item 0's first, then item 1's.
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fusionlm/core/error.hpp>
#include <fusionlm/core/tensor.hpp>
#include <fusionlm/core/threads.hpp>
#include <fusionlm/io/checkpoint.hpp>
#include <fusionlm/io/config.hpp>
#include <fusionlm/io/weights.hpp>
#include <fusionlm/models/llava.hpp>

#include "parity_case.hpp"
#include "parity_decoder.hpp"

namespace fusionlm::parity {

inline TokenMask run_llava_case(const Case& c, const LlavaConfig& config, ThreadPool& pool, CaseOutputs& out) {
    WeightBinder binder(Checkpoint::open(c.dir()));
    const LlavaModel model = bind_llava(binder, config);
    const CaseTokens tokens = CaseTokens::read(c);
    const std::int64_t B = tokens.batch, S = tokens.seq;
    auto session = model.new_session(B);

    if (c.optional_input("pixel_values")) {
        const ClipViT& vit = model.vision();
        const std::int64_t px = vit.image_size(), ch = vit.channels(), per_image = model.fusion().features_per_image();
        const TensorView& pixels = c.input("pixel_values", {-1, ch, px, px});
        if (pixels.dtype != DType::F32) throw InputError("pixel_values: dtype must be F32");
        const std::int64_t N = pixels.shape[0];
        const std::span<const float> all(pixels.as<float>(), std::size_t(pixels.numel()));
        const std::size_t image_floats = std::size_t(ch * px * px);

        std::vector<std::vector<ClipImage>> images(static_cast<std::size_t>(B));
        std::int64_t next = 0;
        for (std::int64_t b = 0; b < B; ++b) {
            const auto ids = std::span<const std::int64_t>(tokens.input_ids).subspan(std::size_t(b * S), std::size_t(S));
            const std::int64_t marks = std::count(ids.begin(), ids.end(), model.fusion().image_token_id());
            for (std::int64_t i = 0; i < marks / per_image && next < N; ++i, ++next)
                images[std::size_t(b)].push_back({all.subspan(std::size_t(next) * image_floats, image_floats)});
        }
        if (next != N)
            throw InputError("pixel_values: " + std::to_string(N) + " images, but the prompts' image tokens place " +
                             std::to_string(next));
        model.attach_images(pool, session, images, tokens.batch_view());

        // One more pass of the tower per image, past vision_feature_layer when the reference wants every
        // CLIP hidden state; the selected features are the state at that layer without the dropped rows.
        const bool want_states = c.wants("vision_hidden_states.0");
        const std::int64_t selected_layer = vit.output_layer();
        const Eigen::Index skip = vit.tokens() - per_image;  // the class token under strategy "default"
        std::vector<std::vector<float>> states;
        std::vector<float> selected;
        std::int64_t state_rows = 0, state_cols = 0;
        const VisionObserver observer = [&](std::string_view, std::int64_t index, const Eigen::Ref<const RowMatrix>& s) {
            if (index == selected_layer) selected.insert(selected.end(), s.data() + skip * s.cols(), s.data() + s.size());
            if (!want_states) return;
            if (std::int64_t(states.size()) <= index) states.resize(std::size_t(index + 1));
            states[std::size_t(index)].insert(states[std::size_t(index)].end(), s.data(), s.data() + s.size());
            state_rows = s.rows();
            state_cols = s.cols();
        };
        for (std::int64_t n = 0; n < N; ++n)
            vit.hidden_state(pool, all.subspan(std::size_t(n) * image_floats, image_floats),
                             want_states ? -1 : selected_layer, observer);
        for (std::size_t i = 0; i < states.size(); ++i)
            out.add_f32("vision_hidden_states." + std::to_string(i), {N, state_rows, state_cols}, states[i]);
        out.add_f32("image_features_selected", {N, per_image, vit.hidden_size()}, selected);
        std::vector<float> projected;
        for (const RowMatrix& e : session.fusion.image_embeds) projected.insert(projected.end(), e.data(), e.data() + e.size());
        out.add_f32("image_features", {N, per_image, config.text_config.hidden_size}, projected);
    }

    prefill_and_decode(c, model, session, tokens, config.text_config.num_hidden_layers, pool, out);
    return tokens.mask();
}

}  // namespace fusionlm::parity
