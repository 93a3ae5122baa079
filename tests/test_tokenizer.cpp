// Llama 3 tokenizer against the golden corpus, plus streaming decode and error handling.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <fusionlm/text/tokenizer.hpp>

#include "test_tokenizer_util.hpp"

namespace tokenizer_test {

using fusionlm::TokenId;
using fusionlm::Tokenizer;

const std::string kData = FUSIONLM_TEST_DATA;

const Tokenizer& vision_tokenizer() { return fusionlm::test::llama32_vision_tokenizer(); }
const Tokenizer& base_tokenizer() { return fusionlm::test::llama3_tokenizer(); }

std::vector<nlohmann::json> golden_records() {
    std::ifstream f(kData + "/golden/tokenizer/public.jsonl");
    std::vector<nlohmann::json> out;
    for (std::string line; std::getline(f, line);)
        if (!line.empty()) out.push_back(nlohmann::json::parse(line));
    return out;
}

std::vector<TokenId> ids_of(const nlohmann::json& a) { return a.get<std::vector<TokenId>>(); }

TEST(Tokenizer, GoldenCorpusIds) {
    const auto records = golden_records();
    ASSERT_GE(records.size(), 70u);
    const Tokenizer& tok = vision_tokenizer();
    for (const auto& r : records) {
        const std::string name = r.at("name");
        const std::string text = r.at("text");
        EXPECT_EQ(tok.encode(text), ids_of(r.at("ids"))) << name;
        const auto no_special = r.contains("ids_no_special_parsing") ? ids_of(r.at("ids_no_special_parsing")) : ids_of(r.at("ids"));
        EXPECT_EQ(tok.encode(text, {.parse_special = false}), no_special) << name;
    }
}

TEST(Tokenizer, GoldenCorpusLlama3BaseNames) {
    const Tokenizer& tok = base_tokenizer();
    for (const auto& r : golden_records()) {
        const auto expected = r.contains("ids_llama3_base") ? ids_of(r.at("ids_llama3_base")) : ids_of(r.at("ids"));
        EXPECT_EQ(tok.encode(r.at("text").get<std::string>()), expected) << r.at("name");
    }
}

TEST(Tokenizer, GoldenCorpusDecoded) {
    const Tokenizer& tok = vision_tokenizer();
    for (const auto& r : golden_records()) {
        EXPECT_EQ(tok.decode(ids_of(r.at("ids"))), r.at("decoded").get<std::string>()) << r.at("name");
        if (r.contains("ids_no_special_parsing")) {
            EXPECT_EQ(tok.decode(ids_of(r.at("ids_no_special_parsing"))), r.at("decoded").get<std::string>()) << r.at("name");
        }
    }
}

TEST(Tokenizer, PostProcessorAddsBos) {
    const Tokenizer& tok = vision_tokenizer();
    const std::vector<TokenId> plain = {2028, 374, 264, 1296, 11914, 13};
    EXPECT_EQ(tok.encode("This is a test sentence."), plain);
    auto with_bos = plain;
    with_bos.insert(with_bos.begin(), 128000);
    EXPECT_EQ(tok.encode("This is a test sentence.", {.add_special_tokens = true}), with_bos);
    // Like Hugging Face: a text that already starts with BOS gets a second one.
    const auto twice = tok.encode("<|begin_of_text|>Hi", {.add_special_tokens = true});
    ASSERT_GE(twice.size(), 2u);
    EXPECT_EQ(twice[0], 128000);
    EXPECT_EQ(twice[1], 128000);
    // The Llama 3 tokenizer.json post-processor adds nothing.
    EXPECT_EQ(base_tokenizer().encode("This is a test sentence.", {.add_special_tokens = true}), plain);
}

TEST(Tokenizer, SpecialTokensAndSkipping) {
    const Tokenizer& tok = vision_tokenizer();
    EXPECT_EQ(tok.token_to_id("<|image|>"), 128256);
    EXPECT_EQ(tok.token_to_id("<|eot_id|>"), 128009);
    EXPECT_TRUE(tok.is_special(128009));
    EXPECT_FALSE(tok.is_special(13));
    EXPECT_EQ(tok.vocab_size(), 128257u);
    const auto ids = tok.encode("<|begin_of_text|>Hello<|eot_id|>");
    EXPECT_EQ(ids, (std::vector<TokenId>{128000, 9906, 128009}));
    EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), "Hello");
    EXPECT_EQ(tok.decode(ids), "<|begin_of_text|>Hello<|eot_id|>");
}

