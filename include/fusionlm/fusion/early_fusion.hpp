#pragma once
// Early fusion (LLaVA, "unified embedding"): each image's vision features are projected to the text
// width and written over the embeddings of the image tokens of the prompt, one feature row per image
// token, images in prompt order. The decoder then attends to them like text; the policy owns no layer.
// Feature selection follows the reference: the vision tower outputs the hidden state of
// vision_feature_layer; strategy "default" drops each image's class token, "full" keeps it.
#include <Eigen/Core>
#include <algorithm>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../text_model/decoder.hpp"

namespace fusionlm {

// A projector maps [rows, in_features] vision features to [rows, out_features] text embeddings.
template <class P>
concept ImageProjector = requires(const P& p, ThreadPool& pool, const RowMatrix& x) {
    { p.in_features() } -> std::convertible_to<std::int64_t>;
    { p.out_features() } -> std::convertible_to<std::int64_t>;
    { p.forward(pool, x) } -> std::convertible_to<RowMatrix>;
};

template <ImageProjector Projector>
class EarlyFusion {
public:
    struct State {
        std::int64_t batch = 0;
        bool attached = false;
        std::int64_t prompt_len = 0;               // image tokens are spliced at positions < prompt_len
        std::vector<RowMatrix> image_embeds;       // [item]: projected features, [image tokens, hidden]
        std::vector<Eigen::Index> next_row;        // [item]: the next row of image_embeds to splice
    };

    // tokens_per_image: rows the vision tower yields per image (class token included);
    // drop_class_token: strategy "default" (true) or "full" (false).
    EarlyFusion(Projector projector, std::int64_t image_token_id, std::int64_t hidden_size,
                std::int64_t tokens_per_image, bool drop_class_token)
        : projector_(std::move(projector)), image_token_id_(image_token_id), hidden_(hidden_size),
          tokens_per_image_(tokens_per_image), drop_class_token_(drop_class_token) {
        if (projector_.out_features() != hidden_)
            throw ShapeError("multi_modal_projector: outputs " + std::to_string(projector_.out_features()) +
                             " features, the text model's hidden_size is " + std::to_string(hidden_));
        if (tokens_per_image_ <= (drop_class_token_ ? 1 : 0))
            throw ConfigError("vision tower: " + std::to_string(tokens_per_image_) + " tokens per image leave no features");
    }

    std::int64_t image_token_id() const { return image_token_id_; }
    std::int64_t vision_dim() const { return projector_.in_features(); }
    // Image tokens each image takes in the prompt (LLaVA's image_seq_length).
    std::int64_t features_per_image() const { return tokens_per_image_ - (drop_class_token_ ? 1 : 0); }
    const Projector& projector() const { return projector_; }

    State new_state(std::int64_t batch) const {
        State st;
        st.batch = batch;
        st.image_embeds.assign(std::size_t(batch), RowMatrix(0, Eigen::Index(hidden_)));
        st.next_row.assign(std::size_t(batch), 0);
        return st;
    }

    // vision[b]: item b's images encoded and concatenated, [images * tokens_per_image, vision_dim].
    // prompt: the tokens the caller is about to feed; each item must hold exactly one image token per
    // selected feature row of its images, or InputError says how many it has and how many were needed.
    void attach(ThreadPool& pool, State& st, std::span<const RowMatrix> vision, const TokenBatch& prompt) const {
        if (std::int64_t(vision.size()) != st.batch || prompt.batch != st.batch)
            throw InputError("early fusion: images for " + std::to_string(vision.size()) + " items and a prompt of batch " +
                             std::to_string(prompt.batch) + ", but the session has batch " + std::to_string(st.batch));
        if (prompt.seq <= 0 || std::int64_t(prompt.input_ids.size()) != prompt.batch * prompt.seq)
            throw InputError("early fusion: prompt input_ids hold " + std::to_string(prompt.input_ids.size()) +
                             " ids for batch " + std::to_string(prompt.batch) + " x seq " + std::to_string(prompt.seq));
        std::vector<RowMatrix> embeds(vision.size());
        for (std::size_t b = 0; b < vision.size(); ++b) {
            const RowMatrix& v = vision[b];
            if (v.rows() > 0 && (v.cols() != vision_dim() || v.rows() % tokens_per_image_ != 0))
                throw InputError("early fusion: item " + std::to_string(b) + ": vision features [" +
                                 std::to_string(v.rows()) + ", " + std::to_string(v.cols()) + "] are not whole images of [" +
                                 std::to_string(tokens_per_image_) + ", " + std::to_string(vision_dim()) + "]");
            const Eigen::Index images = v.rows() / tokens_per_image_;
            const std::int64_t needed = std::int64_t(images) * features_per_image();
            const auto ids = prompt.input_ids.subspan(b * std::size_t(prompt.seq), std::size_t(prompt.seq));
            const std::int64_t have = std::count(ids.begin(), ids.end(), image_token_id_);
            if (have != needed)
                throw InputError("prompt item " + std::to_string(b) + " has " + std::to_string(have) +
                                 " image tokens (id " + std::to_string(image_token_id_) + "), but its " +
                                 std::to_string(images) + " image(s) give " + std::to_string(needed) + " (" +
                                 std::to_string(features_per_image()) + " per image)");
            embeds[b] = select_and_project(pool, v, images);
        }
        st.image_embeds = std::move(embeds);
        st.next_row.assign(vision.size(), 0);
        st.prompt_len = prompt.seq;
        st.attached = true;
    }

