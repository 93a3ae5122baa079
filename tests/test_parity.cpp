// fusionlm-parity as a user runs it: exit 0 on the golden Mllama case, 1 when a result disagrees with
// the reference, 2 with one line on stderr for every kind of bad input (never a crash).
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fusionlm/io/safetensors.hpp"
#include "test_io_util.hpp"

using namespace fusionlm;
using namespace fusionlm::io_test;
namespace fs = std::filesystem;

namespace {

const fs::path kCase = fs::path(FUSIONLM_TEST_DATA) / "golden" / "mllama_tiny";
const fs::path kTool = fs::path(FUSIONLM_BIN_DIR) / "fusionlm-parity";

class ParityCli : public ::testing::Test {
protected:
    void SetUp() override {
        if (!fs::exists(kTool)) GTEST_SKIP() << kTool << " is not built";
        fs::create_directories(dir());
        for (const char* f : {"config.json", "model.safetensors", "inputs.safetensors", "expected.safetensors"})
            fs::copy_file(kCase / f, dir() / f);
    }

    fs::path dir() const { return tmp / "case"; }

    CliResult run(const std::vector<std::string>& args) const {
        std::string line;
        for (const auto& a : args) line.append(" ").append(quote(a));
        return run_cli(kTool, line, tmp);
    }
    CliResult run_case() const { return run({dir().string(), "--out", (tmp / "out.safetensors").string(), "--threads", "2"}); }

    // Rewrites one of the case's safetensors files through `edit`.
    void edit_tensors(const char* file, const std::function<void(std::vector<OwnedTensor>&)>& edit) const {
        std::vector<OwnedTensor> tensors;
        {
            const SafetensorsFile f = SafetensorsFile::open(dir() / file);
            for (const TensorView& t : f.tensors()) tensors.push_back(OwnedTensor::copy_of(t));
        }
        edit(tensors);
        write_safetensors(dir() / file, tensors);
    }
    void edit_config(const std::function<void(nlohmann::json&)>& edit) const {
        nlohmann::json j = nlohmann::json::parse(read_bytes(dir() / "config.json"));
        edit(j);
        std::ofstream(dir() / "config.json") << j.dump(2);
    }

    TempDir tmp;
};

}  // namespace

TEST_F(ParityCli, GoldenCasePassesAndWritesEveryExpectedTensor) {
    const CliResult r = run_case();
    EXPECT_EQ(r.code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("PASS"), std::string::npos);
    const SafetensorsFile out = SafetensorsFile::open(tmp / "out.safetensors");
    const SafetensorsFile exp = SafetensorsFile::open(dir() / "expected.safetensors");
    ASSERT_EQ(out.size(), exp.size());
    for (const TensorView& e : exp.tensors()) {
        const TensorView* o = out.find(e.name);
        ASSERT_NE(o, nullptr) << e.name;
        EXPECT_EQ(o->shape, e.shape) << e.name;
        EXPECT_EQ(o->dtype, e.dtype) << e.name;
        // One line per tensor.
        EXPECT_NE(r.out.find(e.name + " "), std::string::npos) << e.name;
    }
}

TEST_F(ParityCli, WithoutExpectedItWritesOutputs) {
    fs::remove(dir() / "expected.safetensors");
    const CliResult r = run_case();
    EXPECT_EQ(r.code, 0) << r.err;
    const SafetensorsFile out = SafetensorsFile::open(tmp / "out.safetensors");
    EXPECT_NE(out.find("logits"), nullptr);
    EXPECT_NE(out.find("greedy_tokens"), nullptr);
}

TEST_F(ParityCli, DisagreementExitsOne) {
    edit_tensors("expected.safetensors", [](std::vector<OwnedTensor>& ts) {
        for (auto& t : ts)
            if (t.name == "hidden_states.3") reinterpret_cast<float*>(t.bytes.data())[5] += 0.5f;
    });
    const CliResult r = run_case();
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.out.find("FAIL"), std::string::npos);
}

TEST_F(ParityCli, TruncatedCheckpoint) {
    const auto size = fs::file_size(dir() / "model.safetensors");
    fs::resize_file(dir() / "model.safetensors", size / 2);
    expect_one_line_failure(run_case(), "model.safetensors");
}

