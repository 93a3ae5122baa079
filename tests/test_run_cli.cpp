// fusionlm-run as a user runs it, on the bundled demo checkpoint: its greedy answer equals the text
// the library's own generation gives for the same picture (recorded with the PyTorch model at export,
// and held to it by test_demo.cpp); bad inputs exit 2 with one line naming the fault.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

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
        EXPECT_EQ(out.at("prompt_tokens").get<std::size_t>(), sample.at("prompt_ids").size());
        for (const char* key : {"load_s", "vision_s", "prefill_tokens_per_s", "decode_tokens_per_s"})
            EXPECT_TRUE(out.at(key).is_number()) << key;
    }
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
