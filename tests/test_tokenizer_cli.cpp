// fusionlm-tokenize driven as a subprocess: the golden corpus through the tool, and its error exits.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_io_util.hpp"

namespace tokenizer_cli_test {

using namespace fusionlm::io_test;

namespace fs = std::filesystem;

const fs::path kTool = fs::path(FUSIONLM_BIN_DIR) / "fusionlm-tokenize";
const fs::path kTokenizer = kData / "tokenizers" / "llama3" / "tokenizer_llama3.2_vision.json";

std::vector<nlohmann::json> lines_of(const std::string& s) {
    std::vector<nlohmann::json> out;
    std::istringstream ss(s);
    for (std::string line; std::getline(ss, line);)
        if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    return out;
}

class TokenizeCli : public ::testing::Test {
protected:
    void SetUp() override {
        if (!fs::exists(kTool)) GTEST_SKIP() << kTool << " not built";
    }
    CliResult run_tool(const std::string& args, const std::string& stdin_text) const {
        return run_cli(kTool, args, tmp, stdin_text);
    }
    TempDir tmp;
};

TEST_F(TokenizeCli, GoldenCorpusWithAndWithoutSpecialParsing) {
    const std::string corpus = read_bytes(kData / "golden" / "tokenizer" / "public.jsonl");
    const auto records = lines_of(corpus);
    const CliResult with = run_tool(quote(kTokenizer.string()), corpus);
    ASSERT_EQ(with.code, 0) << with.err;
    const CliResult without = run_tool(quote(kTokenizer.string()) + " --no-special", corpus);
    ASSERT_EQ(without.code, 0) << without.err;
    const auto a = lines_of(with.out), b = lines_of(without.out);
    ASSERT_EQ(a.size(), records.size());
    ASSERT_EQ(b.size(), records.size());
    for (std::size_t i = 0; i < records.size(); ++i) {
        const auto& r = records[i];
        EXPECT_EQ(a[i].at("ids"), r.at("ids")) << r.at("name");
        EXPECT_EQ(a[i].at("decoded"), r.at("decoded")) << r.at("name");
        EXPECT_EQ(b[i].at("ids"), r.value("ids_no_special_parsing", r.at("ids"))) << r.at("name");
        EXPECT_EQ(b[i].at("decoded"), r.at("decoded")) << r.at("name");
    }
}

TEST_F(TokenizeCli, ErrorsExitTwoWithOneLine) {
    const CliResult missing = run_tool(quote((kData / "no" / "such" / "tokenizer.json").string()), "");
    EXPECT_EQ(missing.code, 2);
    EXPECT_NE(missing.err.find("no/such/tokenizer.json"), std::string::npos) << missing.err;
    EXPECT_EQ(std::count(missing.err.begin(), missing.err.end(), '\n'), 1) << missing.err;

    // Input errors, against a tiny tokenizer so each run starts fast.
    const fs::path tiny = tmp / "tiny_tokenizer.json";
    std::ofstream(tiny) << R"({"model": {"type": "BPE", "vocab": {"o": 0, "k": 1, "ok": 2}, "merges": ["o k"]}})";
    const CliResult bad_line = run_tool(quote(tiny.string()), "{\"text\": \"ok\"}\n{\"txt\": 1}\n");
    EXPECT_EQ(bad_line.code, 2);
    EXPECT_NE(bad_line.err.find("line 2"), std::string::npos) << bad_line.err;
    const auto answered = lines_of(bad_line.out);  // the good first line was answered
    ASSERT_EQ(answered.size(), 1u);
    EXPECT_EQ(answered[0].at("ids"), nlohmann::json::array({2}));

    const CliResult not_json = run_tool(quote(tiny.string()), "hello\n");
    EXPECT_EQ(not_json.code, 2);
    const CliResult empty_input = run_tool(quote(tiny.string()), "");
    EXPECT_EQ(empty_input.code, 0);
    std::ofstream(tiny) << R"({"model": {"type": "WordPiece", "vocab": {}}})";
    const CliResult wordpiece = run_tool(quote(tiny.string()), "");
    EXPECT_EQ(wordpiece.code, 2);
    EXPECT_NE(wordpiece.err.find("WordPiece"), std::string::npos) << wordpiece.err;

    const CliResult no_args = run_tool("", "");
    EXPECT_EQ(no_args.code, 2);
    const CliResult bad_flag = run_tool(quote(kTokenizer.string()) + " --bogus", "");
    EXPECT_EQ(bad_flag.code, 2);
}

}  // namespace tokenizer_cli_test