TEST(Tokenizer, UnicodeWhiteSpaceAndContractions) {
    const Tokenizer& tok = vision_tokenizer();
    // U+017F folds to 's' under simple case folding, so "'ſ" is a contraction piece: the word
    // before it must not swallow the apostrophe.
    const auto a = tok.encode("it\u2019s it's IT'S it'\u017F");
    EXPECT_EQ(tok.decode(a), "it\u2019s it's IT'S it'\u017F");
    const auto pieces = fusionlm::split_by_pattern("it'\u017F x'S", fusionlm::SplitPattern::kLlama3);
    ASSERT_EQ(pieces.size(), 4u);
    EXPECT_EQ(pieces[1], "'\u017F");
    EXPECT_EQ(pieces[2], " x");
    EXPECT_EQ(pieces[3], "'S");
    // U+0085 is White_Space (not a letter-prefix), U+FEFF is not.
    const auto ws = fusionlm::split_by_pattern("a\u0085b", fusionlm::SplitPattern::kLlama3);
    ASSERT_EQ(ws.size(), 2u);
    EXPECT_EQ(ws[1], "\u0085b");
    const auto nums = fusionlm::split_by_pattern("12345\u00bd\u00b2", fusionlm::SplitPattern::kLlama3);
    // \p{N} includes No (U+00BD, U+00B2): digits and these group together, three at a time.
    ASSERT_EQ(nums.size(), 3u);
    EXPECT_EQ(nums[0], "123");
    EXPECT_EQ(nums[1], "45\u00bd");
    EXPECT_EQ(nums[2], "\u00b2");
}

TEST(Tokenizer, RejectsInvalidUtf8AndUnknownIds) {
    const Tokenizer& tok = vision_tokenizer();
    EXPECT_THROW(tok.encode(std::string("ab\xff", 3)), fusionlm::InputError);
    EXPECT_THROW(tok.encode(std::string("\xe2\x82", 2)), fusionlm::InputError);
    EXPECT_THROW(tok.decode({1, 999999}), fusionlm::InputError);
    EXPECT_THROW(tok.decode({-1}), fusionlm::InputError);
}

TEST(Tokenizer, StreamingHoldsPartialUtf8) {
    const Tokenizer& tok = vision_tokenizer();
    // Flags and skin tones take 3 byte-level tokens per 4-byte character (golden pub-046/047).
    const std::string text = "Hi \U0001F1FA\U0001F1F8 \U0001F44D\U0001F3FD \u4F60\u597D caf\u00E9!";
    const auto ids = tok.encode(text);
    fusionlm::DecodeStream stream(tok);
    std::string joined;
    bool saw_held_back = false;
    for (TokenId id : ids) {
        const std::string piece = stream.step(id);
        // Every piece handed out is complete UTF-8 on its own.
        EXPECT_EQ(fusionlm::unicode::find_invalid_utf8(piece), std::string::npos);
        saw_held_back = saw_held_back || stream.has_pending();
        joined += piece;
    }
    joined += stream.finish();
    EXPECT_TRUE(saw_held_back) << "the emoji should span several byte-level tokens";
    EXPECT_EQ(joined, text);
}

TEST(Tokenizer, StreamingLoneByteBecomesReplacementAtFinish) {
    const Tokenizer& tok = vision_tokenizer();
    // The first byte of a 4-byte sequence alone: held back, then U+FFFD at finish.
    const TokenId lead = tok.token_to_id("\xC3\xB0");  // byte 0xF0 in the byte-level alphabet
    ASSERT_GE(lead, 0);
    fusionlm::DecodeStream stream(tok);
    EXPECT_EQ(stream.step(lead), "");
    EXPECT_EQ(stream.step(tok.token_to_id("a")), "\xEF\xBF\xBD" "a");
    EXPECT_EQ(stream.step(lead), "");
    EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");
    EXPECT_EQ(tok.decode({lead, tok.token_to_id("a")}), "\xEF\xBF\xBD" "a");
}

TEST(Tokenizer, LoadErrorsAreTyped) {
    EXPECT_THROW(Tokenizer::from_file(kData + "/nope/tokenizer.json"), fusionlm::InputError);
    EXPECT_THROW(Tokenizer::from_json_text("{not json"), fusionlm::FormatError);
    EXPECT_THROW(Tokenizer::from_json_text(R"({"model": {"type": "Unigram", "vocab": []}})"), fusionlm::UnsupportedError);
    EXPECT_THROW(Tokenizer::from_json_text(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})"),
                 fusionlm::FormatError);
    EXPECT_THROW(Tokenizer::from_json_text(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated", "invert": false}})"),
                 fusionlm::UnsupportedError);
    EXPECT_THROW(Tokenizer::from_json_text(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
        "normalizer": {"type": "NFKC"}})"),
                 fusionlm::UnsupportedError);
    EXPECT_THROW(Tokenizer::from_json_text(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
        "decoder": {"type": "WordPiece", "prefix": "##"}})"),
                 fusionlm::UnsupportedError);
}

}  // namespace tokenizer_test
