// Mllama through the library: the text side against the golden case (fed the reference's vision output),
// the whole model (vision included) through the parity runner, KV-cached generation against uncached
// recomputation, chunked prefill, stop tokens, and bf16 weights.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "../examples/parity_case.hpp"
#include "../examples/parity_mllama.hpp"
#include "fusionlm/core/threads.hpp"
#include "fusionlm/generate.hpp"
#include "fusionlm/io/checkpoint.hpp"
#include "fusionlm/io/config.hpp"
#include "fusionlm/io/safetensors.hpp"
#include "fusionlm/io/weights.hpp"
#include "fusionlm/models/mllama.hpp"

using namespace fusionlm;
namespace fs = std::filesystem;

namespace mllama_test {

const fs::path kCase = fs::path(FUSIONLM_TEST_DATA) / "golden" / "mllama_tiny";

struct Golden {
    SafetensorsFile inputs = SafetensorsFile::open(kCase / "inputs.safetensors");
    SafetensorsFile expected = SafetensorsFile::open(kCase / "expected.safetensors");
    std::vector<std::int64_t> ids = to_i64(inputs.get("input_ids"));
    std::vector<std::int64_t> mask = to_i64(inputs.get("attention_mask"));
    std::vector<std::int64_t> positions = to_i64(inputs.get("position_ids"));
    std::vector<std::int64_t> xmask = to_i64(inputs.get("cross_attention_mask"));
    std::int64_t B = inputs.get("input_ids").shape[0], S = inputs.get("input_ids").shape[1];
    std::int64_t I = inputs.get("cross_attention_mask").shape[2], T = inputs.get("cross_attention_mask").shape[3];

    TokenBatch tokens() const { return {B, S, ids, mask, positions}; }
    CrossAttentionMask cross_mask() const { return {B, S, I, T, xmask}; }

