// io: config.json parsing, Hugging Face defaults, and rejection of malformed or absurd configs.
#include <gtest/gtest.h>

#include <string>
#include <variant>

#include "fusionlm/io/config.hpp"
#include "test_io_util.hpp"

using namespace fusionlm;
using namespace fusionlm::io_test;

namespace {

// Parses a JSON document given as text (as if it were the file "cfg/config.json").
ModelConfig parse(const std::string& text) { return parse_config(parse_json(text, "cfg/config.json"), "cfg/config.json"); }

// `golden` config with one field replaced (a JSON pointer path, e.g. "/text_config/hidden_size").
Json golden_with(const char* name, const std::string& pointer, const Json& value) {
    Json j = read_json_file(kGolden / name / "config.json");
    j[Json::json_pointer(pointer)] = value;
    return j;
}

void expect_config_error(const char* name, const std::string& pointer, const Json& value,
                         const std::vector<std::string>& fragments) {
    SCOPED_TRACE(std::string(name) + " " + pointer + " = " + value.dump());
    const Json j = golden_with(name, pointer, value);
    auto all = fragments;
    all.push_back("cfg/config.json: ");
    expect_error<ConfigError>([&] { (void)parse_config(j, "cfg/config.json"); }, all);
}

}  // namespace

TEST(Config, GoldenMllama) {
    const ModelConfig m = load_config(kGolden / "mllama_tiny");
    EXPECT_EQ(m.model_type, "mllama");
    EXPECT_EQ(m.architectures, (std::vector<std::string>{"MllamaForConditionalGeneration"}));
    EXPECT_EQ(m.torch_dtype, "float32");
    const auto& c = std::get<MllamaConfig>(m.family);
    EXPECT_EQ(c.image_token_index, 512);
    const auto& t = c.text_config;
    EXPECT_EQ(t.vocab_size, 512);
    EXPECT_EQ(t.hidden_size, 64);
    EXPECT_EQ(t.num_hidden_layers, 6);
    EXPECT_EQ(t.num_attention_heads, 4);
    EXPECT_EQ(t.num_key_value_heads, 2);
    EXPECT_EQ(t.head_dim, 16);
    EXPECT_EQ(t.cross_attention_layers, (std::vector<std::int64_t>{1, 4}));
    EXPECT_EQ(t.rope_theta, 500000.0);
    ASSERT_TRUE(t.rope_scaling.has_value());
    EXPECT_EQ(t.rope_scaling->rope_type, "llama3");
    EXPECT_EQ(t.rope_scaling->factor, 8.0f);
    EXPECT_EQ(t.rope_scaling->low_freq_factor, 1.0f);
    EXPECT_EQ(t.rope_scaling->high_freq_factor, 4.0f);
    EXPECT_EQ(t.rope_scaling->original_max_position_embeddings, 64);
    EXPECT_EQ(t.bos_token_id, 500);
    EXPECT_EQ(t.eos_token_id, (std::vector<std::int64_t>{501}));
    EXPECT_EQ(t.pad_token_id, 502);
    const auto& v = c.vision_config;
    EXPECT_EQ(v.attention_heads, 4);
    EXPECT_EQ(v.num_hidden_layers, 3);
    EXPECT_EQ(v.num_global_layers, 2);
    EXPECT_EQ(v.image_size, 56);
    EXPECT_EQ(v.patch_size, 14);
    EXPECT_EQ(v.intermediate_layers_indices, (std::vector<std::int64_t>{1, 3}));
    EXPECT_EQ(v.vision_output_dim, 192);
    EXPECT_EQ(v.supported_aspect_ratios.size(), 8u);
    EXPECT_EQ(v.norm_eps, 1e-5);
}

