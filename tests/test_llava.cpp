// LLaVA through the library: every reference tensor of the golden and held-out cases through the parity
// runner, a real picture through CLIPImageProcessor and the prompt helper against the golden logits,
// chunked prefill across the image tokens, and prompts whose image markers do not match the images.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "../examples/parity_case.hpp"
#include "../examples/parity_llava.hpp"
#include "fusionlm/core/error.hpp"
#include "fusionlm/core/threads.hpp"
#include "fusionlm/image/image.hpp"
#include "fusionlm/image/processor.hpp"
#include "fusionlm/io/config.hpp"
#include "fusionlm/io/safetensors.hpp"
#include "fusionlm/llava_prompt.hpp"
#include "fusionlm/models/llava.hpp"
#include "fusionlm/models/mllama.hpp"
#include "test_io_util.hpp"

using namespace fusionlm;
namespace fs = std::filesystem;

namespace llava_test {

using namespace fusionlm::io_test;

const fs::path kCase = fs::path(FUSIONLM_TEST_DATA) / "golden" / "llava_tiny";

// Both families run the one decoder template; only the fusion policy differs.
static_assert(std::is_same_v<std::remove_cvref_t<decltype(std::declval<LlavaModel>().decoder())>,
                             std::remove_cvref_t<decltype(std::declval<MllamaModel>().decoder())>>);

struct Golden {
    SafetensorsFile inputs = SafetensorsFile::open(kCase / "inputs.safetensors");
    SafetensorsFile expected = SafetensorsFile::open(kCase / "expected.safetensors");
    std::vector<std::int64_t> ids = to_i64(inputs.get("input_ids"));
    std::int64_t S = inputs.get("input_ids").shape[1];
    const TensorView& pixels = inputs.get("pixel_values");

