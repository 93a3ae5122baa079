#pragma once
// One LLaVA prompt's images into a session: check that the prompt has one image marker per image,
// expand each marker to the image tokens its features fill (what LlavaProcessor does), preprocess the
// images as the checkpoint's CLIPImageProcessor says, encode them once and attach them.
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/threads.hpp"
#include "image/image.hpp"
#include "image/processor.hpp"
#include "models/llava.hpp"
#include "text_model/decoder.hpp"

namespace fusionlm {

// prompt_ids: the tokenized prompt with one image token per image, or already expanded (each image's
// features_per_image tokens). Returns the expanded ids, which are the tokens to feed.
inline std::vector<std::int64_t> attach_prompt_images(ThreadPool& pool, const LlavaModel& model,
                                                      LlavaModel::Session& session, const ClipImageProcessor& processor,
                                                      std::span<const Image> images,
                                                      std::span<const std::int64_t> prompt_ids) {
    const auto& fusion = model.fusion();
    const std::int64_t marker = fusion.image_token_id(), per_image = fusion.features_per_image();
    const auto n = std::int64_t(images.size());
    const std::int64_t markers = std::count(prompt_ids.begin(), prompt_ids.end(), marker);
    const bool expanded = markers == n * per_image && markers != n;
    if (markers != n && !expanded)
        throw InputError("prompt has " + std::to_string(markers) + " image markers (token " + std::to_string(marker) +
                         ") but " + std::to_string(n) + " image(s) were given");
    std::vector<std::int64_t> ids;
    ids.reserve(prompt_ids.size() + std::size_t(expanded ? 0 : n * (per_image - 1)));
    for (const std::int64_t id : prompt_ids) {
        if (id == marker && !expanded)
            ids.insert(ids.end(), std::size_t(per_image), marker);
        else
            ids.push_back(id);
    }
    if (n == 0) return ids;

    const ClipImageBatch batch = processor.process(images);
    const ClipViT& vit = model.vision();
    if (batch.height != vit.image_size() || batch.width != vit.image_size())
        throw InputError("preprocessor_config.json: images come out " + std::to_string(batch.height) + "x" +
                         std::to_string(batch.width) + ", the vision tower takes " + std::to_string(vit.image_size()) +
                         "x" + std::to_string(vit.image_size()));
    const std::size_t per = batch.pixel_values.size() / std::size_t(n);
    std::vector<ClipImage> item;
    for (std::size_t i = 0; i < std::size_t(n); ++i)
        item.push_back({std::span<const float>(batch.pixel_values).subspan(i * per, per)});
    const std::int64_t seq = std::int64_t(ids.size());
    model.attach_images(pool, session, std::vector<std::vector<ClipImage>>{item}, TokenBatch{1, seq, ids, {}, {}});
    return ids;
}

}  // namespace fusionlm
