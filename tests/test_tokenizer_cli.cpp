// fusionlm-tokenize driven as a subprocess: the golden corpus through the tool, and its error exits.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tokenizer_cli_test {

namespace fs = std::filesystem;

const std::string kData = FUSIONLM_TEST_DATA;
const fs::path kTool = fs::path(FUSIONLM_BIN_DIR) / "fusionlm-tokenize";
const std::string kTokenizer = kData + "/tokenizers/llama3/tokenizer_llama3.2_vision.json";

struct ToolResult {
    int exit_code = -1;
    std::string out, err;
};

std::string slurp(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::string quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

ToolResult run_tool(const std::string& args, const std::string& stdin_text) {
    const fs::path dir = fs::temp_directory_path() / ("fusionlm_tokcli_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::ofstream(dir / "in.jsonl", std::ios::binary) << stdin_text;
    const std::string cmd = quote(kTool.string()) + " " + args + " < " + quote((dir / "in.jsonl").string()) + " > " +
                            quote((dir / "out").string()) + " 2> " + quote((dir / "err").string());
    const int status = std::system(cmd.c_str());
    ToolResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(dir / "out");
    r.err = slurp(dir / "err");
    fs::remove_all(dir);
    return r;
}

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
};

TEST_F(TokenizeCli, GoldenCorpusWithAndWithoutSpecialParsing) {
    const std::string corpus = slurp(kData + "/golden/tokenizer/public.jsonl");
    const auto records = lines_of(corpus);
    const ToolResult with = run_tool(quote(kTokenizer), corpus);
    ASSERT_EQ(with.exit_code, 0) << with.err;
    const ToolResult without = run_tool(quote(kTokenizer) + " --no-special", corpus);
    ASSERT_EQ(without.exit_code, 0) << without.err;
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
    const ToolResult missing = run_tool(quote(kData + "/no/such/tokenizer.json"), "");
    EXPECT_EQ(missing.exit_code, 2);
    EXPECT_NE(missing.err.find("no/such/tokenizer.json"), std::string::npos) << missing.err;
    EXPECT_EQ(std::count(missing.err.begin(), missing.err.end(), '\n'), 1) << missing.err;

    // Input errors, against a tiny tokenizer so each run starts fast.
    const fs::path tiny = fs::temp_directory_path() / ("fusionlm_tiny_tok_" + std::to_string(::getpid()) + ".json");
    std::ofstream(tiny) << R"({"model": {"type": "BPE", "vocab": {"o": 0, "k": 1, "ok": 2}, "merges": ["o k"]}})";
    const ToolResult bad_line = run_tool(quote(tiny.string()), "{\"text\": \"ok\"}\n{\"txt\": 1}\n");
    EXPECT_EQ(bad_line.exit_code, 2);
    EXPECT_NE(bad_line.err.find("line 2"), std::string::npos) << bad_line.err;
    const auto answered = lines_of(bad_line.out);  // the good first line was answered
    ASSERT_EQ(answered.size(), 1u);
    EXPECT_EQ(answered[0].at("ids"), nlohmann::json::array({2}));

    const ToolResult not_json = run_tool(quote(tiny.string()), "hello\n");
    EXPECT_EQ(not_json.exit_code, 2);
    const ToolResult empty_input = run_tool(quote(tiny.string()), "");
    EXPECT_EQ(empty_input.exit_code, 0);
    std::ofstream(tiny) << R"({"model": {"type": "WordPiece", "vocab": {}}})";
    const ToolResult wordpiece = run_tool(quote(tiny.string()), "");
    EXPECT_EQ(wordpiece.exit_code, 2);
    EXPECT_NE(wordpiece.err.find("WordPiece"), std::string::npos) << wordpiece.err;
    fs::remove(tiny);

    const ToolResult no_args = run_tool("", "");
    EXPECT_EQ(no_args.exit_code, 2);
    const ToolResult bad_flag = run_tool(quote(kTokenizer) + " --bogus", "");
    EXPECT_EQ(bad_flag.exit_code, 2);
}

}  // namespace tokenizer_cli_test
