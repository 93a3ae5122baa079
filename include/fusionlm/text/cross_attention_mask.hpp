#pragma once
// Llama 3.2 Vision's cross_attention_mask from the <|image|> positions of a prompt, built the way
// Hugging Face's MllamaProcessor does (get_cross_attention_token_mask followed by
// convert_sparse_cross_attention_mask_to_dense).
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"

namespace fusionlm {

// For each image tag, the token span [begin, end) that attends to that image. Each image is seen
// from its tag until the next tag; the last one reaches the end of the sequence; a run of
// consecutive tags shares the span that follows the run (so every image of "<|image|><|image|>
// text" is seen by the text), each tag's span still starting at the tag itself.
inline std::vector<std::pair<std::int64_t, std::int64_t>> cross_attention_spans(std::span<const std::int64_t> ids,
                                                                                 std::int64_t image_token_id) {
    std::vector<std::int64_t> tags;
    for (std::size_t i = 0; i < ids.size(); ++i)
        if (ids[i] == image_token_id) tags.push_back(std::int64_t(i));
    std::vector<std::pair<std::int64_t, std::int64_t>> spans;
    const auto length = std::int64_t(ids.size());
    for (std::size_t k = 0; k < tags.size(); ++k)
        spans.emplace_back(tags[k], k + 1 < tags.size() ? tags[k + 1] : length);
    // Walking back, a span of length one (a tag directly followed by another) takes the end of
    // the span after it.
    std::int64_t next_end = length;
    for (std::size_t k = spans.size(); k-- > 0;) {
        if (spans[k].first == spans[k].second - 1) spans[k].second = next_end;
        next_end = spans[k].second;
    }
    return spans;
}

// Dense mask, row-major int64 [S, max_images, max_tiles]: 1 where token s may attend to tile t of
// image i. `num_tiles` has one entry per image tag of `ids`, in order (padding slots beyond them
// stay 0). Throws InputError when the tags and the images disagree or exceed the bounds.
inline std::vector<std::int64_t> cross_attention_mask(std::span<const std::int64_t> ids, std::int64_t image_token_id,
                                                      std::span<const std::int64_t> num_tiles, std::size_t max_images,
                                                      std::size_t max_tiles) {
    const auto spans = cross_attention_spans(ids, image_token_id);
    if (spans.size() != num_tiles.size())
        throw InputError("cross_attention_mask: the prompt has " + std::to_string(spans.size()) +
                         " image tokens but " + std::to_string(num_tiles.size()) + " images were given");
    if (spans.size() > max_images)
        throw InputError("cross_attention_mask: " + std::to_string(spans.size()) + " images exceed max_images " +
                         std::to_string(max_images));
    std::vector<std::int64_t> mask(ids.size() * max_images * max_tiles, 0);
    for (std::size_t i = 0; i < spans.size(); ++i) {
        if (num_tiles[i] < 0 || std::size_t(num_tiles[i]) > max_tiles)
            throw InputError("cross_attention_mask: image " + std::to_string(i) + " has " + std::to_string(num_tiles[i]) +
                             " tiles, outside [0, " + std::to_string(max_tiles) + "]");
        const auto [begin, end] = spans[i];
        for (std::int64_t s = begin; s < end; ++s) {
            std::int64_t* row = mask.data() + (std::size_t(s) * max_images + i) * max_tiles;
            for (std::int64_t t = 0; t < num_tiles[i]; ++t) row[t] = 1;
        }
    }
    return mask;
}

}  // namespace fusionlm
