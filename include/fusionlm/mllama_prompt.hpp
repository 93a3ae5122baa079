#pragma once
// One Llama 3.2 Vision prompt's images into a session: preprocess them as the checkpoint's
// MllamaImageProcessor says, encode them once, and attach them to the cross-attention layers with the
// mask MllamaProcessor builds from the prompt's <|image|> tags.
#include <cstdint>
#include <span>
#include <vector>

#include "core/threads.hpp"
#include "fusion/cross_attention.hpp"
#include "image/image.hpp"
#include "image/processor.hpp"
#include "models/mllama.hpp"
#include "text/cross_attention_mask.hpp"

namespace fusionlm {

inline void attach_prompt_images(ThreadPool& pool, const MllamaModel& model, MllamaModel::Session& session,
                                 const MllamaImageProcessor& processor, std::span<const Image> images,
                                 std::span<const std::int64_t> prompt_ids, std::int64_t image_token_index) {
    if (images.empty()) return;
    const MllamaImageBatch batch = processor.process(images);
    const auto n = std::size_t(batch.num_images), tiles = std::size_t(batch.max_image_tiles);
    const std::size_t per_image = batch.pixel_values.size() / n;
    std::vector<MllamaImage> slots;
    for (std::size_t i = 0; i < n; ++i)
        slots.push_back({std::span(batch.pixel_values).subspan(i * per_image, per_image), batch.aspect_ratio_ids[i],
                         std::span(batch.aspect_ratio_mask).subspan(i * tiles, tiles)});
    const auto mask = cross_attention_mask(prompt_ids, image_token_index, batch.num_tiles, n, tiles);
    model.attach_images(pool, session, std::vector<std::vector<MllamaImage>>{slots},
                        CrossAttentionMask{1, std::int64_t(prompt_ids.size()), std::int64_t(n), std::int64_t(tiles), mask});
}

}  // namespace fusionlm
