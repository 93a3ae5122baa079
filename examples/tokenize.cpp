// fusionlm-tokenize TOKENIZER_JSON [--no-special]
// Reads JSON lines with a "text" field on stdin; writes one JSON line {"ids": [...], "decoded": "..."}
// per input, in order. Special-token text is parsed as special tokens unless --no-special; no BOS is
// added; decoding keeps special tokens and does not clean up spaces. Errors: one line, exit 2.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <fusionlm/text/tokenizer.hpp>

namespace {

constexpr const char* kUsage =
    "usage: fusionlm-tokenize TOKENIZER_JSON [--no-special]\n"
    "  stdin:  JSON lines, each an object with a \"text\" string\n"
    "  stdout: one JSON line per input: {\"ids\": [...], \"decoded\": \"...\"}\n"
    "  --no-special  encode special-token text (e.g. <|eot_id|>) as plain text\n";

int fail(const std::string& message) {
    std::cout.flush();
    std::cerr << "fusionlm-tokenize: " << message << "\n";
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string path;
    fusionlm::EncodeOptions options;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--no-special") {
            options.parse_special = false;
        } else if (arg == "-h" || arg == "--help") {
            std::cout << kUsage;
            return 0;
        } else if (!arg.empty() && arg[0] == '-') {
            return fail("unknown option '" + std::string(arg) + "' (see --help)");
        } else if (path.empty()) {
            path = arg;
        } else {
            return fail("more than one tokenizer file given (see --help)");
        }
    }
    if (path.empty()) return fail("missing TOKENIZER_JSON (see --help)");

    try {
        const auto tokenizer = fusionlm::Tokenizer::from_file(path);
        std::string line;
        for (std::size_t line_no = 1; std::getline(std::cin, line); ++line_no) {
            if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
            const std::string where = "stdin line " + std::to_string(line_no);
            nlohmann::json record;
            try {
                record = nlohmann::json::parse(line);
            } catch (const nlohmann::json::exception& e) {
                return fail(where + ": not valid JSON (" + e.what() + ")");
            }
            if (!record.is_object() || !record.contains("text") || !record.at("text").is_string())
                return fail(where + ": expected an object with a string field \"text\"");
            const auto ids = tokenizer.encode(record.at("text").get<std::string>(), options);
            const nlohmann::json out = {{"ids", ids}, {"decoded", tokenizer.decode(ids)}};
            std::cout << out.dump() << "\n" << std::flush;
        }
    } catch (const fusionlm::Error& e) {
        return fail(e.what());
    } catch (const std::exception& e) {
        return fail(std::string("unexpected error: ") + e.what());
    }
    return 0;
}
