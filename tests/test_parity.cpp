// fusionlm-parity as a user runs it: exit 0 on the golden Mllama case, 1 when a result disagrees with
// the reference, 2 with one line on stderr for every kind of bad input (never a crash).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fusionlm/io/safetensors.hpp"

using namespace fusionlm;
namespace fs = std::filesystem;

namespace {

const fs::path kCase = fs::path(FUSIONLM_TEST_DATA) / "golden" / "mllama_tiny";
const fs::path kTool = fs::path(FUSIONLM_BIN_DIR) / "fusionlm-parity";

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct CliResult {
    int status = -1;
    std::string out, err;
};

class ParityCli : public ::testing::Test {
protected:
    void SetUp() override {
        if (!fs::exists(kTool)) GTEST_SKIP() << kTool << " is not built";
        tmp_ = fs::temp_directory_path() /
               ("fusionlm_parity_" + std::to_string(::getpid()) + "_" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(tmp_);
        fs::create_directories(tmp_ / "case");
        for (const char* f : {"config.json", "model.safetensors", "inputs.safetensors", "expected.safetensors"})
            fs::copy_file(kCase / f, tmp_ / "case" / f);
    }
    void TearDown() override {
        if (!tmp_.empty()) fs::remove_all(tmp_);
    }

    fs::path dir() const { return tmp_ / "case"; }

    CliResult run(const std::vector<std::string>& args) const {
        std::string cmd = "'" + kTool.string() + "'";
        for (const auto& a : args) cmd += " '" + a + "'";
        cmd += " > '" + (tmp_ / "stdout").string() + "' 2> '" + (tmp_ / "stderr").string() + "'";
        const int raw = std::system(cmd.c_str());
        CliResult r;
        r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
        r.out = slurp(tmp_ / "stdout");
        r.err = slurp(tmp_ / "stderr");
        return r;
    }
    CliResult run_case() const { return run({dir().string(), "--out", (tmp_ / "out.safetensors").string(), "--threads", "2"}); }

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
        nlohmann::json j = nlohmann::json::parse(slurp(dir() / "config.json"));
        edit(j);
        std::ofstream(dir() / "config.json") << j.dump(2);
    }

    // Exit 2, nothing on stdout, exactly one line on stderr that mentions `needle`.
    static void expect_bad_input(const CliResult& r, const std::string& needle) {
        EXPECT_EQ(r.status, 2) << r.err;
        EXPECT_TRUE(r.out.empty()) << r.out;
        ASSERT_FALSE(r.err.empty());
        EXPECT_EQ(r.err.back(), '\n');
        EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
        EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr does not name '" << needle << "': " << r.err;
    }

    fs::path tmp_;
};

}  // namespace

TEST_F(ParityCli, GoldenCasePassesAndWritesEveryExpectedTensor) {
    const CliResult r = run_case();
    EXPECT_EQ(r.status, 0) << r.out << r.err;
    EXPECT_NE(r.out.find("PASS"), std::string::npos);
    const SafetensorsFile out = SafetensorsFile::open(tmp_ / "out.safetensors");
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
    EXPECT_EQ(r.status, 0) << r.err;
    const SafetensorsFile out = SafetensorsFile::open(tmp_ / "out.safetensors");
    EXPECT_NE(out.find("logits"), nullptr);
    EXPECT_NE(out.find("greedy_tokens"), nullptr);
}

TEST_F(ParityCli, DisagreementExitsOne) {
    edit_tensors("expected.safetensors", [](std::vector<OwnedTensor>& ts) {
        for (auto& t : ts)
            if (t.name == "hidden_states.3") reinterpret_cast<float*>(t.bytes.data())[5] += 0.5f;
    });
    const CliResult r = run_case();
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("FAIL"), std::string::npos);
}

TEST_F(ParityCli, TruncatedCheckpoint) {
    const auto size = fs::file_size(dir() / "model.safetensors");
    fs::resize_file(dir() / "model.safetensors", size / 2);
    expect_bad_input(run_case(), "model.safetensors");
}

TEST_F(ParityCli, GarbageHeader) {
    std::ofstream(dir() / "model.safetensors", std::ios::binary | std::ios::trunc) << "\x10\0\0\0\0\0\0\0not json at all!";
    expect_bad_input(run_case(), "model.safetensors");
}