    // The reference's vision_output of item b, [I * T * (patches + 1), vision_output_dim].
    std::vector<RowMatrix> vision_output() const {
        const TensorView& v = expected.get("vision_output");
        const RowMatrix all = to_row_matrix(v);
        const Eigen::Index per_item = all.rows() / Eigen::Index(B);
        std::vector<RowMatrix> r;
        for (std::int64_t b = 0; b < B; ++b) r.push_back(all.middleRows(Eigen::Index(b) * per_item, per_item));
        return r;
    }
};

MllamaModel load_golden_model() { return load_mllama(kCase); }

// max |a - e| / max |e| over the rows of real tokens (rows = item * S + token).
double rel_error_real(const RowMatrix& got, const TensorView& exp, const std::vector<std::int64_t>& mask) {
    const RowMatrix e = to_row_matrix(exp);
    EXPECT_EQ(got.rows(), e.rows()) << exp.name;
    EXPECT_EQ(got.cols(), e.cols()) << exp.name;
    if (got.rows() != e.rows() || got.cols() != e.cols()) return INFINITY;
    double diff = 0, scale = 0;
    for (Eigen::Index r = 0; r < e.rows(); ++r) {
        if (!mask.empty() && mask[std::size_t(r)] == 0) continue;
        diff = std::max(diff, double((got.row(r) - e.row(r)).cwiseAbs().maxCoeff()));
        scale = std::max(scale, double(e.row(r).cwiseAbs().maxCoeff()));
    }
    return diff / scale;
}


TEST(MllamaText, MatchesGoldenGivenReferenceVisionOutput) {
    const Golden g;
    const MllamaModel model = load_golden_model();
    ThreadPool pool(2);
    auto session = model.new_session(g.B);
    const auto vision = g.vision_output();
    model.fusion().attach(pool, session.fusion, vision, g.cross_mask());

    // The projector output, and the per-row masking the reference derives from the mask.
    RowMatrix cross(g.B * session.fusion.vision_tokens, model.decoder().config().hidden_size);
    for (std::int64_t b = 0; b < g.B; ++b)
        cross.middleRows(Eigen::Index(b * session.fusion.vision_tokens), Eigen::Index(session.fusion.vision_tokens)) =
            session.fusion.cross_states[std::size_t(b)];
    EXPECT_LE(rel_error_real(cross, g.expected.get("cross_attention_states"), {}), 1e-5);
    const RowMatrix row_mask = to_row_matrix(g.expected.get("full_text_row_masked_out_mask"));
    for (std::int64_t b = 0; b < g.B; ++b)
        for (std::int64_t s = 0; s < g.S; ++s)
            EXPECT_EQ(model.fusion().row_sees_image(session.fusion, b, s), row_mask(b, s) != 0.f)
                << "item " << b << " token " << s;

    DecoderTrace trace;
    const RowMatrix logits = model.forward(pool, session, g.tokens(), Logits::All, &trace);
    ASSERT_EQ(trace.hidden_states.size(), 7u);
    for (std::size_t i = 0; i < trace.hidden_states.size(); ++i)
        EXPECT_LE(rel_error_real(trace.hidden_states[i], g.expected.get("hidden_states." + std::to_string(i)), g.mask),
                  1e-4)
            << "hidden_states." << i;
    EXPECT_LE(rel_error_real(trace.last_layer_output, g.expected.get("layer_output.5"), g.mask), 1e-4);
    const RowMatrix exp_logits = to_row_matrix(g.expected.get("logits"));
    EXPECT_LE(rel_error_real(logits, g.expected.get("logits"), g.mask), 1e-4);
    double max_abs = 0;
    for (Eigen::Index r = 0; r < logits.rows(); ++r)
        if (g.mask[std::size_t(r)]) max_abs = std::max(max_abs, double((logits.row(r) - exp_logits.row(r)).cwiseAbs().maxCoeff()));
    EXPECT_LE(max_abs, 1e-3);
}

// The whole model (vision included) through the parity runner, on the golden case and on a held-out
// case of other shapes with bf16 weights (tests/data/heldout/README.md).
class MllamaCase : public ::testing::TestWithParam<const char*> {};

TEST_P(MllamaCase, EveryReferenceTensorWithinTolerance) {
    const parity::Case c(fs::path(FUSIONLM_TEST_DATA) / GetParam());
    const ModelConfig config = load_config(c.dir() / "config.json");
    ThreadPool pool(2);
    parity::CaseOutputs out;
    const parity::TokenMask mask = parity::run_mllama_case(c, std::get<MllamaConfig>(config.family), pool, out);
    const auto results = parity::compare_all(*c.expected(), out, mask);
    EXPECT_EQ(results.size(), c.expected()->size());
    for (const auto& r : results) {
        EXPECT_TRUE(r.problem.empty()) << r.name << ": " << r.problem;
        EXPECT_TRUE(r.ok) << r.name << " max_abs " << r.max_abs << " rel " << r.rel;
    }
    const OwnedTensor* tokens = out.find("greedy_tokens");
    ASSERT_NE(tokens, nullptr);
    EXPECT_EQ(to_i64(tokens->view()), to_i64(c.expected()->get("greedy_tokens")));
}

INSTANTIATE_TEST_SUITE_P(Cases, MllamaCase, ::testing::Values("golden/mllama_tiny", "heldout/mllama_bf16"));

// Every generated token's logits with the KV cache (and cached cross-attention K/V) equal a fresh,
// uncached prefill of prompt + generated tokens.
TEST(MllamaGenerate, CachedDecodingMatchesUncachedRecompute) {
    const Golden g;
    const MllamaModel model = load_golden_model();
    ThreadPool pool(2);
    const auto vision = g.vision_output();
    auto session = model.new_session(g.B);
    model.fusion().attach(pool, session.fusion, vision, g.cross_mask());
    GenerateOptions opt;
    opt.max_new_tokens = 5;
    opt.keep_scores = true;
    const GenerateResult r = generate(pool, model, session, g.tokens(), opt);
    ASSERT_EQ(r.scores.size(), 5u);
    EXPECT_EQ(session.decoder.length(), g.S + 4);

    // Uncached: item by item, prompt + the first k generated tokens, with the mask's last row repeated.
    for (std::int64_t b = 0; b < g.B; ++b) {
        for (std::size_t k = 1; k < r.scores.size(); ++k) {
            const std::int64_t S = g.S + std::int64_t(k);
            std::vector<std::int64_t> ids(g.ids.begin() + b * g.S, g.ids.begin() + (b + 1) * g.S);
            std::vector<std::int64_t> mask(g.mask.begin() + b * g.S, g.mask.begin() + (b + 1) * g.S);
            std::vector<std::int64_t> xm(g.xmask.begin() + b * g.S * g.I * g.T, g.xmask.begin() + (b + 1) * g.S * g.I * g.T);
            for (std::size_t j = 0; j < k; ++j) {
                ids.push_back(r.tokens[std::size_t(b)][j]);
                mask.push_back(1);
                const std::vector<std::int64_t> last(xm.end() - g.I * g.T, xm.end());
                xm.insert(xm.end(), last.begin(), last.end());
            }
            auto fresh = model.new_session(1);
            model.fusion().attach(pool, fresh.fusion, std::span<const RowMatrix>(&vision[std::size_t(b)], 1),
                                  CrossAttentionMask{1, S, g.I, g.T, xm});
            const RowMatrix logits = model.forward(pool, fresh, TokenBatch{1, S, ids, mask, {}}, Logits::Last);
            const double diff = (logits.row(0) - r.scores[k].row(Eigen::Index(b))).cwiseAbs().maxCoeff();
            EXPECT_LE(diff, 1e-4) << "item " << b << " step " << k;
        }
    }
}

// A prompt prefilled in two chunks gives the same last logits as one prefill.
TEST(MllamaGenerate, ChunkedPrefillMatchesSinglePrefill) {
    const Golden g;
    const MllamaModel model = load_golden_model();
    ThreadPool pool(1);
    const auto vision = g.vision_output();
    auto one = model.new_session(g.B);
    model.fusion().attach(pool, one.fusion, vision, g.cross_mask());
    const RowMatrix full = model.forward(pool, one, g.tokens(), Logits::Last);

    auto two = model.new_session(g.B);
    model.fusion().attach(pool, two.fusion, vision, g.cross_mask());
    const std::int64_t first = 6, rest = g.S - first;
    std::vector<std::int64_t> ids[2], mask[2], pos[2];
    for (std::int64_t b = 0; b < g.B; ++b)
        for (std::int64_t s = 0; s < g.S; ++s) {
            const int part = s < first ? 0 : 1;
            ids[part].push_back(g.ids[std::size_t(b * g.S + s)]);
            mask[part].push_back(g.mask[std::size_t(b * g.S + s)]);
            pos[part].push_back(g.positions[std::size_t(b * g.S + s)]);
        }
    model.forward(pool, two, TokenBatch{g.B, first, ids[0], mask[0], pos[0]}, Logits::Last);
    const RowMatrix chunked = model.forward(pool, two, TokenBatch{g.B, rest, ids[1], mask[1], pos[1]}, Logits::Last);
    EXPECT_LE((full - chunked).cwiseAbs().maxCoeff(), 1e-4);
}

TEST(MllamaGenerate, StopTokensAndCallback) {
    const Golden g;
    const MllamaModel model = load_golden_model();
    ThreadPool pool(1);
    const auto vision = g.vision_output();
    const std::vector<std::int64_t> expected = to_i64(g.expected.get("greedy_tokens"));  // [B, 8]

    // Item 0 stops at its third token; item 1 goes on to max_new_tokens.
    auto session = model.new_session(g.B);
    model.fusion().attach(pool, session.fusion, vision, g.cross_mask());
    GenerateOptions opt;
    opt.max_new_tokens = 6;
    opt.stop_tokens = {expected[2]};
    opt.pad_token = 502;
    std::vector<std::vector<std::int64_t>> streamed(2);
    const GenerateResult r = generate(pool, model, session, g.tokens(), opt, [&](std::int64_t item, std::int64_t token) {
        streamed[std::size_t(item)].push_back(token);
        return true;
    });
    const bool item1_has_stop = std::find(expected.begin() + 8, expected.begin() + 14, expected[2]) != expected.begin() + 14;
    EXPECT_EQ(r.tokens[0], std::vector<std::int64_t>(expected.begin(), expected.begin() + 3));
    EXPECT_TRUE(r.stopped[0]);
    if (!item1_has_stop) {
        EXPECT_EQ(r.tokens[1], std::vector<std::int64_t>(expected.begin() + 8, expected.begin() + 14));
        EXPECT_FALSE(r.stopped[1]);
    }
    EXPECT_EQ(streamed[0], r.tokens[0]);
    EXPECT_EQ(streamed[1], r.tokens[1]);

    // The callback ends generation.
    auto again = model.new_session(g.B);
    model.fusion().attach(pool, again.fusion, vision, g.cross_mask());
    int calls = 0;
    GenerateOptions eight;
    eight.max_new_tokens = 8;
    const GenerateResult cut = generate(pool, model, again, g.tokens(), eight,
                                        [&](std::int64_t, std::int64_t) { return ++calls < 3; });
    EXPECT_EQ(cut.tokens[0].size() + cut.tokens[1].size(), 3u);
}

// Text-only prompts: without images the cross-attention layers are skipped (as the reference does),
// so the result equals a decoder whose cross-attention slots do nothing.
TEST(MllamaText, WithoutImagesCrossLayersAreSkipped) {
    const Golden g;
    const MllamaModel model = load_golden_model();
    ThreadPool pool(1);
    auto session = model.new_session(1);
    const std::vector<std::int64_t> ids = {500, 17, 42, 99, 7};
    DecoderTrace trace;
    const RowMatrix logits = model.forward(pool, session, TokenBatch{1, 5, ids, {}, {}}, Logits::All, &trace);
    EXPECT_TRUE(logits.allFinite());
    // Slot 1 is a cross-attention layer: its output equals its input.
    EXPECT_EQ((trace.hidden_states[2] - trace.hidden_states[1]).cwiseAbs().maxCoeff(), 0.f);
    EXPECT_GT((trace.hidden_states[1] - trace.hidden_states[0]).cwiseAbs().maxCoeff(), 0.f);
}

// bf16 weights are widened to f32: the model on a bf16 checkpoint equals the model on an f32 checkpoint
// holding the same (rounded) values.
TEST(MllamaModel, Bf16WeightsMatchTheirF32Widening) {
    const fs::path dir = fs::temp_directory_path() / ("fusionlm_mllama_bf16_" + std::to_string(::getpid()));
    const fs::path dir_bf16 = dir / "bf16", dir_f32 = dir / "f32";
    fs::create_directories(dir_bf16);
    fs::create_directories(dir_f32);
    {
        const SafetensorsFile src = SafetensorsFile::open(kCase / "model.safetensors");
        std::vector<OwnedTensor> bf16, f32;
        for (const TensorView& t : src.tensors()) {
            const std::vector<float> v = t.to_f32();
            std::vector<std::uint16_t> h(v.size());
            f32_to_bf16(v.data(), h.data(), v.size());
            std::vector<float> widened(v.size());
            bf16_to_f32(h.data(), widened.data(), v.size());
            bf16.push_back(OwnedTensor::from(t.name, DType::BF16, t.shape, std::span<const std::uint16_t>(h)));
            f32.push_back(OwnedTensor::f32(t.name, t.shape, widened));
        }
        write_safetensors(dir_bf16 / "model.safetensors", bf16);
        write_safetensors(dir_f32 / "model.safetensors", f32);
        fs::copy_file(kCase / "config.json", dir_bf16 / "config.json");
        fs::copy_file(kCase / "config.json", dir_f32 / "config.json");
    }
    const Golden g;
    ThreadPool pool(2);
    const auto vision = g.vision_output();
    RowMatrix logits[2];
    int k = 0;
    for (const fs::path& d : {dir_bf16, dir_f32}) {
        const MllamaModel model = load_mllama(d);
        auto session = model.new_session(g.B);
        model.fusion().attach(pool, session.fusion, vision, g.cross_mask());
        logits[k++] = model.forward(pool, session, g.tokens(), Logits::All);
    }
    fs::remove_all(dir);
    double diff = 0, scale = 0;
    for (Eigen::Index r = 0; r < logits[0].rows(); ++r) {
        if (!g.mask[std::size_t(r)]) continue;
        diff = std::max(diff, double((logits[0].row(r) - logits[1].row(r)).cwiseAbs().maxCoeff()));
        scale = std::max(scale, double(logits[1].row(r).cwiseAbs().maxCoeff()));
    }
    EXPECT_LE(diff / scale, 1e-5);
}

}  // namespace mllama_test
