// fusionlm-run as a user runs it, on the bundled demo checkpoint: its greedy answer equals the text
// the library's own generation gives for the same picture (recorded with the PyTorch model at export,
// and held to it by test_demo.cpp); bad inputs exit 2 with one line naming the fault. Also a LLaVA
// checkpoint: its image marker expands to the image's feature tokens and marker counts are checked.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "fusionlm/core/cpu.hpp"
#include "test_io_util.hpp"

using namespace fusionlm::io_test;
namespace fs = std::filesystem;

namespace {

const fs::path kRun = fs::path(FUSIONLM_BIN_DIR) / "fusionlm-run";
const fs::path kDemo = kData / ".." / ".." / "examples" / "shapes";
const fs::path kSamples = kData / "demo" / "samples";

}  // namespace

class RunCli : public ::testing::Test {
protected:
    void SetUp() override {
        if (!fs::exists(kRun)) GTEST_SKIP() << kRun << " not built";
    }
    CliResult run(const std::string& args) { return run_cli(kRun, "-m " + quote(kDemo.string()) + " " + args, tmp); }
    TempDir tmp;
};

TEST_F(RunCli, GreedyJsonAnswerMatchesTheLibrary) {
    std::ifstream f(kDemo / "train" / "reference" / "samples_expected.json");
    const auto reference = nlohmann::json::parse(f);
    for (std::size_t i : {0u, 5u, 11u}) {
        const auto& sample = reference.at("samples").at(i);
        SCOPED_TRACE(sample.at("file").get<std::string>());
        const CliResult r = run("--image " + quote((kSamples / sample.at("file").get<std::string>()).string()) +
                                " -p 'Describe the image.' -n 24 --temp 0 -t 2 --json");
        ASSERT_EQ(r.code, 0) << r.err;
        const auto out = nlohmann::json::parse(r.out);  // exactly one JSON object on stdout
        EXPECT_EQ(out.at("text").get<std::string>(), sample.at("text").get<std::string>());
        EXPECT_EQ(out.at("generated_tokens").get<std::size_t>(), sample.at("generated_ids").size());
        EXPECT_EQ(out.at("tokens").get<std::vector<std::int64_t>>(),
                  sample.at("generated_ids").get<std::vector<std::int64_t>>());
        EXPECT_EQ(out.at("prompt_tokens").get<std::size_t>(), sample.at("prompt_ids").size());
        for (const char* key : {"load_s", "vision_s", "prefill_tokens_per_s", "decode_tokens_per_s"})
            EXPECT_TRUE(out.at(key).is_number()) << key;
        EXPECT_EQ(out.at("isa").get<std::string>(), fusionlm::isa_name(fusionlm::fastest_isa()));
    }
}

// --f32 keeps every product in f32 (the instruction set best_isa picks); the answer is the reference's.
TEST_F(RunCli, F32FlagKeepsF32Kernels) {
    std::ifstream f(kDemo / "train" / "reference" / "samples_expected.json");
    const auto sample = nlohmann::json::parse(f).at("samples").at(3);
    const CliResult r = run("--image " + quote((kSamples / sample.at("file").get<std::string>()).string()) +
                            " -p 'Describe the image.' -n 24 --temp 0 -t 1 --f32 --json");
    ASSERT_EQ(r.code, 0) << r.err;
    const auto out = nlohmann::json::parse(r.out);
    EXPECT_EQ(out.at("isa").get<std::string>(), fusionlm::isa_name(fusionlm::best_isa()));
    EXPECT_EQ(out.at("tokens").get<std::vector<std::int64_t>>(),
              sample.at("generated_ids").get<std::vector<std::int64_t>>());
}

TEST_F(RunCli, BadInputsExitTwoWithOneLine) {
    const std::string picture = quote((kSamples / "shapes_000.png").string());
    expect_one_line_failure(run("--image " + quote((kData / "images" / "hostile" / "truncated.png").string()) + " -p x"),
                            "truncated.png");
    expect_one_line_failure(run("--image " + picture + " -p '<|image|><|image|>two?'"), "<|image|>");
    expect_one_line_failure(run("--image " + quote((tmp / "absent.png").string()) + " -p x"), "absent.png");
    expect_one_line_failure(run("-p x -n 100000"), "context");
    expect_one_line_failure(run("-p x --top-p 2"), "top_p");
    expect_one_line_failure(run_cli(kRun, "-m " + quote((tmp / "nowhere").string()) + " -p x", tmp), "config.json");
}

// A LLaVA checkpoint folder as a user has one: the golden llava_tiny weights and config, its
// CLIPImageProcessor settings, and a byte-level tokenizer (the demo's, with <image> added at the
// model's image token id) with a chat template.
TEST_F(RunCli, LlavaExpandsTheImageMarker) {
    const fs::path dir = tmp / "llava";
    fs::create_directories(dir);
    const fs::path golden = kGolden / "llava_tiny";
    for (const char* f : {"config.json", "model.safetensors", "generation_config.json"}) fs::copy_file(golden / f, dir / f);
    std::ifstream meta_in(golden / "meta.json");
    std::ofstream(dir / "preprocessor_config.json") << nlohmann::json::parse(meta_in).at("image_processor").dump();
    std::ifstream tok_in(kDemo / "tokenizer.json");
    auto tokenizer = nlohmann::json::parse(tok_in);
    tokenizer["added_tokens"].push_back({{"id", 511}, {"content", "<image>"}, {"single_word", false}, {"lstrip", false},
                                         {"rstrip", false}, {"normalized", false}, {"special", true}});
    std::ofstream(dir / "tokenizer.json") << tokenizer.dump();
    std::ofstream(dir / "tokenizer_config.json")
        << nlohmann::json{{"bos_token", "<|begin_of_text|>"}, {"chat_template", "USER: <image>..."}}.dump();

    const std::string model = "-m " + quote(dir.string()) + " -n 0 --json ";
    const std::string picture = quote((kData / "images" / "chelsea.png").string());
    const CliResult text_only = run_cli(kRun, model + "-p 'Describe it.'", tmp);
    ASSERT_EQ(text_only.code, 0) << text_only.err;
    const CliResult with_image = run_cli(kRun, model + "--image " + picture + " -p 'Describe it.'", tmp);
    ASSERT_EQ(with_image.code, 0) << with_image.err;
    // "<image>\n" comes in: 16 image tokens (image_seq_length) and the newline.
    const auto plain = nlohmann::json::parse(text_only.out).at("prompt_tokens").get<int>();
    const auto expanded = nlohmann::json::parse(with_image.out).at("prompt_tokens").get<int>();
    EXPECT_GE(expanded - plain, 17);
    EXPECT_LE(expanded - plain, 18);
    expect_one_line_failure(run_cli(kRun, model + "--image " + picture + " -p '<image> and <image>?'", tmp), "<image>");
    expect_one_line_failure(run_cli(kRun, model + "-p '<image> without a picture'", tmp), "image");
}