TEST_F(ParityCli, MissingTensor) {
    edit_tensors("model.safetensors", [](std::vector<OwnedTensor>& ts) {
        std::erase_if(ts, [](const OwnedTensor& t) { return t.name == "language_model.model.layers.2.mlp.up_proj.weight"; });
    });
    expect_bad_input(run_case(), "language_model.model.layers.2.mlp.up_proj.weight");
}

TEST_F(ParityCli, MissingCrossAttentionGate) {
    edit_tensors("model.safetensors", [](std::vector<OwnedTensor>& ts) {
        std::erase_if(ts, [](const OwnedTensor& t) { return t.name == "language_model.model.layers.4.cross_attn_mlp_gate"; });
    });
    expect_bad_input(run_case(), "cross_attn_mlp_gate");
}

TEST_F(ParityCli, MisShapedTensor) {
    edit_tensors("model.safetensors", [](std::vector<OwnedTensor>& ts) {
        for (auto& t : ts)
            if (t.name == "language_model.model.layers.0.self_attn.q_proj.weight") t.shape = {32, 128};
    });
    expect_bad_input(run_case(), "language_model.model.layers.0.self_attn.q_proj.weight");
}

TEST_F(ParityCli, NegativeHiddenSize) {
    edit_config([](nlohmann::json& j) { j["text_config"]["hidden_size"] = -3; });
    expect_bad_input(run_case(), "hidden_size");
}

TEST_F(ParityCli, AbsurdVocabulary) {
    edit_config([](nlohmann::json& j) { j["text_config"]["vocab_size"] = 1000000000000LL; });
    expect_bad_input(run_case(), "vocab_size");
}

TEST_F(ParityCli, CrossAttentionLayerOutOfRange) {
    edit_config([](nlohmann::json& j) { j["text_config"]["cross_attention_layers"] = {1, 9}; });
    expect_bad_input(run_case(), "cross_attention_layers");
}

TEST_F(ParityCli, KeyValueHeadsDoNotDivideHeads) {
    edit_config([](nlohmann::json& j) { j["text_config"]["num_key_value_heads"] = 3; });
    expect_bad_input(run_case(), "num_key_value_heads");
}

TEST_F(ParityCli, ConfigDisagreesWithWeights) {
    edit_config([](nlohmann::json& j) { j["text_config"]["intermediate_size"] = 96; });
    expect_bad_input(run_case(), "mlp");
}

TEST_F(ParityCli, ConfigIsNotJson) {
    std::ofstream(dir() / "config.json", std::ios::trunc) << "{ \"model_type\": \"mllama\", ";
    expect_bad_input(run_case(), "config.json");
}

TEST_F(ParityCli, UnknownFamily) {
    edit_config([](nlohmann::json& j) { j["model_type"] = "not_a_model"; });
    expect_bad_input(run_case(), "not_a_model");
}

TEST_F(ParityCli, TokenIdOutsideTheVocabulary) {
    edit_tensors("inputs.safetensors", [](std::vector<OwnedTensor>& ts) {
        for (auto& t : ts)
            if (t.name == "input_ids") reinterpret_cast<std::int64_t*>(t.bytes.data())[3] = 99999;
    });
    expect_bad_input(run_case(), "99999");
}

TEST_F(ParityCli, MissingInputs) {
    fs::remove(dir() / "inputs.safetensors");
    expect_bad_input(run_case(), "inputs.safetensors");
}

TEST_F(ParityCli, CrossAttentionMaskOfTheWrongShape) {
    edit_tensors("inputs.safetensors", [](std::vector<OwnedTensor>& ts) {
        for (auto& t : ts)
            if (t.name == "cross_attention_mask") t.shape = {2, 15, 4, 2};
    });
    expect_bad_input(run_case(), "cross_attention_mask");
}

TEST_F(ParityCli, BadArguments) {
    expect_bad_input(run({}), "usage");
    expect_bad_input(run({dir().string(), "--threads", "zero"}), "--threads");
    expect_bad_input(run({(tmp_ / "nowhere").string()}), "nowhere");
}
