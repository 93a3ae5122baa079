// models/fusion_comparison.hpp without running a model: the analytic costs agree with each other (a token
// costs the same prefilled or decoded; MoE and dense differ by the router only), the prompts are laid out
// as each strategy needs, the cache bytes count what the cache holds, and the activation peak follows its
// stated definition. The models themselves run in test_compare_cli.cpp, through fusionlm-compare.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "fusionlm/models/fusion_comparison.hpp"

namespace fusion_comparison_test {

using namespace fusionlm;

TEST(FusionComparison, DecodingATokenCostsWhatPrefillingItDoes) {
    const ComparisonShapes s = ComparisonShapes::standard();
    const double head = 2.0 * double(s.hidden * s.vocab);  // prefill counts the lm_head once, decode per token
    for (std::int64_t n : {1, 33, 1056})
        for (std::int64_t cross : {std::int64_t(0), s.cross_layers()}) {
            const std::int64_t vision = cross ? 4 * 257 : 0;
            const double dense = prefill_flops<DenseMlp>(s, n + 1, cross, vision) -
                                 prefill_flops<DenseMlp>(s, n, cross, vision) + head;
            const double moe =
                prefill_flops<MoeMlp>(s, n + 1, cross, vision) - prefill_flops<MoeMlp>(s, n, cross, vision) + head;
            EXPECT_NEAR(dense, decode_cost<DenseMlp>(s, double(n), cross, vision).flops, 1e-9 * dense) << n;
            EXPECT_NEAR(moe, decode_cost<MoeMlp>(s, double(n), cross, vision).flops, 1e-9 * moe) << n;
        }
}

TEST(FusionComparison, MoeAndDenseShareActiveParametersButTheRouter) {
    for (const ComparisonShapes& s : {ComparisonShapes::standard(), ComparisonShapes::small(), ComparisonShapes::tiny()}) {
        EXPECT_EQ(self_layer_params<MoeMlp>(s) - self_layer_params<DenseMlp>(s), double(s.hidden * s.experts));
        // Decode reads bf16 weights: 2 bytes per parameter a token multiplies with.
        const DecodeCost c = decode_cost<DenseMlp>(s, 10, s.cross_layers(), 100);
        EXPECT_EQ(c.weight_bytes, 2 * (double(s.layers) * self_layer_params<DenseMlp>(s) +
                                       double(s.cross_layers()) * cross_layer_params(s) + double(s.hidden * s.vocab)));
    }
}

TEST(FusionComparison, CrossSlotsFollowMllamaLayout) {
    const ComparisonShapes s = ComparisonShapes::standard();  // 8 self-attention layers
    EXPECT_EQ(s.cross_slots(), (std::vector<std::int64_t>{3, 8}));
    EXPECT_EQ(s.cross_layers(), 2);
    EXPECT_EQ(s.expert_intermediate() * s.top_k, s.intermediate);
}

TEST(FusionComparison, BadShapesAreConfigErrorsNamingTheField) {
    for (const ComparisonShapes& s : {ComparisonShapes::standard(), ComparisonShapes::small(), ComparisonShapes::tiny()})
        EXPECT_NO_THROW(s.check());
    const auto expect_error = [](ComparisonShapes s, const char* field) {
        try {
            s.check();
            ADD_FAILURE() << "no error for " << field;
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
        }
    };
    ComparisonShapes s = ComparisonShapes::tiny();
    s.heads = 0;
    expect_error(s, "heads");
    s = ComparisonShapes::tiny();
    s.hidden = 65;  // not a whole number of heads
    expect_error(s, "hidden 65");
    s = ComparisonShapes::tiny();
    s.top_k = 9;
    expect_error(s, "top_k 9");
    s = ComparisonShapes::tiny();
    s.intermediate = 129;
    expect_error(s, "intermediate 129");
}

TEST(FusionComparison, PromptsAsEachStrategyLaysThemOut) {
    const ComparisonShapes s = ComparisonShapes::tiny();
    const ComparisonPrompt early = make_comparison_prompt(s, 8, 2, 16, /*cross_attention=*/false);
    EXPECT_EQ(early.seq(), 8 + 2 * 16);
    EXPECT_EQ(std::count(early.ids.begin(), early.ids.end(), s.vocab), 2 * 16);
    EXPECT_TRUE(early.cross_mask.empty());
    for (std::int64_t id : early.ids) EXPECT_TRUE(id >= 0 && id <= s.vocab) << id;

    const ComparisonPrompt cross = make_comparison_prompt(s, 8, 3, 1, /*cross_attention=*/true);
    ASSERT_EQ(cross.seq(), 8 + 3);
    const CrossAttentionMask mask = cross.cross_attention_mask();
    EXPECT_EQ(mask.seq, cross.seq());
    EXPECT_EQ(mask.images, 3);
    EXPECT_EQ(mask.tiles, 1);
    ASSERT_EQ(mask.values.size(), std::size_t(cross.seq() * 3));
    // BOS sees nothing; marker i (at position 1 + i) and every later token see image i.
    for (std::int64_t t = 0; t < cross.seq(); ++t)
        for (std::int64_t i = 0; i < 3; ++i)
            EXPECT_EQ(mask.values[std::size_t(t * 3 + i)], t >= 1 + i ? 1 : 0) << t << " " << i;
}

TEST(FusionComparison, CacheBytesCountRowsInUse) {
    DecoderState st;
    st.kv.resize(2);
    st.kv[0].emplace_back(4, 64);  // capacity is not counted, rows in use are
    st.kv[0][0].append(RowMatrix::Ones(3, 4), RowMatrix::Ones(3, 4));
    EXPECT_EQ(kv_cache_bytes(st), 3u * 4 * 2 * sizeof(float));

    GatedCrossAttention::State cross;
    cross.keys = {{RowMatrix(5, 4)}, {RowMatrix(5, 4)}};
    cross.values = cross.keys;
    cross.cross_states = {RowMatrix(5, 8)};
    cross.tile_mask.assign(6, 1);
    EXPECT_EQ(cross_kv_bytes(cross), 2u * 2 * 5 * 4 * sizeof(float));
    EXPECT_EQ(fusion_state_bytes(cross), cross_kv_bytes(cross) + 5 * 8 * sizeof(float) + 6);
    EXPECT_EQ(cross_kv_bytes(EarlyFusion<MlpProjector>::State{}), 0u);
}

TEST(FusionComparison, ActivationPeakFollowsItsDefinition) {
    const ComparisonShapes s = ComparisonShapes::tiny();  // hidden 64, q 64, kv 32, MLP 128, 8 experts of 64
    const std::int64_t n = 8, H = 64, Q = 64, KV = 32;
    const std::int64_t held = 3 * n * H + n * n;  // h, normed, delta, causal mask
    // Self-attention: q, k, v, out and one [8, 8] score panel on each of 2 threads; dense MLP: gate, up.
    const std::int64_t self_attention = 2 * n * Q + 2 * n * KV + 2 * n * n;
    EXPECT_EQ(prefill_activation_bytes<DenseMlp>(s, n, 0, 0, 2),
              std::size_t(held + std::max(self_attention, 2 * n * 128)) * sizeof(float));
    // MoE: router logits, gathered and expert output, expert gate and up, every token at one expert.
    EXPECT_EQ(prefill_activation_bytes<MoeMlp>(s, n, 0, 0, 2),
              std::size_t(held + std::max(self_attention, n * 8 + 2 * n * H + 2 * n * 64)) * sizeof(float));
    // A cross-attention layer over 1000 vision tokens: its mask [n, 1000] and score panels dominate.
    const std::int64_t cross = n * (2 * H + 2 * Q + 1000 + 1) + 2 * n * 1000;
    EXPECT_EQ(prefill_activation_bytes<DenseMlp>(s, n, 1, 1000, 2), std::size_t(held + cross) * sizeof(float));
    // The causal mask makes long prompts grow quadratically.
    EXPECT_GT(prefill_activation_bytes<DenseMlp>(s, 4096, 0, 0, 2), 4096u * 4096 * sizeof(float));
}

}  // namespace fusion_comparison_test
