// fusionlm-inspect as a subprocess: exit 0 and a listing for valid checkpoints, exit 2 with exactly
// one line on stderr naming the fault otherwise.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "fusionlm/io/safetensors.hpp"
#include "test_io_util.hpp"

using namespace fusionlm;
using namespace fusionlm::io_test;

namespace {

const std::filesystem::path kInspect = std::filesystem::path(FUSIONLM_BIN_DIR) / "fusionlm-inspect";

CliResult inspect(const std::string& args, const TempDir& tmp) { return run_cli(kInspect, args, tmp); }

}  // namespace

class InspectCli : public ::testing::Test {
protected:
    void SetUp() override {
        if (!std::filesystem::exists(kInspect)) GTEST_SKIP() << kInspect << " not built";
    }
    TempDir tmp;
};

TEST_F(InspectCli, ValidGoldenCheckpoints) {
    for (const char* name : {"mllama_tiny", "llava_tiny", "mixtral_tiny", "qwen2_moe_tiny", "olmoe_tiny_bf16"}) {
        SCOPED_TRACE(name);
        const CliResult r = inspect(quote((kGolden / name).string()), tmp);
        EXPECT_EQ(r.code, 0) << r.err;
        EXPECT_TRUE(r.err.empty()) << r.err;
        EXPECT_NE(r.out.find("parameters: "), std::string::npos);
        EXPECT_EQ(r.out.find("[unsupported]"), std::string::npos);
    }
    const CliResult r = inspect(quote((kGolden / "mllama_tiny").string()), tmp);
    EXPECT_NE(r.out.find("model_type: mllama (MllamaForConditionalGeneration)"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("language_model.model.embed_tokens.weight  F32  [520, 64]"), std::string::npos);
    EXPECT_NE(r.out.find("cross_attention_layers [1, 4]"), std::string::npos);
}

TEST_F(InspectCli, InvalidInputsExitTwoWithOneLine) {
    expect_one_line_failure(inspect("", tmp), "usage");
    expect_one_line_failure(inspect(quote((tmp / "absent").string()), tmp), "config.json");

    // A checkpoint folder whose weights are truncated.
    const auto dir = tmp / "ckpt";
    std::filesystem::create_directory(dir);
    std::filesystem::copy_file(kGolden / "mixtral_tiny" / "config.json", dir / "config.json");
    const std::string full = read_bytes(kGolden / "mixtral_tiny" / "model.safetensors");
    write_bytes(dir / "model.safetensors", full.substr(0, full.size() - 100));
    expect_one_line_failure(inspect(quote(dir.string()), tmp), "model.safetensors");

    // Bad config field.
    write_bytes(dir / "model.safetensors", full);
    Json cfg = read_json_file(dir / "config.json");
    cfg["num_key_value_heads"] = 3;
    write_bytes(dir / "config.json", cfg.dump(2));
    expect_one_line_failure(inspect(quote(dir.string()), tmp), "num_key_value_heads");

    // A valid config whose sizes disagree with the tensors the family needs.
    cfg["num_key_value_heads"] = 2;
    cfg["intermediate_size"] = 96;
    write_bytes(dir / "config.json", cfg.dump(2));
    expect_one_line_failure(inspect(quote(dir.string()), tmp), "experts.0.w1.weight");

    // Config not JSON.
    write_bytes(dir / "config.json", "{\n\"model_type\":\n");
    expect_one_line_failure(inspect(quote(dir.string()), tmp), "config.json");

    // Unknown model_type: the files are still valid, so exit 0 and say unsupported.
    write_bytes(dir / "config.json", R"({"model_type": "gpt2"})");
    const CliResult r = inspect(quote(dir.string()), tmp);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("[unsupported]"), std::string::npos);
}
