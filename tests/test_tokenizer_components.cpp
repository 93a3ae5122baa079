// Tokenizer components beyond Llama 3, checked against behaviour documented by Hugging Face
// tokenizers' own tests and the Unicode normalization tests: Metaspace + byte_fallback
// (Llama 2 / Mistral sentencepiece-BPE), the GPT-2 ByteLevel regex, and NFC.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <fusionlm/text/normalize.hpp>
#include <fusionlm/text/tokenizer.hpp>

namespace tokenizer_components_test {

using namespace fusionlm;
using nlohmann::json;

std::vector<std::string> pre_tokenize(const json& config, std::string_view text, bool at_start = true) {
    const PreTokenizer p = PreTokenizer::from_json(config);
    PreTokenized out;
    p.run(text, at_start, out);
    return out.pieces;
}

std::string decode_tokens(const json& config, const std::vector<std::string>& tokens) {
    const TokenDecoder d = TokenDecoder::from_json(config);
    auto st = d.start();
    std::string bytes;
    for (const auto& t : tokens) d.append(t, st, bytes);
    std::string out;
    unicode::append_lossy(out, bytes);
    return out;
}

// A tiny sentencepiece-style BPE: the 256 <0xXX> byte tokens, a few pieces and merges.
json sentencepiece_model() {
    json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
    char name[8];
    for (int b = 0; b < 256; ++b) {
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        vocab[name] = 3 + b;
    }
    const char* pieces[] = {"\u2581", "H", "e", "l", "o", "\u2581H", "ll", "\u2581He", "llo", "\u2581Hello",
                            "w", "r", "d", "\u2581w", "or", "\u2581wor", "ld", "\u2581world"};
    int id = 259;
    for (const char* p : pieces) vocab[p] = id++;
    const json merges = {"\u2581 H", "l l", "\u2581H e", "ll o", "\u2581He llo", "\u2581 w", "o r", "\u2581w or", "l d", "\u2581wor ld"};
    return {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"unk_token", "<unk>"}, {"byte_fallback", true},
            {"fuse_unk", true}, {"ignore_merges", false}, {"dropout", nullptr}};
}

json sentencepiece_decoder() {
    return json::parse(R"({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})");
}

json added_specials() {
    return json::parse(R"([
        {"id": 0, "content": "<unk>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
        {"id": 1, "content": "<s>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false},
        {"id": 2, "content": "</s>", "special": true, "normalized": false, "lstrip": false, "rstrip": false, "single_word": false}])");
}

// Llama 2 / llava-1.5 tokenizer.json layout: Prepend + Replace normalizer, no pre-tokenizer.
Tokenizer legacy_llama2() {
    json j = {{"model", sentencepiece_model()}, {"decoder", sentencepiece_decoder()}, {"added_tokens", added_specials()}};
    j["normalizer"] = json::parse(R"({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]})");
    j["pre_tokenizer"] = nullptr;
    j["post_processor"] = json::parse(R"({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}})");
    return Tokenizer::from_json(j);
}

// Newer Mistral / Llama 2 layout: Metaspace pre-tokenizer with prepend_scheme "first", split off.
Tokenizer metaspace_first() {
    json j = {{"model", sentencepiece_model()}, {"decoder", sentencepiece_decoder()}, {"added_tokens", added_specials()}};
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = json::parse(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": false})");
    return Tokenizer::from_json(j);
}

TEST(Metaspace, PreTokenizerSplitsBeforeReplacement) {
    const json always = json::parse(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": true})");
    EXPECT_EQ(pre_tokenize(always, "Hey friend!"), (std::vector<std::string>{"\u2581Hey", "\u2581friend!"}));
    EXPECT_EQ(pre_tokenize(always, "Hey   friend!"),
              (std::vector<std::string>{"\u2581Hey", "\u2581", "\u2581", "\u2581friend!"}));
    // Legacy form: add_prefix_space false means never prepend.
    const json legacy = json::parse(R"({"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": false})");
    EXPECT_EQ(pre_tokenize(legacy, "Hey friend!"), (std::vector<std::string>{"Hey", "\u2581friend!"}));
    // "first": only a piece at the very start of the input gets the prefix.
    const json first = json::parse(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": false})");
    EXPECT_EQ(pre_tokenize(first, "Hey my friend ", true), (std::vector<std::string>{"\u2581Hey\u2581my\u2581friend\u2581"}));
    EXPECT_EQ(pre_tokenize(first, "how are you", false), (std::vector<std::string>{"how\u2581are\u2581you"}));
}

TEST(Metaspace, DecoderDropsLeadingReplacementOfFirstToken) {
    const json d = json::parse(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": true})");
    EXPECT_EQ(decode_tokens(d, {"\u2581Hey", "\u2581friend!"}), "Hey friend!");
    const json never = json::parse(R"({"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "never"})");
    EXPECT_EQ(decode_tokens(never, {"\u2581Hey", "\u2581friend!"}), " Hey friend!");
}

