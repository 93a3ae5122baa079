#pragma once
// Typed configs parsed from a Hugging Face config.json. Field names are exactly the JSON keys; each
// struct's member initializers are the defaults of the matching transformers configuration class
// (4.45), used when a key is absent. Everything is validated at parse time, before a model allocates
// anything: wrong JSON types, null where a value is required, non-positive sizes, inconsistent head
// counts or layer indices, and sizes whose weights would exceed 1 TB are ConfigErrors naming the file
// and the dotted field path.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../core/rope_scaling.hpp"
#include "json.hpp"

namespace fusionlm {

// The config.json fields every Llama-style decoder family shares. Each family's struct below sets the
// defaults of its own transformers configuration class.
struct LlamaStyleConfig {
    std::int64_t vocab_size = 0;
    std::int64_t hidden_size = 0;
    std::int64_t intermediate_size = 0;  // per expert in the MoE families that have no other MLP
    std::int64_t num_hidden_layers = 0;
    std::int64_t num_attention_heads = 0;
    std::int64_t num_key_value_heads = 0;  // absent or null: num_attention_heads
    std::int64_t head_dim = 0;             // absent or null: hidden_size / num_attention_heads
    std::string hidden_act = "silu";
    std::int64_t max_position_embeddings = 0;
    double rms_norm_eps = 1e-6;
    double rope_theta = 10000.0;
    std::optional<RopeScaling> rope_scaling = std::nullopt;
    bool tie_word_embeddings = false;
    std::optional<std::int64_t> bos_token_id = std::nullopt;
    std::vector<std::int64_t> eos_token_id = {};  // an int or a list in the JSON
    std::optional<std::int64_t> pad_token_id = std::nullopt;
};

// LlamaConfig; also the text config of LLaVA.
struct LlamaConfig : LlamaStyleConfig {
    std::string model_type = "llama";
    bool attention_bias = false;
    bool mlp_bias = false;

    LlamaConfig()
        : LlamaStyleConfig{.vocab_size = 32000, .hidden_size = 4096, .intermediate_size = 11008,
                           .num_hidden_layers = 32, .num_attention_heads = 32, .max_position_embeddings = 2048,
                           .rms_norm_eps = 1e-6, .bos_token_id = 1, .eos_token_id = {2}} {}
};

struct MllamaTextConfig : LlamaStyleConfig {
    std::vector<std::int64_t> cross_attention_layers = {3, 8, 13, 18, 23, 28, 33, 38};

    // head_dim is not a Mllama key: always hidden_size / num_attention_heads.
    MllamaTextConfig()
        : LlamaStyleConfig{.vocab_size = 128256, .hidden_size = 4096, .intermediate_size = 14336,
                           .num_hidden_layers = 40, .num_attention_heads = 32, .num_key_value_heads = 8,
                           .max_position_embeddings = 131072, .rms_norm_eps = 1e-5, .rope_theta = 500000.0,
                           .bos_token_id = 128000, .eos_token_id = {128001}, .pad_token_id = 128004} {}
};

struct MllamaVisionConfig {
    std::int64_t hidden_size = 1280;
    std::string hidden_act = "gelu";
    std::int64_t num_hidden_layers = 32;
    std::int64_t num_global_layers = 8;
    // Stored as "attention_heads" by transformers; "num_attention_heads" is read as a fallback.
    std::int64_t attention_heads = 16;
    std::int64_t num_channels = 3;
    std::int64_t intermediate_size = 5120;
    std::int64_t vision_output_dim = 7680;
    std::int64_t image_size = 448;
    std::int64_t patch_size = 14;
    double norm_eps = 1e-5;
    std::int64_t max_num_tiles = 4;
    std::vector<std::int64_t> intermediate_layers_indices = {3, 7, 15, 23, 30};
    // (tiles_high, tiles_wide) pairs; aspect_ratio_id = 1 + index.
    std::vector<std::vector<std::int64_t>> supported_aspect_ratios = {{1, 1}, {1, 2}, {1, 3}, {1, 4},
                                                                      {2, 1}, {2, 2}, {3, 1}, {4, 1}};
};

struct MllamaConfig {
    MllamaTextConfig text_config;
    MllamaVisionConfig vision_config;
    std::int64_t image_token_index = 128256;
};

struct ClipVisionConfig {
    std::int64_t hidden_size = 768;
    std::int64_t intermediate_size = 3072;
    std::int64_t projection_dim = 512;
    std::int64_t num_hidden_layers = 12;
    std::int64_t num_attention_heads = 12;
    std::int64_t num_channels = 3;
    std::int64_t image_size = 224;
    std::int64_t patch_size = 32;
    std::string hidden_act = "quick_gelu";
    double layer_norm_eps = 1e-5;
};

struct LlavaConfig {
    // When vision_config is absent transformers uses the llava-1.5 tower (see llava_default_vision()).
    ClipVisionConfig vision_config;
    LlamaConfig text_config;
    std::int64_t image_token_index = 32000;
    std::string projector_hidden_act = "gelu";
    std::int64_t vision_feature_layer = -2;  // index into CLIP hidden_states (L + 1 entries)
    std::string vision_feature_select_strategy = "default";  // "default" drops CLS, "full" keeps it
    std::int64_t image_seq_length = 576;
    bool multimodal_projector_bias = true;
};

struct MixtralConfig : LlamaStyleConfig {
    std::optional<std::int64_t> sliding_window;
    std::int64_t num_local_experts = 8;
    std::int64_t num_experts_per_tok = 2;