TEST(Config, GoldenLlavaAndMoe) {
    const auto llava = std::get<LlavaConfig>(load_config(kGolden / "llava_tiny" / "config.json").family);
    EXPECT_EQ(llava.image_token_index, 511);
    EXPECT_EQ(llava.vision_feature_layer, -2);
    EXPECT_EQ(llava.vision_feature_select_strategy, "default");
    EXPECT_EQ(llava.image_seq_length, 16);
    EXPECT_EQ(llava.projector_hidden_act, "gelu");
    EXPECT_EQ(llava.vision_config.hidden_act, "quick_gelu");
    EXPECT_EQ(llava.vision_config.num_hidden_layers, 3);
    EXPECT_EQ(llava.vision_config.image_size, 56);
    EXPECT_EQ(llava.text_config.head_dim, 16);
    EXPECT_EQ(llava.text_config.num_key_value_heads, 2);
    EXPECT_FALSE(llava.text_config.rope_scaling.has_value());
    EXPECT_EQ(llava.text_config.rms_norm_eps, 1e-5);

    const auto mix = std::get<MixtralConfig>(load_config(kGolden / "mixtral_tiny").family);
    EXPECT_EQ(mix.num_local_experts, 8);
    EXPECT_EQ(mix.num_experts_per_tok, 2);
    EXPECT_FALSE(mix.sliding_window.has_value());
    EXPECT_EQ(mix.rope_theta, 1e6);

    const auto qwen = std::get<Qwen2MoeConfig>(load_config(kGolden / "qwen2_moe_tiny").family);
    EXPECT_EQ(qwen.num_experts, 8);
    EXPECT_EQ(qwen.num_experts_per_tok, 3);
    EXPECT_EQ(qwen.moe_intermediate_size, 48);
    EXPECT_EQ(qwen.shared_expert_intermediate_size, 96);
    EXPECT_FALSE(qwen.norm_topk_prob);
    EXPECT_EQ(qwen.rms_norm_eps, 1e-6);
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(qwen.is_sparse_layer(i));

    const auto olmoe = std::get<OlmoeConfig>(load_config(kGolden / "olmoe_tiny_bf16").family);
    EXPECT_EQ(olmoe.num_experts, 8);
    EXPECT_EQ(olmoe.num_key_value_heads, 4);
    EXPECT_EQ(olmoe.intermediate_size, 48);
    EXPECT_FALSE(olmoe.clip_qkv.has_value());
    EXPECT_FALSE(olmoe.bos_token_id.has_value());  // absent: OlmoeConfig default None
    EXPECT_EQ(olmoe.pad_token_id, 1);
    EXPECT_EQ(olmoe.eos_token_id, (std::vector<std::int64_t>{2}));
}

TEST(Config, AbsentKeysTakeHuggingFaceDefaults) {
    const auto llama = std::get<LlamaConfig>(parse(R"({"model_type": "llama"})").family);
    EXPECT_EQ(llama.vocab_size, 32000);
    EXPECT_EQ(llama.hidden_size, 4096);
    EXPECT_EQ(llama.intermediate_size, 11008);
    EXPECT_EQ(llama.num_key_value_heads, 32);  // None -> num_attention_heads
    EXPECT_EQ(llama.head_dim, 128);
    EXPECT_EQ(llama.rms_norm_eps, 1e-6);
    EXPECT_EQ(llama.eos_token_id, (std::vector<std::int64_t>{2}));

    const auto mllama = std::get<MllamaConfig>(parse(R"({"model_type": "mllama"})").family);
    EXPECT_EQ(mllama.image_token_index, 128256);
    EXPECT_EQ(mllama.text_config.num_hidden_layers, 40);
    EXPECT_EQ(mllama.text_config.num_key_value_heads, 8);
    EXPECT_EQ(mllama.text_config.cross_attention_layers, (std::vector<std::int64_t>{3, 8, 13, 18, 23, 28, 33, 38}));
    EXPECT_EQ(mllama.vision_config.hidden_size, 1280);
    EXPECT_EQ(mllama.vision_config.vision_output_dim, 7680);
    EXPECT_EQ(mllama.vision_config.image_size, 448);

    const auto llava = std::get<LlavaConfig>(parse(R"({"model_type": "llava", "text_config": {"vocab_size": 32064}})").family);
    EXPECT_EQ(llava.vision_config.hidden_size, 1024);  // llava-1.5 tower when vision_config is absent
    EXPECT_EQ(llava.vision_config.image_size, 336);
    EXPECT_EQ(llava.image_seq_length, 576);
    const auto clip = std::get<LlavaConfig>(
        parse(R"({"model_type": "llava", "text_config": {"vocab_size": 32064}, "vision_config": {}, "image_seq_length": 49})")
            .family);
    EXPECT_EQ(clip.vision_config.hidden_size, 768);  // a given vision_config starts from CLIPVisionConfig defaults
    EXPECT_EQ(clip.vision_config.patch_size, 32);

    const auto mix = std::get<MixtralConfig>(parse(R"({"model_type": "mixtral"})").family);
    EXPECT_EQ(mix.intermediate_size, 14336);
    EXPECT_EQ(mix.num_key_value_heads, 8);
    const auto qwen = std::get<Qwen2MoeConfig>(parse(R"({"model_type": "qwen2_moe", "mlp_only_layers": [1]})").family);
    EXPECT_EQ(qwen.num_experts, 60);
    EXPECT_EQ(qwen.num_experts_per_tok, 4);
    EXPECT_FALSE(qwen.is_sparse_layer(1));
    EXPECT_TRUE(qwen.is_sparse_layer(2));
    const auto olmoe = std::get<OlmoeConfig>(parse(R"({"model_type": "olmoe"})").family);
    EXPECT_EQ(olmoe.num_experts, 64);
    EXPECT_EQ(olmoe.num_experts_per_tok, 8);
    EXPECT_EQ(olmoe.eos_token_id, (std::vector<std::int64_t>{50279}));
}