TEST_F(ParityCli, GarbageHeader) {
    std::ofstream(dir() / "model.safetensors", std::ios::binary | std::ios::trunc) << "\x10\0\0\0\0\0\0\0not json at all!";
    expect_one_line_failure(run_case(), "model.safetensors");
}

TEST_F(ParityCli, MissingTensor) {
    edit_tensors("model.safetensors", [](std::vector<OwnedTensor>& ts) {
        std::erase_if(ts, [](const OwnedTensor& t) { return t.name == "language_model.model.layers.2.mlp.up_proj.weight"; });
    });
    expect_one_line_failure(run_case(), "language_model.model.layers.2.mlp.up_proj.weight");
}

TEST_F(ParityCli, MissingCrossAttentionGate) {
    edit_tensors("model.safetensors", [](std::vector<OwnedTensor>& ts) {
        std::erase_if(ts, [](const OwnedTensor& t) { return t.name == "language_model.model.layers.4.cross_attn_mlp_gate"; });
    });
    expect_one_line_failure(run_case(), "cross_attn_mlp_gate");
}

TEST_F(ParityCli, MisShapedTensor) {
    edit_tensors("model.safetensors", [](std::vector<OwnedTensor>& ts) {
        for (auto& t : ts)
            if (t.name == "language_model.model.layers.0.self_attn.q_proj.weight") t.shape = {32, 128};
    });
    expect_one_line_failure(run_case(), "language_model.model.layers.0.self_attn.q_proj.weight");
}

TEST_F(ParityCli, NegativeHiddenSize) {
    edit_config([](nlohmann::json& j) { j["text_config"]["hidden_size"] = -3; });
    expect_one_line_failure(run_case(), "hidden_size");
}

TEST_F(ParityCli, AbsurdVocabulary) {
    edit_config([](nlohmann::json& j) { j["text_config"]["vocab_size"] = 1000000000000LL; });
    expect_one_line_failure(run_case(), "vocab_size");
}

TEST_F(ParityCli, CrossAttentionLayerOutOfRange) {
    edit_config([](nlohmann::json& j) { j["text_config"]["cross_attention_layers"] = {1, 9}; });
    expect_one_line_failure(run_case(), "cross_attention_layers");
}

TEST_F(ParityCli, KeyValueHeadsDoNotDivideHeads) {
    edit_config([](nlohmann::json& j) { j["text_config"]["num_key_value_heads"] = 3; });
    expect_one_line_failure(run_case(), "num_key_value_heads");
}

TEST_F(ParityCli, ConfigDisagreesWithWeights) {
    edit_config([](nlohmann::json& j) { j["text_config"]["intermediate_size"] = 96; });
    expect_one_line_failure(run_case(), "mlp");
}

TEST_F(ParityCli, ConfigIsNotJson) {
    std::ofstream(dir() / "config.json", std::ios::trunc) << "{ \"model_type\": \"mllama\", ";
    expect_one_line_failure(run_case(), "config.json");
}

TEST_F(ParityCli, UnknownFamily) {
    edit_config([](nlohmann::json& j) { j["model_type"] = "not_a_model"; });
    expect_one_line_failure(run_case(), "not_a_model");
}

TEST_F(ParityCli, TokenIdOutsideTheVocabulary) {
    edit_tensors("inputs.safetensors", [](std::vector<OwnedTensor>& ts) {
        for (auto& t : ts)
            if (t.name == "input_ids") reinterpret_cast<std::int64_t*>(t.bytes.data())[3] = 99999;
    });
    expect_one_line_failure(run_case(), "99999");
}

TEST_F(ParityCli, MissingInputs) {
    fs::remove(dir() / "inputs.safetensors");
    expect_one_line_failure(run_case(), "inputs.safetensors");
}

TEST_F(ParityCli, CrossAttentionMaskOfTheWrongShape) {
    edit_tensors("inputs.safetensors", [](std::vector<OwnedTensor>& ts) {
        for (auto& t : ts)
            if (t.name == "cross_attention_mask") t.shape = {2, 15, 4, 2};
    });
    expect_one_line_failure(run_case(), "cross_attention_mask");
}

TEST_F(ParityCli, BadArguments) {
    expect_one_line_failure(run({}), "usage");
    expect_one_line_failure(run({dir().string(), "--threads", "zero"}), "--threads");
    expect_one_line_failure(run({(tmp / "nowhere").string()}), "nowhere");
}