    MixtralConfig()
        : LlamaStyleConfig{.vocab_size = 32000, .hidden_size = 4096, .intermediate_size = 14336,
                           .num_hidden_layers = 32, .num_attention_heads = 32, .num_key_value_heads = 8,
                           .max_position_embeddings = 4096 * 32, .rms_norm_eps = 1e-5, .rope_theta = 1e6,
                           .bos_token_id = 1, .eos_token_id = {2}} {}
};

struct Qwen2MoeConfig : LlamaStyleConfig {
    bool use_sliding_window = false;
    std::optional<std::int64_t> sliding_window = 4096;
    std::int64_t max_window_layers = 28;
    std::int64_t decoder_sparse_step = 1;
    std::int64_t moe_intermediate_size = 1408;
    std::int64_t shared_expert_intermediate_size = 5632;
    std::int64_t num_experts_per_tok = 4;
    std::int64_t num_experts = 60;
    bool norm_topk_prob = false;
    std::vector<std::int64_t> mlp_only_layers;

    // intermediate_size sizes the dense layers (mlp_only_layers, decoder_sparse_step).
    Qwen2MoeConfig()
        : LlamaStyleConfig{.vocab_size = 151936, .hidden_size = 2048, .intermediate_size = 5632,
                           .num_hidden_layers = 24, .num_attention_heads = 16, .num_key_value_heads = 16,
                           .max_position_embeddings = 32768} {}

    // transformers: sparse unless listed in mlp_only_layers, and only every decoder_sparse_step-th layer.
    bool is_sparse_layer(std::int64_t layer) const {
        return std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) == mlp_only_layers.end() &&
               num_experts > 0 && (layer + 1) % decoder_sparse_step == 0;
    }
};

struct OlmoeConfig : LlamaStyleConfig {
    bool attention_bias = false;
    std::optional<double> clip_qkv;  // clamp q, k, v to [-clip_qkv, clip_qkv] when set
    std::int64_t num_experts = 64;
    std::int64_t num_experts_per_tok = 8;
    bool norm_topk_prob = false;

    OlmoeConfig()
        : LlamaStyleConfig{.vocab_size = 50304, .hidden_size = 2048, .intermediate_size = 2048,
                           .num_hidden_layers = 16, .num_attention_heads = 16, .max_position_embeddings = 4096,
                           .rms_norm_eps = 1e-5, .eos_token_id = {50279}, .pad_token_id = 1} {}
};

using FamilyConfig =
    std::variant<std::monostate, LlamaConfig, MllamaConfig, LlavaConfig, MixtralConfig, Qwen2MoeConfig, OlmoeConfig>;

