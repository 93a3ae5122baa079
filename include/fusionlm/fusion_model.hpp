#pragma once
// A multimodal model as a composition: a vision encoder, a fusion policy that decides how its output
// enters the text model, and a decoder. The model is immutable once built (share it freely); what
// changes while generating lives in a Session the caller owns.
#include <Eigen/Core>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "core/tensor.hpp"
#include "core/threads.hpp"
#include "text_model/decoder.hpp"
#include "vision/observer.hpp"

namespace fusionlm {

// Vision: any encoder; each family's image type provides, next to its definition,
//         `RowMatrix encode_image(const Vision&, ThreadPool&, const Image&, const VisionObserver*)`
//         -> [tokens, features] (found by argument-dependent lookup).
// Fusion: a FusionPolicy with `State new_state(batch)` and
//         `attach(ThreadPool&, State&, std::span<const RowMatrix> per_item_features, const Placement&)`.
// Decoder: Decoder<Mlp>.
template <class Vision, class Fusion, class Dec>
    requires FusionPolicy<Fusion>
class FusionModel {
public:
    struct Session {
        typename Fusion::State fusion;
        DecoderState decoder;
        std::int64_t batch() const { return decoder.batch; }
    };

    // weights: whatever owns the memory the modules' weight views point into (a Checkpoint); kept alive.
    FusionModel(Vision vision, Fusion fusion, Dec decoder, std::shared_ptr<const void> weights = {})
        : vision_(std::move(vision)), fusion_(std::move(fusion)), decoder_(std::move(decoder)),
          weights_(std::move(weights)) {}

    const Vision& vision() const { return vision_; }
    const Fusion& fusion() const { return fusion_; }
    const Dec& decoder() const { return decoder_; }

    Session new_session(std::int64_t batch) const {
        if (batch <= 0) throw InputError("session: batch " + std::to_string(batch) + " is not positive");
        return Session{fusion_.new_state(batch), decoder_.new_state(batch)};
    }

    // Encodes every image of every batch item once (images[b] = item b's images in prompt order) and hands
    // the features to the fusion policy, which caches what it needs for the whole session. Returns the
    // encoder output per item, the images' rows concatenated.
    template <class Image, class Placement>
    std::vector<RowMatrix> attach_images(ThreadPool& pool, Session& session, const std::vector<std::vector<Image>>& images,
                                         const Placement& placement, const VisionObserver* observer = nullptr) const {
        if (std::int64_t(images.size()) != session.batch())
            throw InputError("images given for " + std::to_string(images.size()) + " batch items, session has " +
                             std::to_string(session.batch()));
        std::vector<RowMatrix> features(images.size());
        for (std::size_t b = 0; b < images.size(); ++b) {
            std::vector<RowMatrix> encoded;
            Eigen::Index rows = 0;
            for (const auto& image : images[b]) {
                encoded.push_back(encode_image(vision_, pool, image, observer));
                rows += encoded.back().rows();
            }
            if (encoded.empty()) continue;
            features[b].resize(rows, encoded.front().cols());
            Eigen::Index at = 0;
            for (const auto& e : encoded) {
                if (e.cols() != features[b].cols())
                    throw ShapeError("vision encoder returned features of width " + std::to_string(e.cols()) +
                                     " and " + std::to_string(features[b].cols()));
                features[b].middleRows(at, e.rows()) = e;
                at += e.rows();
            }
        }
        fusion_.attach(pool, session.fusion, std::span<const RowMatrix>(features), placement);
        return features;
    }

    // Runs new tokens (a prompt chunk or one generated token per item) through the decoder.
    RowMatrix forward(ThreadPool& pool, Session& session, const TokenBatch& tokens, Logits which,
                      DecoderTrace* trace = nullptr) const {
        return decoder_.forward(pool, tokens, session.decoder, fusion_, session.fusion, which, trace);
    }

    std::int64_t vocab_size() const { return decoder_.vocab_size(); }

private:
    Vision vision_;
    Fusion fusion_;
    Dec decoder_;
    std::shared_ptr<const void> weights_;
};

}  // namespace fusionlm