    // Writes the next image rows over the embeddings of the image tokens of the attached prompt. Checks
    // every item before changing anything, so a bad call leaves the session as it was.
    void embed(ThreadPool&, State& st, const DecoderStep& step, std::span<const std::int64_t> ids,
               Eigen::Ref<RowMatrix> h) const {
        const std::int64_t in_prompt = st.attached ? std::max<std::int64_t>(0, st.prompt_len - step.past) : 0;
        const std::int64_t splice_len = std::min(step.seq, in_prompt);
        for (std::int64_t b = 0; b < step.batch; ++b) {
            const auto row = ids.subspan(std::size_t(b * step.seq), std::size_t(step.seq));
            if (!st.attached) {
                // A first chunk with image tokens but no images: the prompt has more markers than images.
                if (step.past == 0 && std::find(row.begin(), row.end(), image_token_id_) != row.end())
                    throw InputError("input_ids: item " + std::to_string(b) + " holds image tokens (id " +
                                     std::to_string(image_token_id_) + ") but no images are attached");
                continue;
            }
            const auto in = row.first(std::size_t(splice_len));
            const Eigen::Index want = std::count(in.begin(), in.end(), image_token_id_);
            const Eigen::Index left = st.image_embeds[std::size_t(b)].rows() - st.next_row[std::size_t(b)];
            if (want > left || (step.past + step.seq >= st.prompt_len && want != left))
                throw InputError("input_ids: item " + std::to_string(b) + " feeds " + std::to_string(want) +
                                 " image tokens where the attached prompt has " + std::to_string(left) + " left");
        }
        if (!st.attached) return;
        for (std::int64_t b = 0; b < step.batch; ++b) {
            const RowMatrix& embeds = st.image_embeds[std::size_t(b)];
            Eigen::Index& next = st.next_row[std::size_t(b)];
            for (std::int64_t s = 0; s < splice_len; ++s)
                if (ids[std::size_t(b * step.seq + s)] == image_token_id_)
                    h.row(Eigen::Index(b * step.seq + s)) = embeds.row(next++);
        }
    }

    bool owns_layer(std::int64_t) const { return false; }
    void forward_layer(std::int64_t, ThreadPool&, State&, const DecoderStep&, Eigen::Ref<RowMatrix>) const {}

private:
    RowMatrix select_and_project(ThreadPool& pool, const RowMatrix& v, Eigen::Index images) const {
        if (images == 0) return RowMatrix(0, Eigen::Index(hidden_));
        if (!drop_class_token_) return projector_.forward(pool, v);
        const Eigen::Index per = Eigen::Index(features_per_image()), T = Eigen::Index(tokens_per_image_);
        RowMatrix selected(images * per, v.cols());
        for (Eigen::Index i = 0; i < images; ++i) selected.middleRows(i * per, per) = v.middleRows(i * T + 1, per);
        return projector_.forward(pool, selected);
    }

    Projector projector_;
    std::int64_t image_token_id_;
    std::int64_t hidden_;
    std::int64_t tokens_per_image_;
    bool drop_class_token_;
};

}  // namespace fusionlm