TEST(Config, TokenIdsAndNullables) {
    const auto c = std::get<LlamaConfig>(
        parse(R"({"model_type": "llama", "eos_token_id": [128001, 128008], "bos_token_id": null,
                 "num_key_value_heads": null, "rope_scaling": null, "head_dim": 64, "num_attention_heads": 8})")
            .family);
    EXPECT_EQ(c.eos_token_id, (std::vector<std::int64_t>{128001, 128008}));
    EXPECT_FALSE(c.bos_token_id.has_value());
    EXPECT_EQ(c.num_key_value_heads, 8);
    EXPECT_EQ(c.head_dim, 64);
    const auto legacy = std::get<LlamaConfig>(parse(R"({"model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0}})").family);
    EXPECT_EQ(legacy.rope_scaling->rope_type, "linear");
    EXPECT_EQ(legacy.rope_scaling->factor, 2.0f);
}

TEST(Config, UnknownModelTypeIsNotAnError) {
    const ModelConfig m = parse(R"({"model_type": "gpt2", "n_embd": 768})");
    EXPECT_EQ(m.model_type, "gpt2");
    EXPECT_FALSE(m.supported());
    EXPECT_TRUE(std::holds_alternative<std::monostate>(m.family));
}

TEST(Config, NotJsonIsAFormatErrorNamingTheFile) {
    TempDir dir;
    write_bytes(dir / "config.json", "{\"model_type\": \"llama\",");
    expect_error<FormatError>([&] { (void)load_config(dir.path()); }, {(dir / "config.json").string(), "not valid JSON"});
    expect_error<FormatError>([&] { (void)load_config(dir / "nope.json"); }, {"nope.json", "cannot open"});
    write_bytes(dir / "config.json", "[1, 2]");
    expect_error<ConfigError>([&] { (void)load_config(dir.path()); }, {"config.json", "top level", "expected an object"});
    write_bytes(dir / "config.json", "{\"hidden_size\": 3}");
    expect_error<ConfigError>([&] { (void)load_config(dir.path()); }, {"model_type", "missing"});
    write_bytes(dir / "config.json", std::string(100, '[') + std::string(100, ']'));
    expect_error<FormatError>([&] { (void)load_config(dir.path()); }, {"nested deeper"});
}