TEST(ByteFallback, ModelFallsBackToByteTokensOrUnk) {
    // Hugging Face test_bpe_byte_fallback: 'a' has a byte token, 'c' has none and becomes <unk>.
    const json m = json::parse(R"({"type": "BPE", "vocab": {"<unk>": 0, "<0x61>": 1}, "merges": [],
                                   "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true})");
    const BpeModel bpe = BpeModel::from_json(m);
    std::vector<TokenId> ids;
    bpe.encode("c", ids);
    EXPECT_EQ(ids, (std::vector<TokenId>{0}));
    ids.clear();
    bpe.encode("a", ids);
    EXPECT_EQ(ids, (std::vector<TokenId>{1}));
    ids.clear();
    bpe.encode("cca", ids);  // fuse_unk joins the unknown run
    EXPECT_EQ(ids, (std::vector<TokenId>{0, 1}));
}

TEST(ByteFallback, Llama2LegacyRoundTrip) {
    const Tokenizer tok = legacy_llama2();
    EXPECT_EQ(tok.encode("Hello world"), (std::vector<TokenId>{268, 276}));
    // U+4F60 is not in the vocab: its three UTF-8 bytes become <0xE4> <0xBD> <0xA0>.
    const auto ids = tok.encode("Hello \u4F60");
    EXPECT_EQ(ids, (std::vector<TokenId>{268, 259, 3 + 0xE4, 3 + 0xBD, 3 + 0xA0}));
    EXPECT_EQ(tok.decode(ids), "Hello \u4F60");
    // The normalizer prepends to every text segment, including the one after a special token.
    EXPECT_EQ(tok.encode("<s>Hello"), (std::vector<TokenId>{1, 268}));
    EXPECT_EQ(tok.encode("Hello", {.add_special_tokens = true}), (std::vector<TokenId>{1, 268}));
    EXPECT_EQ(tok.decode({1, 268, 276}), "<s> Hello world");
    EXPECT_EQ(tok.decode({1, 268, 276}, /*skip_special=*/true), "Hello world");
}

TEST(ByteFallback, StreamingMatchesWholeDecode) {
    const Tokenizer tok = legacy_llama2();
    const auto ids = tok.encode("Hello \u4F60 world");
    DecodeStream stream(tok);
    std::string joined;
    for (TokenId id : ids) joined += stream.step(id);
    joined += stream.finish();
    EXPECT_EQ(joined, tok.decode(ids));
    EXPECT_EQ(joined, "Hello \u4F60 world");
}

TEST(Metaspace, PrependFirstOnlyAtInputStart) {
    const Tokenizer tok = metaspace_first();
    EXPECT_EQ(tok.encode("Hello world"), (std::vector<TokenId>{268, 276}));
    // After <s> the text is not at the start of the input: no prefix, so "Hello" is H e llo.
    EXPECT_EQ(tok.encode("<s>Hello"), (std::vector<TokenId>{1, 260, 261, 267}));
}

TEST(ByteLevel, Gpt2RegexAndPrefixSpace) {
    // Hugging Face's byte_level.rs pre_tokenization test.
    const json bl = json::parse(R"({"type": "ByteLevel", "add_prefix_space": true, "use_regex": true, "trim_offsets": true})");
    EXPECT_EQ(pre_tokenize(bl, "Hello my friend, how is your day going?"),
              (std::vector<std::string>{"\u0120Hello", "\u0120my", "\u0120friend", ",", "\u0120how", "\u0120is", "\u0120your",
                                        "\u0120day", "\u0120going", "?"}));
    // Contractions are case-sensitive in GPT-2; the last space of a run goes with the next word.
    const auto p = split_by_pattern("I'm I'M  a 2024x\n", SplitPattern::kGpt2);
    EXPECT_EQ(std::vector<std::string>(p.begin(), p.end()),
              (std::vector<std::string>{"I", "'m", " I", "'", "M", " ", " a", " 2024", "x", "\n"}));
    const auto q = split_by_pattern("12345", SplitPattern::kQwen2);
    EXPECT_EQ(q.size(), 5u);
}

