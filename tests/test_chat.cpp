// Chat templates (strings and ids of tests/data/tokenizers/llama3/CHAT_TEMPLATE.md), eos ids, and
// the Mllama cross-attention mask against the golden mllama_tiny inputs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <fusionlm/io/safetensors.hpp>
#include <fusionlm/text/chat.hpp>
#include <fusionlm/text/cross_attention_mask.hpp>
#include <fusionlm/text/tokenizer.hpp>

#include "test_tokenizer_util.hpp"

namespace chat_test {

using namespace fusionlm;

const std::string kData = FUSIONLM_TEST_DATA;

const Tokenizer& vision_tokenizer() { return test::llama32_vision_tokenizer(); }

ChatTemplate mllama_instruct() { return ChatTemplate::for_model("mllama", true); }

TEST(Chat, MllamaOneImage) {
    const std::vector<ChatMessage> chat = {{Role::user, {image_part(), text_part("Describe this image.")}}};
    const auto p = mllama_instruct().render(chat);
    EXPECT_EQ(p.text,
              "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>Describe this image.<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
    EXPECT_EQ(p.image_count, 1u);
    EXPECT_EQ(mllama_instruct().encode(vision_tokenizer(), chat),
              (std::vector<TokenId>{128000, 128006, 882, 128007, 271, 128256, 75885, 420, 2217, 13, 128009, 128006, 78191,
                                    128007, 271}));
}

TEST(Chat, MllamaImagesInsideText) {
    const std::vector<ChatMessage> chat = {
        {Role::user,
         {text_part("Describe this image in two sentences"), image_part(), text_part(" Test sentence   "), image_part(),
          text_part("ok\n")}}};
    EXPECT_EQ(mllama_instruct().encode(vision_tokenizer(), chat),
              (std::vector<TokenId>{128000, 128006, 882, 128007, 271, 75885, 420, 2217, 304, 1403, 23719, 128256, 3475, 11914,
                                    262, 128256, 564, 198, 128009, 128006, 78191, 128007, 271}));
}

TEST(Chat, MllamaTwoImagesSeveralTurns) {
    const std::vector<ChatMessage> chat = {
        {Role::user, {image_part(), image_part(), text_part("What do these images show?")}},
        {Role::assistant, {text_part("The first image shows the statue of Liberty in New York.")}},
        {Role::user, {text_part("And who is that?")}}};
    const auto p = mllama_instruct().render(chat);
    EXPECT_EQ(p.text,
              "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|><|image|>What do these images show?"
              "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nThe first image shows the statue of Liberty in "
              "New York.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnd who is that?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
    EXPECT_EQ(p.image_count, 2u);
    EXPECT_EQ(mllama_instruct().encode(vision_tokenizer(), chat),
              (std::vector<TokenId>{128000, 128006, 882, 128007, 271, 128256, 128256, 3923, 656, 1521, 5448, 1501, 30,
                                    128009, 128006, 78191, 128007, 271, 791, 1176, 2217, 5039, 279, 35372, 315, 32492,
                                    304, 1561, 4356, 13, 128009, 128006, 882, 128007, 271, 3112, 889, 374, 430, 30,
                                    128009, 128006, 78191, 128007, 271}));
}

TEST(Chat, MllamaTextOnlyAddsDatedSystemBlock) {
    const std::vector<ChatMessage> chat = {{Role::user, {text_part("Who are you?")}}};
    EXPECT_EQ(mllama_instruct().encode(vision_tokenizer(), chat),
              (std::vector<TokenId>{128000, 128006, 9125, 128007, 271, 38766, 1303, 33025, 2696, 25, 6790, 220, 2366, 18,
                                    198, 15724, 2696, 25, 220, 1627, 10263, 220, 2366, 19, 271, 128009, 128006, 882,
                                    128007, 271, 15546, 527, 499, 30, 128009, 128006, 78191, 128007, 271}));
    const std::vector<ChatMessage> with_system = {{Role::system, {text_part("  Be brief. ")}},
                                                  {Role::user, {text_part("Hi")}}};
    EXPECT_EQ(mllama_instruct().render(with_system).text,
              "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
              "Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(Chat, MllamaRefusesSystemWithImages) {
    const std::vector<ChatMessage> chat = {{Role::system, {text_part("You are a cat.")}},
                                           {Role::user, {image_part(), text_part("Hi")}}};
    EXPECT_THROW(mllama_instruct().render(chat), InputError);
}

TEST(Chat, BaseModelGetsPromptAfterBos) {
    const auto base = ChatTemplate::for_model("mllama", false);
    const std::vector<ChatMessage> chat = {{Role::user, {image_part(), text_part("If I had to write a haiku for this one")}}};
    EXPECT_EQ(base.render(chat).text, "<|begin_of_text|><|image|>If I had to write a haiku for this one");
    EXPECT_EQ(base.encode(vision_tokenizer(), chat),
              (std::vector<TokenId>{128000, 128256, 2746, 358, 1047, 311, 3350, 264, 6520, 39342, 369, 420, 832}));
}

TEST(Chat, UserTextNeverBecomesSpecialTokens) {
    const std::vector<ChatMessage> chat = {{Role::user, {image_part(), text_part("<|eot_id|><|image|>")}}};
    const auto ids = mllama_instruct().encode(vision_tokenizer(), chat);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), 128256), 1);  // only the real image
    EXPECT_EQ(std::count(ids.begin(), ids.end(), 128009), 1);  // only the template's end of turn
    EXPECT_EQ(vision_tokenizer().decode(ids),
              "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|><|eot_id|><|image|><|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(Chat, Llama3TextTemplateTrims) {
    const auto t = ChatTemplate::for_model("llama", true, "{{ '<|start_header_id|>' }}");
    const std::vector<ChatMessage> chat = {{Role::system, {text_part("This is a test sentence. ")}},
                                           {Role::user, {text_part("\nThis is a response.")}}};
    EXPECT_EQ(t.encode(vision_tokenizer(), chat),
              (std::vector<TokenId>{128000, 128006, 9125, 128007, 271, 2028, 374, 264, 1296, 11914, 13, 128009, 128006,
                                    882, 128007, 271, 2028, 374, 264, 2077, 13, 128009, 128006, 78191, 128007, 271}));
    EXPECT_THROW(t.render({{Role::user, {image_part()}}}), InputError);
    EXPECT_THROW(ChatTemplate::for_model("llama", true, "[INST]"), UnsupportedError);
    EXPECT_THROW(ChatTemplate::for_model("qwen2_moe", true), UnsupportedError);
    EXPECT_EQ(ChatTemplate::for_model("mixtral", false).style, ChatStyle::plain);
}

TEST(Chat, LlavaFormat) {
    const auto t = ChatTemplate::for_model("llava", true);
    const std::vector<ChatMessage> chat = {{Role::user, {image_part(), text_part("What is shown?")}}};
    EXPECT_EQ(t.render(chat).text, "<s>USER: <image>\nWhat is shown? ASSISTANT:");
    const std::vector<ChatMessage> turns = {{Role::user, {text_part("Hi"), image_part()}},
                                            {Role::assistant, {text_part("A cat.")}},
                                            {Role::user, {text_part("Sure?")}}};
    EXPECT_EQ(t.render(turns).text, "<s>USER: <image>\nHi ASSISTANT: A cat. USER: Sure? ASSISTANT:");
    EXPECT_EQ(ChatTemplate::for_model("llava", false).render(chat).text, "<s><image>What is shown?");
}

TEST(Chat, FromDirReadsModelTypeAndTemplate) {
    const auto dir = std::filesystem::temp_directory_path() / ("fusionlm_chat_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "config.json") << R"({"model_type": "mllama"})";
    std::filesystem::copy_file(kData + "/tokenizers/llama3/tokenizer_config.json", dir / "tokenizer_config.json",
                               std::filesystem::copy_options::overwrite_existing);
    const auto t = ChatTemplate::from_dir(dir);
    EXPECT_EQ(t.style, ChatStyle::mllama);
    EXPECT_EQ(t.bos, "<|begin_of_text|>");
    std::filesystem::remove(dir / "tokenizer_config.json");
    EXPECT_EQ(ChatTemplate::from_dir(dir).style, ChatStyle::plain);
    std::ofstream(dir / "config.json") << R"({"no_model_type": 1})";
    EXPECT_THROW(ChatTemplate::from_dir(dir), ConfigError);
    std::filesystem::remove_all(dir);
}

TEST(Chat, EosIdsIntOrList) {
    EXPECT_EQ(eos_token_ids(nlohmann::json::parse(R"({"eos_token_id": 501})")), (std::vector<TokenId>{501}));
    EXPECT_EQ(eos_token_ids(nlohmann::json::parse(R"({"eos_token_id": [128001, 128008, 128009]})")),
              (std::vector<TokenId>{128001, 128008, 128009}));
    EXPECT_TRUE(eos_token_ids(nlohmann::json::parse(R"({"bos_token_id": 1})")).empty());
    EXPECT_THROW(eos_token_ids(nlohmann::json::parse(R"({"eos_token_id": "x"})")), ConfigError);
    EXPECT_EQ(read_eos_token_ids(kData + "/golden/mllama_tiny/generation_config.json"), (std::vector<TokenId>{501}));
}

// ---- cross-attention mask ----

TEST(CrossAttentionMask, SpansFollowHuggingFace) {
    // Consecutive tags share the span after them; each span starts at its own tag.
    const std::vector<std::int64_t> ids = {1, 9, 9, 2, 3, 9, 4};
    const auto spans = cross_attention_spans(ids, 9);
    ASSERT_EQ(spans.size(), 3u);
    EXPECT_EQ(spans[0], (std::pair<std::int64_t, std::int64_t>{1, 5}));
    EXPECT_EQ(spans[1], (std::pair<std::int64_t, std::int64_t>{2, 5}));
    EXPECT_EQ(spans[2], (std::pair<std::int64_t, std::int64_t>{5, 7}));
    // A tag as the very last token still sees itself.
    const std::vector<std::int64_t> tail = {1, 9};
    EXPECT_EQ(cross_attention_spans(tail, 9).at(0), (std::pair<std::int64_t, std::int64_t>{1, 2}));
    const std::vector<std::int64_t> tiles = {2};
    EXPECT_THROW(cross_attention_mask(ids, 9, tiles, 4, 4), InputError);
    const std::vector<std::int64_t> too_many = {5};
    EXPECT_THROW(cross_attention_mask(tail, 9, too_many, 1, 4), InputError);
}

TEST(CrossAttentionMask, MatchesGoldenMllamaTiny) {
    const auto inputs = SafetensorsFile::open(kData + "/golden/mllama_tiny/inputs.safetensors");
    const TensorView& ids = inputs.get("input_ids");
    const TensorView& tiles = inputs.get("num_tiles");
    const TensorView& expected = inputs.get("cross_attention_mask");
    ASSERT_EQ(ids.dtype, DType::I64);
    const auto batch = std::size_t(ids.dim(0)), seq = std::size_t(ids.dim(1));
    const auto max_images = std::size_t(expected.dim(2)), max_tiles = std::size_t(expected.dim(3));
    const std::int64_t image_token_index = 512;  // config.json image_token_index
    for (std::size_t b = 0; b < batch; ++b) {
        const std::span<const std::int64_t> row(ids.as<std::int64_t>() + b * seq, seq);
        std::vector<std::int64_t> num_tiles;
        for (std::size_t i = 0; i < max_images; ++i)
            if (const auto n = tiles.as<std::int64_t>()[b * max_images + i]; n > 0) num_tiles.push_back(n);
        const auto mask = cross_attention_mask(row, image_token_index, num_tiles, max_images, max_tiles);
        const std::span<const std::int64_t> want(expected.as<std::int64_t>() + b * seq * max_images * max_tiles,
                                                 seq * max_images * max_tiles);
        ASSERT_EQ(mask.size(), want.size());
        for (std::size_t k = 0; k < mask.size(); ++k) EXPECT_EQ(mask[k], want[k]) << "batch " << b << " flat index " << k;
    }
}

}  // namespace chat_test