TEST(Config, BadFieldsAreConfigErrorsNamingTheFieldPath) {
    expect_config_error("mllama_tiny", "/text_config/hidden_size", nullptr, {"text_config.hidden_size", "null"});
    expect_config_error("mllama_tiny", "/text_config/hidden_size", "64", {"text_config.hidden_size", "expected an integer"});
    expect_config_error("mllama_tiny", "/text_config/hidden_size", -3,
                        {"text_config.hidden_size: expected a positive integer, got -3"});
    expect_config_error("mllama_tiny", "/text_config/hidden_size", 0, {"text_config.hidden_size", "positive"});
    expect_config_error("mllama_tiny", "/text_config/hidden_size", 64.5, {"text_config.hidden_size", "integer"});
    expect_config_error("mllama_tiny", "/text_config/hidden_size", 1e30, {"text_config.hidden_size"});
    expect_config_error("mllama_tiny", "/text_config/hidden_size", 66, {"text_config.num_attention_heads", "does not divide"});
    expect_config_error("mllama_tiny", "/text_config/num_key_value_heads", 3,
                        {"text_config.num_key_value_heads", "does not divide num_attention_heads"});
    expect_config_error("mllama_tiny", "/text_config/cross_attention_layers", Json{1, 6},
                        {"text_config.cross_attention_layers", "layer 6 is out of range"});
    expect_config_error("mllama_tiny", "/text_config/cross_attention_layers", Json{1, 1},
                        {"text_config.cross_attention_layers", "listed twice"});
    expect_config_error("mllama_tiny", "/text_config/cross_attention_layers", "1,4",
                        {"text_config.cross_attention_layers", "list of integers"});
    expect_config_error("mllama_tiny", "/text_config/rms_norm_eps", "1e-5", {"text_config.rms_norm_eps", "expected a number"});
    expect_config_error("mllama_tiny", "/text_config/rms_norm_eps", -1.0, {"text_config.rms_norm_eps", "positive"});
    expect_config_error("mllama_tiny", "/text_config/tie_word_embeddings", 0, {"text_config.tie_word_embeddings", "true or false"});
    expect_config_error("mllama_tiny", "/text_config/rope_scaling/low_freq_factor", nullptr,
                        {"text_config.rope_scaling.low_freq_factor", "required by rope_type llama3"});
    expect_config_error("mllama_tiny", "/text_config/rope_scaling/high_freq_factor", 0.5,
                        {"text_config.rope_scaling.high_freq_factor", "must exceed"});
    expect_config_error("mllama_tiny", "/text_config/rope_scaling", 8, {"text_config.rope_scaling", "expected an object"});
    expect_config_error("mllama_tiny", "/text_config", "oops", {"text_config", "expected an object"});
    expect_config_error("mllama_tiny", "/text_config/vocab_size", 2147483647,
                        {"text_config.vocab_size", "more than the 1 TB limit"});
    expect_config_error("mllama_tiny", "/text_config/vocab_size", 4294967296LL, {"text_config.vocab_size", "absurdly large"});
    expect_config_error("mllama_tiny", "/text_config/intermediate_size", 2000000000, {"text_config.", "1 TB"});
    expect_config_error("mllama_tiny", "/image_token_index", 600, {"image_token_index", "outside the embedding table"});
    expect_config_error("mllama_tiny", "/vision_config/vision_output_dim", 128, {"vision_config.vision_output_dim", "disagrees"});
    expect_config_error("mllama_tiny", "/vision_config/intermediate_layers_indices", Json{1, 9},
                        {"vision_config.intermediate_layers_indices", "out of range"});
    expect_config_error("mllama_tiny", "/vision_config/attention_heads", 5, {"vision_config.attention_heads", "does not divide"});
    expect_config_error("mllama_tiny", "/vision_config/patch_size", 100, {"vision_config.patch_size", "exceeds image_size"});
    expect_config_error("mllama_tiny", "/vision_config/supported_aspect_ratios", Json{{1, 1}, {3, 3}},
                        {"vision_config.supported_aspect_ratios", "entry 1"});
    expect_config_error("mllama_tiny", "/vision_config/image_size", 2000000000, {"vision_config.image_size", "1 TB"});

    expect_config_error("llava_tiny", "/vision_feature_select_strategy", "cls", {"vision_feature_select_strategy"});
    expect_config_error("llava_tiny", "/vision_feature_layer", -5, {"vision_feature_layer", "not an index"});
    expect_config_error("llava_tiny", "/image_seq_length", 17, {"image_seq_length", "disagrees"});
    expect_config_error("llava_tiny", "/image_token_index", 512, {"image_token_index", "outside the vocabulary"});
    expect_config_error("llava_tiny", "/vision_config/num_attention_heads", 3, {"vision_config.num_attention_heads"});
    expect_config_error("llava_tiny", "/text_config/head_dim", 15, {"text_config.head_dim", "odd"});

    expect_config_error("mixtral_tiny", "/num_experts_per_tok", 9, {"num_experts_per_tok", "exceeds num_local_experts"});
    expect_config_error("mixtral_tiny", "/num_local_experts", 0, {"num_local_experts", "positive"});
    expect_config_error("mixtral_tiny", "/num_local_experts", 100000000, {"num_local_experts", "1 TB"});
    expect_config_error("mixtral_tiny", "/eos_token_id", "2", {"eos_token_id", "expected an integer"});
    expect_config_error("qwen2_moe_tiny", "/num_experts_per_tok", 9, {"num_experts_per_tok", "exceeds num_experts"});
    expect_config_error("qwen2_moe_tiny", "/decoder_sparse_step", 0, {"decoder_sparse_step"});
    expect_config_error("qwen2_moe_tiny", "/mlp_only_layers", Json{3}, {"mlp_only_layers", "out of range"});
    expect_config_error("olmoe_tiny_bf16", "/clip_qkv", -1.0, {"clip_qkv", "positive"});
    expect_config_error("olmoe_tiny_bf16", "/norm_topk_prob", "false", {"norm_topk_prob"});
    expect_config_error("olmoe_tiny_bf16", "/architectures", "OlmoeForCausalLM", {"architectures"});
}