TEST(ByteLevel, Gpt2StyleTokenizerEndToEnd) {
    // OLMoE / GPT-NeoX layout: ByteLevel pre-tokenizer with the regex, ByteLevel decoder.
    json vocab = json::object();
    const auto& alphabet = ByteLevelAlphabet::get();
    for (int b = 0; b < 256; ++b) vocab[std::string(alphabet.encode(static_cast<unsigned char>(b)))] = b;
    vocab["\u0120w"] = 256;
    vocab["or"] = 257;
    vocab["\u0120wor"] = 258;
    vocab["\u0120world"] = 259;
    const json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({json::array({"\u0120", "w"}),
                                                                                        json::array({"o", "r"}),
                                                                                        json::array({"\u0120w", "or"}),
                                                                                        json::array({"l", "d"}),
                                                                                        json::array({"\u0120wor", "ld"})})}}},
                    {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
                    {"decoder", {{"type", "ByteLevel"}}}};
    // "ld" is not in the vocab, so the merge "l d" is invalid.
    EXPECT_THROW(Tokenizer::from_json(j), FormatError);
    json ok = j;
    ok["model"]["vocab"]["ld"] = 260;
    const Tokenizer tok = Tokenizer::from_json(ok);
    const auto ids = tok.encode("a world\xC3\xA9");
    EXPECT_EQ(ids, (std::vector<TokenId>{'a', 259, 0xC3, 0xA9}));
    EXPECT_EQ(tok.decode(ids), "a world\xC3\xA9");
}

TEST(Nfc, UnicodeNormalizationTestCases) {
    using unicode::nfc;
    using unicode::nfd;
    EXPECT_EQ(nfc("e\u0301"), "\u00e9");
    EXPECT_EQ(nfd("\u00e9"), "e\u0301");
    EXPECT_EQ(nfc("\u212B"), "\u00C5");  // singleton decomposition
    EXPECT_EQ(nfd("\u212B"), "A\u030A");
    EXPECT_EQ(nfc("\u0958"), "\u0915\u093C");  // composition exclusion
    // Canonical reordering and blocking (NormalizationTest.txt, part 1).
    EXPECT_EQ(nfc("a\u0315\u0300\u05AE\u0300b"), "\u00e0\u05AE\u0300\u0315b");
    EXPECT_EQ(nfd("a\u0315\u0300\u05AE\u0300b"), "a\u05AE\u0300\u0300\u0315b");
    EXPECT_EQ(nfc("\u1E0B\u0323"), "\u1E0D\u0307");
    // Hangul composes algorithmically.
    EXPECT_EQ(nfc("\u1100\u1161\u11A8"), "\uAC01");
    EXPECT_EQ(nfd("\uAC01"), "\u1100\u1161\u11A8");
    EXPECT_EQ(nfc("plain ASCII"), "plain ASCII");
}

TEST(Nfc, NormalizerInTheEncodePipeline) {
    const json j = {{"model", {{"type", "BPE"}, {"vocab", {{"\u00e9", 0}, {"e", 1}, {"\u0301", 2}}}, {"merges", json::array()}}},
                    {"normalizer", {{"type", "NFC"}}}};
    const Tokenizer tok = Tokenizer::from_json(j);
    EXPECT_EQ(tok.encode("e\u0301e"), (std::vector<TokenId>{0, 1}));
}

TEST(Components, UnsupportedPiecesAreNamed) {
    try {
        Tokenizer::from_json_text(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                                      "pre_tokenizer": {"type": "BertPreTokenizer"}})", "x/tokenizer.json");
        FAIL() << "expected UnsupportedError";
    } catch (const UnsupportedError& e) {
        EXPECT_NE(std::string(e.what()).find("BertPreTokenizer"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("x/tokenizer.json"), std::string::npos) << e.what();
    }
    EXPECT_THROW(Tokenizer::from_json_text(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}})"),
                 UnsupportedError);
    EXPECT_THROW(Tokenizer::from_json_text(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                                               "post_processor": {"type": "RobertaProcessing"}})"),
                 UnsupportedError);
}

}  // namespace tokenizer_components_test
