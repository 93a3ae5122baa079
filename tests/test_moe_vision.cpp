// Composition: a vision model whose decoder uses MoeMlp, under both fusion policies. Mllama's structure
// (tiled ViT, gated cross-attention) and LLaVA's (CLIP ViT, early fusion), with every self-attention
// layer's MLP replaced by an MoE block whose 4 experts are copies of that layer's dense MLP, top-2
// renormalised behind a random router: the block then computes exactly the dense MLP, so the whole model
// must still reproduce the golden logits, while the router logits show every routed layer ran through
// MoeMlp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "fusionlm/core/threads.hpp"
#include "fusionlm/fusion_model.hpp"
#include "fusionlm/io/checkpoint.hpp"
#include "fusionlm/io/config.hpp"
#include "fusionlm/io/safetensors.hpp"
#include "fusionlm/io/weights.hpp"
#include "fusionlm/models/llava.hpp"
#include "fusionlm/models/mllama.hpp"
#include "fusionlm/text_model/moe.hpp"

namespace moe_vision_test {

using namespace fusionlm;
namespace fs = std::filesystem;

using MoeMllama = FusionModel<TiledViT, GatedCrossAttention, Decoder<MoeMlp>>;
using MoeLlava = FusionModel<ClipViT, EarlyFusion<MlpProjector>, Decoder<MoeMlp>>;

const fs::path kCase = fs::path(FUSIONLM_TEST_DATA) / "golden" / "mllama_tiny";

// Both families name the text model's embedding and final norm alike (language_model.model.*).
template <class Vision, class Fusion>
FusionModel<Vision, Fusion, Decoder<MoeMlp>> moe_variant(const FusionModel<Vision, Fusion, Decoder<DenseMlp>>& dense,
                                                         const Checkpoint& ckpt, std::vector<std::uint16_t>& router_store) {
    const Decoder<DenseMlp>& d = dense.decoder();
    const std::int64_t H = d.config().hidden_size, L = d.config().num_layers, E = 4;
    std::mt19937 rng(8);
    std::normal_distribution<float> nd(0.f, 0.5f);
    router_store.resize(std::size_t(L * E * H));
    for (auto& v : router_store) v = f32_to_bf16(nd(rng));

    std::vector<std::optional<DecoderLayer<MoeMlp>>> layers(static_cast<std::size_t>(L));
    for (std::int64_t i = 0; i < L; ++i) {
        if (!d.has_layer(i)) continue;
        const DecoderLayer<DenseMlp>& src = d.layer(i);
        const Linear router{TensorView{"layers." + std::to_string(i) + ".router", DType::BF16, {E, H},
                                       reinterpret_cast<const std::byte*>(router_store.data() + i * E * H)},
                            {}};
        layers[std::size_t(i)] = DecoderLayer<MoeMlp>{src.input_layernorm, src.self_attn, src.post_attention_layernorm,
                                                      MoeMlp(router, std::vector<DenseMlp>(std::size_t(E), src.mlp), 2,
                                                             /*norm_topk_prob=*/true)};
    }
    Decoder<MoeMlp> decoder(d.config(), ckpt.get("language_model.model.embed_tokens.weight"), std::move(layers),
                            ckpt.get("language_model.model.norm.weight").to_f32(), d.lm_head());
    return FusionModel<Vision, Fusion, Decoder<MoeMlp>>(dense.vision(), dense.fusion(), std::move(decoder),
                                                        std::make_shared<const Checkpoint>(ckpt));
}

// max |got - ref| over the rows whose mask is 1 (all rows for an empty mask), and that over max |ref|.
std::pair<double, double> logits_error(const RowMatrix& got, const RowMatrix& ref, const std::vector<std::int64_t>& mask) {
    EXPECT_EQ(got.rows(), ref.rows());
    double diff = 0, scale = 0;
    for (Eigen::Index r = 0; r < ref.rows() && r < got.rows(); ++r) {
        if (!mask.empty() && !mask[std::size_t(r)]) continue;
        diff = std::max(diff, double((got.row(r) - ref.row(r)).cwiseAbs().maxCoeff()));
        scale = std::max(scale, double(ref.row(r).cwiseAbs().maxCoeff()));
    }
    return {diff, diff / scale};
}

TEST(MoeComposition, MllamaWithMoeBlocksMatchesDenseReference) {
    const ModelConfig config = load_config(kCase / "config.json");
    const Checkpoint ckpt = Checkpoint::open(kCase);
    WeightBinder binder(ckpt);
    const MllamaModel dense = bind_mllama(binder, std::get<MllamaConfig>(config.family));
    std::vector<std::uint16_t> router_store;
    const MoeMllama model = moe_variant(dense, ckpt, router_store);

    const SafetensorsFile inputs = SafetensorsFile::open(kCase / "inputs.safetensors");
    const SafetensorsFile expected = SafetensorsFile::open(kCase / "expected.safetensors");
    const std::vector<std::int64_t> ids = to_i64(inputs.get("input_ids")), mask = to_i64(inputs.get("attention_mask")),
                                    positions = to_i64(inputs.get("position_ids")),
                                    ar_ids = to_i64(inputs.get("aspect_ratio_ids")),
                                    ar_mask = to_i64(inputs.get("aspect_ratio_mask")),
                                    xmask = to_i64(inputs.get("cross_attention_mask"));
    const TensorView& pixels = inputs.get("pixel_values");  // [B, I, T, 3, px, px]
    const std::int64_t B = pixels.shape[0], I = pixels.shape[1], T = pixels.shape[2];
    const std::int64_t S = inputs.get("input_ids").shape[1];
    const std::size_t image_floats = std::size_t(T * pixels.shape[3] * pixels.shape[4] * pixels.shape[5]);
    const std::span<const float> all(pixels.as<float>(), std::size_t(pixels.numel()));
    std::vector<std::vector<MllamaImage>> images(static_cast<std::size_t>(B));
    for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t i = 0; i < I; ++i) {
            const std::size_t slot = std::size_t(b * I + i);
            images[std::size_t(b)].push_back({all.subspan(slot * image_floats, image_floats), ar_ids[slot],
                                              std::span<const std::int64_t>(ar_mask).subspan(slot * std::size_t(T),
                                                                                             std::size_t(T))});
        }