// A parsed config.json. An unknown model_type is not an error here: `family` holds std::monostate and
// whoever needs a model reports the family as unsupported.
struct ModelConfig {
    std::filesystem::path path;
    std::string model_type;
    std::vector<std::string> architectures;
    std::string torch_dtype;  // empty when absent
    FamilyConfig family;

    bool supported() const { return !std::holds_alternative<std::monostate>(family); }
};

// The vision tower LlavaConfig builds when config.json has no vision_config (llava-1.5's CLIP ViT-L/14-336).
inline ClipVisionConfig llava_default_vision() {
    ClipVisionConfig c;
    c.intermediate_size = 4096;
    c.hidden_size = 1024;
    c.patch_size = 14;
    c.image_size = 336;
    c.num_hidden_layers = 24;
    c.num_attention_heads = 16;
    c.projection_dim = 768;
    return c;
}

namespace config_detail {

// Sizes are kept in int32 range so products computed downstream in int64 cannot overflow.
inline constexpr std::int64_t kMaxSize = std::numeric_limits<std::int32_t>::max();
inline constexpr double kMaxWeightBytes = 1099511627776.0;  // 1 TB of f32 weights

inline std::int64_t size_field(const JsonFields& f, std::string_view key, std::int64_t def) {
    const std::int64_t v = f.positive(key, def);
    if (v > kMaxSize) f.fail(key, std::to_string(v) + " is absurdly large (limit " + std::to_string(kMaxSize) + ")");
    return v;
}

inline std::int64_t count_field(const JsonFields& f, std::string_view key, std::int64_t def) {
    const std::int64_t v = f.non_negative(key, def);
    if (v > kMaxSize) f.fail(key, std::to_string(v) + " is absurdly large (limit " + std::to_string(kMaxSize) + ")");
    return v;
}

// `elements` f32 values (computed in double, so it cannot overflow) must fit the memory bound.
inline void check_weight_bytes(const JsonFields& f, std::string_view key, const std::string& what, double elements) {
    const double bytes = elements * 4.0;
    if (!(bytes <= kMaxWeightBytes))
        f.fail(key, what + " implies " + std::to_string(bytes / 1e12) + " TB of f32 weights, more than the 1 TB limit");
}

inline std::vector<std::int64_t> layer_list(const JsonFields& f, std::string_view key, const std::vector<std::int64_t>& def,
                                            std::int64_t num_layers, bool allow_duplicates = false) {
    std::vector<std::int64_t> v = f.integer_list(key, def);
    std::set<std::int64_t> seen;
    for (std::int64_t i : v) {
        if (i < 0 || i >= num_layers)
            f.fail(key, "layer " + std::to_string(i) + " is out of range (num_hidden_layers = " +
                            std::to_string(num_layers) + ")");
        if (!seen.insert(i).second && !allow_duplicates) f.fail(key, "layer " + std::to_string(i) + " is listed twice");
    }
    return v;
}

inline std::optional<RopeScaling> read_rope_scaling(const JsonFields& f) {
    const auto rs = f.object("rope_scaling");
    if (!rs) return std::nullopt;
    RopeScaling r;
    r.rope_type = rs->has("rope_type") ? rs->string("rope_type", "") : rs->string("type", "default");
    const bool llama3 = r.rope_type == "llama3";
    if (llama3)
        for (const char* key : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
            if (!rs->has(key)) rs->fail(key, "required by rope_type llama3");
    r.factor = float(rs->positive_number("factor", r.factor));
    if (llama3) {
        r.low_freq_factor = float(rs->positive_number("low_freq_factor", r.low_freq_factor));
        r.high_freq_factor = float(rs->positive_number("high_freq_factor", r.high_freq_factor));
        if (!(r.high_freq_factor > r.low_freq_factor))
            rs->fail("high_freq_factor", "must exceed low_freq_factor (" + json_excerpt(Json(r.low_freq_factor)) + ")");
        r.original_max_position_embeddings =
            size_field(*rs, "original_max_position_embeddings", r.original_max_position_embeddings);
    }
    return r;
}

// The fields every Llama-style decoder config shares; c's current values are the defaults.
inline void read_decoder(const JsonFields& f, LlamaStyleConfig& c) {
    c.vocab_size = size_field(f, "vocab_size", c.vocab_size);
    c.hidden_size = size_field(f, "hidden_size", c.hidden_size);
    c.intermediate_size = size_field(f, "intermediate_size", c.intermediate_size);
    c.num_hidden_layers = size_field(f, "num_hidden_layers", c.num_hidden_layers);
    c.num_attention_heads = size_field(f, "num_attention_heads", c.num_attention_heads);
    // null means "same as num_attention_heads" in every family that has the key.
    if (f.has("num_key_value_heads"))
        c.num_key_value_heads = size_field(f, "num_key_value_heads", 0);
    else if (f.contains("num_key_value_heads") || c.num_key_value_heads == 0)
        c.num_key_value_heads = c.num_attention_heads;
    if (c.num_attention_heads % c.num_key_value_heads != 0)
        f.fail("num_key_value_heads", std::to_string(c.num_key_value_heads) + " does not divide num_attention_heads (" +
                                          std::to_string(c.num_attention_heads) + ")");
    if (f.has("head_dim")) {
        c.head_dim = size_field(f, "head_dim", 0);
    } else {
        if (c.hidden_size % c.num_attention_heads != 0)
            f.fail("num_attention_heads", std::to_string(c.num_attention_heads) + " does not divide hidden_size (" +
                                              std::to_string(c.hidden_size) + ")");
        c.head_dim = c.hidden_size / c.num_attention_heads;
    }
    if (c.head_dim % 2 != 0)
        f.fail(f.has("head_dim") ? "head_dim" : "num_attention_heads",
               "head_dim " + std::to_string(c.head_dim) + " is odd; rotary embeddings need an even head_dim");
    c.hidden_act = f.string("hidden_act", c.hidden_act);
    c.max_position_embeddings = size_field(f, "max_position_embeddings", c.max_position_embeddings);
    c.rms_norm_eps = f.positive_number("rms_norm_eps", c.rms_norm_eps);
    c.rope_theta = f.positive_number("rope_theta", c.rope_theta);
    c.rope_scaling = read_rope_scaling(f);
    c.tie_word_embeddings = f.boolean("tie_word_embeddings", c.tie_word_embeddings);
    if (f.contains("bos_token_id")) c.bos_token_id = f.optional_integer("bos_token_id");
    if (f.contains("pad_token_id")) c.pad_token_id = f.optional_integer("pad_token_id");
    c.eos_token_id = f.token_ids("eos_token_id", c.eos_token_id);
}

// Attention + embedding weights of a decoder, and `mlp_per_layer` MLP weights per layer.
// `mlp_key` names the field that sizes the MLP (intermediate_size, or the expert count for MoE).
inline void check_decoder_bytes(const JsonFields& f, const LlamaStyleConfig& c, std::string_view mlp_key,
                                double mlp_per_layer) {
    const double H = double(c.hidden_size), D = double(c.head_dim);
    const double attention = H * D * double(2 * c.num_attention_heads + 2 * c.num_key_value_heads);
    const double embeddings = 2.0 * double(c.vocab_size) * H;  // embed_tokens + lm_head
    const double layers = double(c.num_hidden_layers) * (attention + mlp_per_layer);
    check_weight_bytes(f, "vocab_size", "vocab_size x hidden_size", embeddings / 2.0);
    check_weight_bytes(f, mlp_key, "the MLP of one layer", mlp_per_layer);
    check_weight_bytes(f, "num_hidden_layers", "num_hidden_layers x (attention + MLP)", layers);
    check_weight_bytes(f, embeddings > layers ? "vocab_size" : "num_hidden_layers", "the whole decoder",
                       layers + embeddings);
}

inline void check_top_k(const JsonFields& f, std::int64_t top_k, std::int64_t experts, std::string_view experts_key) {
    if (top_k > experts)
        f.fail("num_experts_per_tok", std::to_string(top_k) + " exceeds " + std::string(experts_key) + " (" +
                                          std::to_string(experts) + ")");
}

}  // namespace config_detail

inline LlamaConfig parse_llama_config(const JsonFields& f) {
    using namespace config_detail;
    LlamaConfig c;
    c.model_type = f.string("model_type", c.model_type);
    read_decoder(f, c);
    c.attention_bias = f.boolean("attention_bias", c.attention_bias);
    c.mlp_bias = f.boolean("mlp_bias", c.mlp_bias);
    check_decoder_bytes(f, c, "intermediate_size", 3.0 * double(c.hidden_size) * double(c.intermediate_size));
    return c;
}

inline MllamaTextConfig parse_mllama_text_config(const JsonFields& f) {
    using namespace config_detail;
    MllamaTextConfig c;
    read_decoder(f, c);
    c.cross_attention_layers = layer_list(f, "cross_attention_layers", c.cross_attention_layers, c.num_hidden_layers);
    check_decoder_bytes(f, c, "intermediate_size", 3.0 * double(c.hidden_size) * double(c.intermediate_size));
    return c;
}

inline MllamaVisionConfig parse_mllama_vision_config(const JsonFields& f) {
    using namespace config_detail;
    MllamaVisionConfig c;
    c.hidden_size = size_field(f, "hidden_size", c.hidden_size);
    c.hidden_act = f.string("hidden_act", c.hidden_act);
    c.num_hidden_layers = size_field(f, "num_hidden_layers", c.num_hidden_layers);
    c.num_global_layers = count_field(f, "num_global_layers", c.num_global_layers);
    const char* heads_key = f.has("attention_heads") || !f.has("num_attention_heads") ? "attention_heads"
                                                                                      : "num_attention_heads";
    c.attention_heads = size_field(f, heads_key, c.attention_heads);
    if (c.hidden_size % c.attention_heads != 0)
        f.fail(heads_key, std::to_string(c.attention_heads) + " does not divide hidden_size (" +
                              std::to_string(c.hidden_size) + ")");
    c.num_channels = size_field(f, "num_channels", c.num_channels);
    c.intermediate_size = size_field(f, "intermediate_size", c.intermediate_size);
    c.image_size = size_field(f, "image_size", c.image_size);
    c.patch_size = size_field(f, "patch_size", c.patch_size);
    if (c.patch_size > c.image_size)
        f.fail("patch_size", std::to_string(c.patch_size) + " exceeds image_size (" + std::to_string(c.image_size) + ")");
    c.norm_eps = f.positive_number("norm_eps", c.norm_eps);
    c.max_num_tiles = size_field(f, "max_num_tiles", c.max_num_tiles);
    if (f.has("supported_aspect_ratios")) {
        c.supported_aspect_ratios = f.integer_lists("supported_aspect_ratios", {});
    } else if (c.max_num_tiles != 4) {
        f.fail("supported_aspect_ratios", "required when max_num_tiles is not 4 (the default list is for 4 tiles)");
    }
    if (c.supported_aspect_ratios.empty()) f.fail("supported_aspect_ratios", "is empty");
    for (std::size_t i = 0; i < c.supported_aspect_ratios.size(); ++i) {
        const auto& r = c.supported_aspect_ratios[i];
        if (r.size() != 2 || r[0] <= 0 || r[1] <= 0 || r[0] > c.max_num_tiles || r[1] > c.max_num_tiles ||
            r[0] * r[1] > c.max_num_tiles)
            f.fail("supported_aspect_ratios",
                   "entry " + std::to_string(i) + " is not a (tiles_high, tiles_wide) pair of at most max_num_tiles (" +
                       std::to_string(c.max_num_tiles) + ") tiles");
    }
    c.intermediate_layers_indices = layer_list(f, "intermediate_layers_indices", c.intermediate_layers_indices,
                                               c.num_hidden_layers + 1, /*allow_duplicates=*/true);
    const std::set<std::int64_t> distinct(c.intermediate_layers_indices.begin(), c.intermediate_layers_indices.end());
    c.vision_output_dim = size_field(f, "vision_output_dim", c.vision_output_dim);
    const std::int64_t expected_dim = c.hidden_size * std::int64_t(1 + distinct.size());
    if (c.vision_output_dim != expected_dim)
        f.fail("vision_output_dim", std::to_string(c.vision_output_dim) + " disagrees with hidden_size x (1 + " +
                                        std::to_string(distinct.size()) + " intermediate layers) = " +
                                        std::to_string(expected_dim));
    const double H = double(c.hidden_size);
    const double per_layer = 4.0 * H * H + 2.0 * H * double(c.intermediate_size);
    const double patches = double(c.image_size / c.patch_size) * double(c.image_size / c.patch_size) + 1.0;
    check_weight_bytes(f, "num_hidden_layers", "the vision encoder layers",
                       double(c.num_hidden_layers + c.num_global_layers) * per_layer);
    check_weight_bytes(f, "image_size", "the tile position embeddings",
                       double(c.supported_aspect_ratios.size() + 1) * double(c.max_num_tiles) * patches * H);
    check_weight_bytes(f, "patch_size", "the patch embedding",
                       H * double(c.num_channels) * double(c.patch_size) * double(c.patch_size));
    return c;
}

inline ClipVisionConfig parse_clip_vision_config(const JsonFields& f, ClipVisionConfig c = {}) {
    using namespace config_detail;
    c.hidden_size = size_field(f, "hidden_size", c.hidden_size);
    c.intermediate_size = size_field(f, "intermediate_size", c.intermediate_size);
    c.projection_dim = size_field(f, "projection_dim", c.projection_dim);
    c.num_hidden_layers = size_field(f, "num_hidden_layers", c.num_hidden_layers);
    c.num_attention_heads = size_field(f, "num_attention_heads", c.num_attention_heads);
    if (c.hidden_size % c.num_attention_heads != 0)
        f.fail("num_attention_heads", std::to_string(c.num_attention_heads) + " does not divide hidden_size (" +
                                          std::to_string(c.hidden_size) + ")");
    c.num_channels = size_field(f, "num_channels", c.num_channels);
    c.image_size = size_field(f, "image_size", c.image_size);
    c.patch_size = size_field(f, "patch_size", c.patch_size);
    if (c.patch_size > c.image_size)
        f.fail("patch_size", std::to_string(c.patch_size) + " exceeds image_size (" + std::to_string(c.image_size) + ")");
    c.hidden_act = f.string("hidden_act", c.hidden_act);
    c.layer_norm_eps = f.positive_number("layer_norm_eps", c.layer_norm_eps);
    const double H = double(c.hidden_size);
    const double patches = double(c.image_size / c.patch_size) * double(c.image_size / c.patch_size) + 1.0;
    check_weight_bytes(f, "num_hidden_layers", "the vision encoder layers",
                       double(c.num_hidden_layers) * (4.0 * H * H + 2.0 * H * double(c.intermediate_size)));
    check_weight_bytes(f, "image_size", "the position embedding", patches * H);
    check_weight_bytes(f, "patch_size", "the patch embedding",
                       H * double(c.num_channels) * double(c.patch_size) * double(c.patch_size));
    return c;
}

inline MllamaConfig parse_mllama_config(const JsonFields& f) {
    MllamaConfig c;
    if (const auto t = f.object("text_config")) c.text_config = parse_mllama_text_config(*t);
    if (const auto v = f.object("vision_config")) c.vision_config = parse_mllama_vision_config(*v);
    c.image_token_index = f.non_negative("image_token_index", c.image_token_index);
    // The embedding table has vocab_size + 8 rows; the image token lives in the extra rows.
    if (c.image_token_index >= c.text_config.vocab_size + 8)
        f.fail("image_token_index", std::to_string(c.image_token_index) + " is outside the embedding table (" +
                                        std::to_string(c.text_config.vocab_size + 8) + " rows)");
    return c;
}

inline LlavaConfig parse_llava_config(const JsonFields& f) {
    LlavaConfig c;
    const auto v = f.object("vision_config");
    c.vision_config = v ? parse_clip_vision_config(*v) : llava_default_vision();
    if (const auto t = f.object("text_config")) c.text_config = parse_llama_config(*t);
    c.image_token_index = f.non_negative("image_token_index", c.image_token_index);
    if (c.image_token_index >= c.text_config.vocab_size)
        f.fail("image_token_index", std::to_string(c.image_token_index) + " is outside the vocabulary (" +
                                        std::to_string(c.text_config.vocab_size) + ")");
    c.projector_hidden_act = f.string("projector_hidden_act", c.projector_hidden_act);
    c.vision_feature_select_strategy = f.string("vision_feature_select_strategy", c.vision_feature_select_strategy);
    if (c.vision_feature_select_strategy != "default" && c.vision_feature_select_strategy != "full")
        f.fail("vision_feature_select_strategy",
               "'" + c.vision_feature_select_strategy + "' is neither \"default\" nor \"full\"");
    c.vision_feature_layer = f.integer("vision_feature_layer", c.vision_feature_layer);
    const std::int64_t states = c.vision_config.num_hidden_layers + 1;  // CLIP hidden_states
    if (c.vision_feature_layer < -states || c.vision_feature_layer >= states)
        f.fail("vision_feature_layer", std::to_string(c.vision_feature_layer) + " is not an index into the " +
                                           std::to_string(states) + " vision hidden states");
    c.image_seq_length = config_detail::size_field(f, "image_seq_length", c.image_seq_length);
    const std::int64_t grid = c.vision_config.image_size / c.vision_config.patch_size;
    const std::int64_t features = grid * grid + (c.vision_feature_select_strategy == "full" ? 1 : 0);
    if (f.has("image_seq_length") && c.image_seq_length != features)
        f.fail("image_seq_length", std::to_string(c.image_seq_length) + " disagrees with the " +
                                       std::to_string(features) + " features per image the vision tower yields");
    c.multimodal_projector_bias = f.boolean("multimodal_projector_bias", c.multimodal_projector_bias);
    return c;
}

inline MixtralConfig parse_mixtral_config(const JsonFields& f) {
    using namespace config_detail;
    MixtralConfig c;
    read_decoder(f, c);
    if (f.contains("sliding_window")) c.sliding_window = f.optional_integer("sliding_window");
    if (c.sliding_window && *c.sliding_window <= 0) f.fail("sliding_window", "expected a positive integer or null");
    c.num_local_experts = size_field(f, "num_local_experts", c.num_local_experts);
    c.num_experts_per_tok = size_field(f, "num_experts_per_tok", c.num_experts_per_tok);
    check_top_k(f, c.num_experts_per_tok, c.num_local_experts, "num_local_experts");
    const double H = double(c.hidden_size);
    check_decoder_bytes(f, c, "num_local_experts", double(c.num_local_experts) * (3.0 * H * double(c.intermediate_size) + H));
    return c;
}

inline Qwen2MoeConfig parse_qwen2_moe_config(const JsonFields& f) {
    using namespace config_detail;
    Qwen2MoeConfig c;
    read_decoder(f, c);
    c.use_sliding_window = f.boolean("use_sliding_window", c.use_sliding_window);
    if (f.contains("sliding_window")) c.sliding_window = f.optional_integer("sliding_window");
    c.max_window_layers = count_field(f, "max_window_layers", c.max_window_layers);
    c.decoder_sparse_step = size_field(f, "decoder_sparse_step", c.decoder_sparse_step);
    c.moe_intermediate_size = size_field(f, "moe_intermediate_size", c.moe_intermediate_size);
    c.shared_expert_intermediate_size = size_field(f, "shared_expert_intermediate_size", c.shared_expert_intermediate_size);
    c.num_experts = count_field(f, "num_experts", c.num_experts);
    c.num_experts_per_tok = size_field(f, "num_experts_per_tok", c.num_experts_per_tok);
    if (c.num_experts > 0) check_top_k(f, c.num_experts_per_tok, c.num_experts, "num_experts");
    c.norm_topk_prob = f.boolean("norm_topk_prob", c.norm_topk_prob);
    c.mlp_only_layers = layer_list(f, "mlp_only_layers", c.mlp_only_layers, c.num_hidden_layers);
    const double H = double(c.hidden_size);
    const double sparse = double(c.num_experts) * 3.0 * H * double(c.moe_intermediate_size) +
                          3.0 * H * double(c.shared_expert_intermediate_size) + H * double(c.num_experts + 1);
    const double dense = 3.0 * H * double(c.intermediate_size);
    check_decoder_bytes(f, c, sparse > dense ? "num_experts" : "intermediate_size", std::max(sparse, dense));
    return c;
}

inline OlmoeConfig parse_olmoe_config(const JsonFields& f) {
    using namespace config_detail;
    OlmoeConfig c;
    read_decoder(f, c);
    c.attention_bias = f.boolean("attention_bias", c.attention_bias);
    if (f.has("clip_qkv")) c.clip_qkv = f.positive_number("clip_qkv", 0.0);
    c.num_experts = size_field(f, "num_experts", c.num_experts);
    c.num_experts_per_tok = size_field(f, "num_experts_per_tok", c.num_experts_per_tok);
    check_top_k(f, c.num_experts_per_tok, c.num_experts, "num_experts");
    c.norm_topk_prob = f.boolean("norm_topk_prob", c.norm_topk_prob);
    const double H = double(c.hidden_size);
    check_decoder_bytes(f, c, "num_experts", double(c.num_experts) * (3.0 * H * double(c.intermediate_size) + H));
    return c;
}

// Parses a whole config.json document; `file` names it in errors.
inline ModelConfig parse_config(const Json& j, const std::string& file) {
    const JsonFields f(j, file);
    ModelConfig m;
    m.path = file;
    if (!f.has("model_type")) f.fail("model_type", "missing");
    m.model_type = f.string("model_type", "");
    if (f.has("architectures")) {
        const Json& a = j.at("architectures");
        if (!a.is_array()) f.fail("architectures", "expected a list of strings, got " + json_type_name(a));
        for (const Json& s : a) {
            if (!s.is_string()) f.fail("architectures", "expected a list of strings, got an entry " + json_excerpt(s));
            m.architectures.push_back(s.get<std::string>());
        }
    }
    if (f.has("torch_dtype")) m.torch_dtype = f.string("torch_dtype", "");
    const std::string& t = m.model_type;
    if (t == "llama") m.family = parse_llama_config(f);
    else if (t == "mllama") m.family = parse_mllama_config(f);
    else if (t == "llava") m.family = parse_llava_config(f);
    else if (t == "mixtral") m.family = parse_mixtral_config(f);
    else if (t == "qwen2_moe") m.family = parse_qwen2_moe_config(f);
    else if (t == "olmoe") m.family = parse_olmoe_config(f);
    return m;
}

// Loads `path` (a config.json, or a directory holding one). A file that is not JSON is a FormatError;
// a JSON document with bad fields is a ConfigError.
inline ModelConfig load_config(const std::filesystem::path& path) {
    std::error_code ec;
    const auto file = std::filesystem::is_directory(path, ec) ? path / "config.json" : path;
    const Json j = read_json_file(file, 16u << 20);
    return parse_config(j, file.string());
}

// The config of one family from a checkpoint folder's config.json, or UnsupportedError naming the
// model_type the folder has. family: the model_type the caller expects, for the message.
template <class FamilyConfig>
FamilyConfig load_family_config(const std::filesystem::path& dir, std::string_view family) {
    const ModelConfig config = load_config(dir / "config.json");
    const auto* c = std::get_if<FamilyConfig>(&config.family);
    if (!c)
        throw UnsupportedError((dir / "config.json").string() + ": model_type '" + config.model_type + "' is not " +
                               std::string(family));
    return *c;
}

}  // namespace fusionlm