    std::span<const float> pixel_values() const { return {pixels.as<float>(), std::size_t(pixels.numel())}; }
    TokenBatch tokens() const { return {1, S, ids, {}, {}}; }
    RowMatrix logits() const { return to_row_matrix(expected.get("logits")); }
};

double rel_error(const RowMatrix& got, const RowMatrix& exp) {
    EXPECT_EQ(got.rows(), exp.rows());
    EXPECT_EQ(got.cols(), exp.cols());
    if (got.rows() != exp.rows() || got.cols() != exp.cols()) return INFINITY;
    return double((got - exp).cwiseAbs().maxCoeff() / exp.cwiseAbs().maxCoeff());
}


class LlavaCase : public ::testing::TestWithParam<const char*> {};

TEST_P(LlavaCase, EveryReferenceTensorWithinTolerance) {
    const parity::Case c(fs::path(FUSIONLM_TEST_DATA) / GetParam());
    const ModelConfig config = load_config(c.dir() / "config.json");
    ThreadPool pool(2);
    parity::CaseOutputs out;
    const parity::TokenMask mask = parity::run_llava_case(c, std::get<LlavaConfig>(config.family), pool, out);
    const auto results = parity::compare_all(*c.expected(), out, mask);
    EXPECT_EQ(results.size(), c.expected()->size());
    for (const auto& r : results) {
        EXPECT_TRUE(r.problem.empty()) << r.name << ": " << r.problem;
        EXPECT_TRUE(r.ok) << r.name << " max_abs " << r.max_abs << " rel " << r.rel;
    }
}

// fusionlm-parity as a user runs it on a LLaVA case: exit 0 and a PASS line.
TEST(LlavaParityTool, GoldenCasePasses) {
    const fs::path tool = fs::path(FUSIONLM_BIN_DIR) / "fusionlm-parity";
    if (!fs::exists(tool)) GTEST_SKIP() << "fusionlm-parity not built";
    const TempDir tmp;
    const CliResult r = run_cli(tool, quote(kCase.string()) + " --threads 2 --out " + quote((tmp / "out.safetensors").string()), tmp);
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("image_features "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("PASS"), std::string::npos) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Cases, LlavaCase, ::testing::Values("golden/llava_tiny", "heldout/llava_full_bf16",
                                                              "heldout/llava_default_deep"));

// The golden prompt written as a user writes it (one <image> marker), the picture decoded from its PNG and
// preprocessed with the case's CLIPImageProcessor settings: the same ids and logits as the reference.
TEST(LlavaPrompt, RealPictureAndOneMarkerMatchReference) {
    const Golden g;
    const LlavaModel model = load_llava(kCase);
    const std::int64_t marker = model.fusion().image_token_id();
    std::vector<std::int64_t> prompt;
    for (std::size_t i = 0; i < g.ids.size(); ++i)
        if (g.ids[i] != marker || i == 0 || g.ids[i - 1] != marker) prompt.push_back(g.ids[i]);
    ASSERT_EQ(std::count(prompt.begin(), prompt.end(), marker), 1);

    std::ifstream meta(kCase / "meta.json");
    const ClipImageProcessor processor = ClipImageProcessor::from_json(nlohmann::json::parse(meta).at("image_processor"));
    const std::vector<Image> images = {load_image(fs::path(FUSIONLM_TEST_DATA) / "images" / "chelsea.png")};
    ThreadPool pool(2);
    auto session = model.new_session(1);
    const std::vector<std::int64_t> ids = attach_prompt_images(pool, model, session, processor, images, prompt);
    EXPECT_EQ(ids, g.ids);
    const RowMatrix logits = model.forward(pool, session, TokenBatch{1, std::int64_t(ids.size()), ids, {}, {}}, Logits::All);
    EXPECT_LE(rel_error(logits, g.logits()), 1e-4);
}

// Prefill in two chunks, the cut inside the run of image tokens: the same logits as one prefill.
TEST(LlavaPrompt, ChunkedPrefillAcrossImageTokens) {
    const Golden g;
    const LlavaModel model = load_llava(kCase);
    ThreadPool pool(1);
    auto session = model.new_session(1);
    model.attach_images(pool, session, std::vector<std::vector<ClipImage>>{{ClipImage{g.pixel_values()}}}, g.tokens());
    const std::int64_t first = 9;
    const std::vector<std::int64_t> a(g.ids.begin(), g.ids.begin() + first), b(g.ids.begin() + first, g.ids.end());
    const RowMatrix head = model.forward(pool, session, TokenBatch{1, first, a, {}, {}}, Logits::All);
    const RowMatrix tail = model.forward(pool, session, TokenBatch{1, g.S - first, b, {}, {}}, Logits::All);
    RowMatrix both(g.S, head.cols());
    both << head, tail;
    EXPECT_LE(rel_error(both, g.logits()), 1e-4);
}

TEST(LlavaPrompt, MarkersMustMatchImages) {
    const Golden g;
    const LlavaModel model = load_llava(kCase);
    const std::int64_t marker = model.fusion().image_token_id();
    std::ifstream meta(kCase / "meta.json");
    const ClipImageProcessor processor = ClipImageProcessor::from_json(nlohmann::json::parse(meta).at("image_processor"));
    const std::vector<Image> one = {load_image(fs::path(FUSIONLM_TEST_DATA) / "images" / "chelsea.png")};
    ThreadPool pool(1);

    // Two markers, one image.
    auto session = model.new_session(1);
    const std::vector<std::int64_t> two_markers = {1, marker, 5, marker, 6};
    try {
        attach_prompt_images(pool, model, session, processor, one, two_markers);
        FAIL() << "expected InputError";
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("2 image markers"), std::string::npos) << e.what();
    }
    // Image tokens but no images attached at all.
    EXPECT_THROW(model.forward(pool, session, TokenBatch{1, 5, two_markers, {}, {}}, Logits::Last), InputError);
    // The session is still usable: a text-only prompt runs.
    const std::vector<std::int64_t> text = {1, 5, 6, 7};
    EXPECT_TRUE(model.forward(pool, session, TokenBatch{1, 4, text, {}, {}}, Logits::Last).allFinite());

    // Expanded prompt, but its image-token count disagrees with the image given.
    auto other = model.new_session(1);
    std::vector<std::int64_t> short_run(g.ids);
    short_run.erase(std::find(short_run.begin(), short_run.end(), marker));
    EXPECT_THROW(model.attach_images(pool, other, std::vector<std::vector<ClipImage>>{{ClipImage{g.pixel_values()}}},
                                     TokenBatch{1, std::int64_t(short_run.size()), short_run, {}, {}}),
                 InputError);
    // A feed with more image tokens than the attached prompt holds is rejected before the session changes.
    model.attach_images(pool, other, std::vector<std::vector<ClipImage>>{{ClipImage{g.pixel_values()}}}, g.tokens());
    std::vector<std::int64_t> extra(g.ids);
    extra.back() = marker;
    EXPECT_THROW(model.forward(pool, other, TokenBatch{1, g.S, extra, {}, {}}, Logits::Last), InputError);
    EXPECT_EQ(other.decoder.length(), 0);
    EXPECT_LE(rel_error(model.forward(pool, other, g.tokens(), Logits::All), g.logits()), 1e-4);
}

}  // namespace llava_test