    ThreadPool pool(2);
    auto session = model.new_session(B);
    model.attach_images(pool, session, images, CrossAttentionMask{B, S, I, T, xmask});
    DecoderTrace trace;
    const RowMatrix logits = model.forward(pool, session, TokenBatch{B, S, ids, mask, positions}, Logits::All, &trace);

    const auto [diff, rel] = logits_error(logits, to_row_matrix(expected.get("logits")), mask);
    EXPECT_LE(rel, 1e-4);
    EXPECT_LE(diff, 1e-3);

    // Router logits for the self-attention layers only; the cross-attention slots belong to the policy.
    std::vector<std::int64_t> routed;
    for (const auto& [layer, r] : trace.router_logits) {
        routed.push_back(layer);
        EXPECT_EQ(r.rows(), B * S);
        EXPECT_EQ(r.cols(), 4);
    }
    std::vector<std::int64_t> self_layers;
    for (std::int64_t i = 0; i < model.decoder().config().num_layers; ++i)
        if (model.decoder().has_layer(i)) self_layers.push_back(i);
    EXPECT_EQ(routed, self_layers);
    EXPECT_LT(self_layers.size(), std::size_t(model.decoder().config().num_layers));

    // Decoding through the caches (KV and cross-attention) keeps working with the MoE decoder.
    std::vector<std::int64_t> next(static_cast<std::size_t>(B), 5);
    const RowMatrix step = model.forward(pool, session, TokenBatch{B, 1, next, {}, {}}, Logits::Last);
    EXPECT_EQ(step.rows(), B);
    EXPECT_TRUE(step.allFinite());
}

TEST(MoeComposition, LlavaWithMoeBlocksMatchesDenseReference) {
    const fs::path dir = fs::path(FUSIONLM_TEST_DATA) / "golden" / "llava_tiny";
    const ModelConfig config = load_config(dir / "config.json");
    const Checkpoint ckpt = Checkpoint::open(dir);
    WeightBinder binder(ckpt);
    const LlavaModel dense = bind_llava(binder, std::get<LlavaConfig>(config.family));
    std::vector<std::uint16_t> router_store;
    const MoeLlava model = moe_variant(dense, ckpt, router_store);

    const SafetensorsFile inputs = SafetensorsFile::open(dir / "inputs.safetensors");
    const SafetensorsFile expected = SafetensorsFile::open(dir / "expected.safetensors");
    const std::vector<std::int64_t> ids = to_i64(inputs.get("input_ids"));
    const TensorView& pixels = inputs.get("pixel_values");  // [1, 3, px, px]
    const TokenBatch tokens{1, std::int64_t(ids.size()), ids, {}, {}};
    ThreadPool pool(2);
    auto session = model.new_session(1);
    model.attach_images(pool, session,
                        std::vector<std::vector<ClipImage>>{
                            {ClipImage{std::span<const float>(pixels.as<float>(), std::size_t(pixels.numel()))}}},
                        tokens);
    DecoderTrace trace;
    const RowMatrix logits = model.forward(pool, session, tokens, Logits::All, &trace);
    const auto [diff, rel] = logits_error(logits, to_row_matrix(expected.get("logits")), {});
    EXPECT_LE(rel, 1e-4);
    EXPECT_LE(diff, 1e-3);
    EXPECT_EQ(std::int64_t(trace.router_logits.size()), model.decoder().config().num_layers);
}

}  // namespace moe_vision_test
