// fusionlm-compare: the two ways of feeding images to a decoder, on equal footing, with random weights.
// One CLIP ViT and one Llama decoder (same config, same self-attention weights); only the fusion differs:
//   cross_attention: FusionModel<ClipViT, GatedCrossAttention, Decoder<Mlp>>: one Mllama-style
//                    cross-attention layer (q/k/v/o, q_norm/k_norm, tanh gates, MLP) after every 4
//                    self-attention layers; each image is one (image, tile) entry of the mask and takes
//                    one marker token in the prompt; its K/V are computed once, at attach.
//   early_fusion:    FusionModel<ClipViT, EarlyFusion<MlpProjector>, Decoder<Mlp>>: LLaVA-style, each
//                    image's features (class token dropped) spliced at its image tokens in the prompt.
// Each with Mlp = DenseMlp and MoeMlp (8 experts, top-2, expert intermediate = MLP / 2, so a token's
// active MLP parameters equal the dense MLP's). Swept over images per prompt, image size, text prompt
// length and generated tokens; per configuration: vision encode, fusion attach, prefill and decode
// times (medians over --repeats fresh sessions; decode tokens/s from the median step, which a shared
// machine's preemptions disturb least), analytic prefill and decode FLOPs, and cache bytes. The vision
// encode is the same computation for every strategy, so it runs once per image size and image count.
// A run of G generated tokens is the first G tokens of the run for the largest G. Prints a table (or
// --json) and writes an SVG plot (prefill seconds and decode tokens/s against images per prompt).
//   fusionlm-compare [-t THREADS] [--repeats N] [--json] [--svg FILE] [--tiny]
//                    [--images LIST] [--sizes LIST] [--prompts LIST] [--gen LIST]
// Errors: one line on stderr, exit 2.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <fusionlm/core/error.hpp>
#include <fusionlm/core/threads.hpp>
#include <fusionlm/fusion/cross_attention.hpp>
#include <fusionlm/fusion/early_fusion.hpp>
#include <fusionlm/fusion/mlp_projector.hpp>
#include <fusionlm/fusion_model.hpp>
#include <fusionlm/generate.hpp>
#include <fusionlm/io/config.hpp>
#include <fusionlm/io/random_weights.hpp>
#include <fusionlm/models/llama.hpp>
#include <fusionlm/models/mllama.hpp>
#include <fusionlm/text_model/decoder.hpp>
#include <fusionlm/text_model/mlp.hpp>
#include <fusionlm/text_model/moe.hpp>
#include <fusionlm/vision/clip_vit.hpp>

namespace fs = std::filesystem;
using namespace fusionlm;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

// ---------------------------------------------------------------- arguments

struct Shapes {
    ClipVisionConfig vision;  // image_size is set per sweep point
    std::int64_t hidden = 0, layers = 0, heads = 0, kv_heads = 0, intermediate = 0, vocab = 0;
    std::int64_t experts = 8, top_k = 2;

    std::int64_t head_dim() const { return hidden / heads; }
    std::int64_t kv_dim() const { return kv_heads * head_dim(); }
    std::int64_t expert_intermediate() const { return intermediate / top_k; }
    // Mllama's layout: a cross-attention layer after every 4 self-attention layers (slots 3, 8, 13, ...).
    std::vector<std::int64_t> cross_slots() const {
        std::vector<std::int64_t> s;
        for (std::int64_t k = 0; k < layers / 4; ++k) s.push_back(5 * k + 3);
        return s;
    }
};

// Vision: hidden, layers, heads (MLP 4x hidden, patch 14); text: hidden, layers, heads, KV heads, MLP, vocab.
Shapes make_shapes(std::int64_t vision_hidden, std::int64_t vision_layers, std::int64_t vision_heads,
                   std::int64_t hidden, std::int64_t layers, std::int64_t heads, std::int64_t kv_heads,
                   std::int64_t intermediate, std::int64_t vocab) {
    Shapes s;
    s.vision.hidden_size = vision_hidden;
    s.vision.intermediate_size = 4 * vision_hidden;
    s.vision.num_attention_heads = vision_heads;
    s.vision.num_hidden_layers = vision_layers;
    s.vision.patch_size = 14;
    s.hidden = hidden;
    s.layers = layers;
    s.heads = heads;
    s.kv_heads = kv_heads;
    s.intermediate = intermediate;
    s.vocab = vocab;
    return s;
}

Shapes default_shapes() { return make_shapes(384, 6, 6, 512, 8, 8, 2, 1536, 4096); }

// For tests: the same structure at a size that runs the whole sweep in well under a second.
Shapes tiny_shapes() { return make_shapes(32, 2, 2, 64, 4, 4, 2, 128, 256); }

const char* kUsage =
    "usage: fusionlm-compare [-t THREADS] [--repeats N] [--json] [--svg FILE] [--tiny]\n"
    "                        [--images LIST] [--sizes LIST] [--prompts LIST] [--gen LIST]\n"
    "  LIST: comma-separated positive integers, e.g. --images 1,2,4\n";

struct Args {
    int threads = 0;  // 0: all cores
    int repeats = 1;
    bool json = false, tiny = false, help = false;
    fs::path svg = "fusionlm-compare.svg";
    std::optional<std::vector<std::int64_t>> images, sizes, prompts, gen;
};

std::int64_t parse_count(const std::string& flag, const std::string& text, std::int64_t max) {
    std::int64_t v = 0;
    bool ok = !text.empty() && text.size() <= 9;
    for (char c : text) ok = ok && c >= '0' && c <= '9';
    if (ok) v = std::stoll(text);
    if (!ok || v < 1 || v > max)
        throw InputError(flag + ": '" + text + "' is not a whole number from 1 to " + std::to_string(max));
    return v;
}

std::vector<std::int64_t> parse_list(const std::string& flag, const std::string& text, std::int64_t max) {
    std::vector<std::int64_t> values;
    std::size_t at = 0;
    while (true) {
        const std::size_t comma = text.find(',', at);
        values.push_back(parse_count(flag, text.substr(at, comma - at), max));
        if (comma == std::string::npos) return values;
        at = comma + 1;
    }
}

Args parse_args(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw InputError(flag + ": missing value");
            return argv[++i];
        };
        if (flag == "-t" || flag == "--threads") a.threads = int(parse_count(flag, value(), 1024));
        else if (flag == "--repeats") a.repeats = int(parse_count(flag, value(), 1000));
        else if (flag == "--json") a.json = true;
        else if (flag == "--svg") a.svg = value();
        else if (flag == "--tiny") a.tiny = true;
        else if (flag == "--images") a.images = parse_list(flag, value(), 64);
        else if (flag == "--sizes") a.sizes = parse_list(flag, value(), 1344);
        else if (flag == "--prompts") a.prompts = parse_list(flag, value(), 8192);
        else if (flag == "--gen") a.gen = parse_list(flag, value(), 4096);
        else if (flag == "-h" || flag == "--help") a.help = true;
        else throw InputError("unknown argument '" + flag + "'");
    }
    return a;
}

// ---------------------------------------------------------------- models

template <class Mlp>
using CrossModel = FusionModel<ClipViT, GatedCrossAttention, Decoder<Mlp>>;
template <class Mlp>
using EarlyModel = FusionModel<ClipViT, EarlyFusion<MlpProjector>, Decoder<Mlp>>;

const std::string kText = "language_model.model.";

// Everything but the vision tower and the early-fusion wrapper, bound once: both strategies and both
// MLP kinds use the same self-attention layers, embedding, final norm and lm_head.
struct TextParts {
    DecoderConfig self_config, cross_config;
    std::vector<DecoderLayer<DenseMlp>> dense;
    std::vector<DecoderLayer<MoeMlp>> moe;  // the dense layers' attention and norms, MoE MLPs
    TensorView embed;                        // [vocab + 8, hidden]: the image token (id vocab) lives past the vocabulary
    std::vector<float> norm;
    Linear lm_head;
    Linear cross_projector;
    std::vector<CrossAttentionLayer> cross_layers;
    std::optional<MlpProjector> early_projector;
};

TextParts bind_text(RandomWeights& w, const Shapes& s) {
    TextParts t;
    DecoderConfig c;
    c.hidden_size = s.hidden;
    c.num_layers = s.layers;
    c.num_heads = s.heads;
    c.num_kv_heads = s.kv_heads;
    c.head_dim = s.head_dim();
    c.rope_theta = 500000.0;
    t.self_config = c;
    t.cross_config = c;
    t.cross_config.num_layers = s.layers + std::int64_t(s.cross_slots().size());
    const AttentionShape shape = c.attention();
    const std::int64_t H = s.hidden, I = s.intermediate, V = s.vision.hidden_size;

    for (std::int64_t i = 0; i < s.layers; ++i) {
        const std::string p = kText + "layers." + std::to_string(i) + ".";
        t.dense.push_back(bind_dense_layer(w, p, shape, I, Activation::Silu));
        std::vector<DenseMlp> experts;
        for (std::int64_t e = 0; e < s.experts; ++e)
            experts.push_back(bind_dense_mlp(w, p + "mlp.experts." + std::to_string(e) + ".", H,
                                             s.expert_intermediate(), Activation::Silu));
        const DecoderLayer<DenseMlp>& d = t.dense.back();
        t.moe.push_back(DecoderLayer<MoeMlp>{d.input_layernorm, d.self_attn, d.post_attention_layernorm,
                                             MoeMlp(bind_linear(w, p + "mlp.gate", s.experts, H), std::move(experts),
                                                    int(s.top_k), /*norm_topk_prob=*/true)});
    }
    for (std::int64_t slot : s.cross_slots()) {
        CrossAttentionLayer layer = bind_cross_attention_layer(w, kText + "cross_layers." + std::to_string(slot) + ".",
                                                               shape, I, Activation::Silu);
        // Open gates: a closed gate (0, as Mllama initialises it) would still cost the same.
        layer.attn_gate = layer.mlp_gate = 1.0f;
        t.cross_layers.push_back(std::move(layer));
    }
    t.embed = w.require(kText + "embed_tokens.weight", {s.vocab + 8, H});
    t.norm = w.require_f32(kText + "norm.weight", {H});
    t.lm_head = bind_linear(w, "language_model.lm_head", s.vocab, H);
    t.cross_projector = bind_linear(w, "cross.multi_modal_projector", H, V, /*bias=*/true);
    t.early_projector.emplace(bind_linear(w, "early.multi_modal_projector.linear_1", H, V, true), Activation::Gelu,
                              bind_linear(w, "early.multi_modal_projector.linear_2", H, H, true));
    return t;
}

template <class Mlp>
const std::vector<DecoderLayer<Mlp>>& self_layers(const TextParts& t) {
    if constexpr (std::is_same_v<Mlp, MoeMlp>) return t.moe;
    else return t.dense;
}

template <class Mlp>
CrossModel<Mlp> make_cross(const TextParts& t, const Shapes& s, const ClipViT& vit) {
    const std::vector<std::int64_t> slots = s.cross_slots();
    std::vector<std::optional<DecoderLayer<Mlp>>> layers(std::size_t(t.cross_config.num_layers));
    std::size_t next = 0;
    for (std::size_t i = 0; i < layers.size(); ++i)
        if (std::find(slots.begin(), slots.end(), std::int64_t(i)) == slots.end()) layers[i] = self_layers<Mlp>(t)[next++];
    GatedCrossAttention fusion(t.cross_config.attention(), t.cross_config.rms_norm_eps, t.cross_projector, slots,
                               t.cross_layers);
    return CrossModel<Mlp>(vit, std::move(fusion),
                           Decoder<Mlp>(t.cross_config, t.embed, std::move(layers), t.norm, t.lm_head));
}

template <class Mlp>
EarlyModel<Mlp> make_early(const TextParts& t, const Shapes& s, const ClipViT& vit) {
    std::vector<std::optional<DecoderLayer<Mlp>>> layers;
    for (const auto& l : self_layers<Mlp>(t)) layers.emplace_back(l);
    EarlyFusion<MlpProjector> fusion(*t.early_projector, /*image_token_id=*/s.vocab, s.hidden, vit.tokens(),
                                     /*drop_class_token=*/true);
    return EarlyModel<Mlp>(vit, std::move(fusion),
                           Decoder<Mlp>(t.self_config, t.embed, std::move(layers), t.norm, t.lm_head));
}

// ---------------------------------------------------------------- measuring

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Cached self-attention keys and values (rows in use, f32).
std::size_t kv_bytes(const DecoderState& st) {
    std::size_t n = 0;
    for (const auto& layer : st.kv)
        for (const auto& c : layer) n += std::size_t(c.size() * c.kv_dim()) * 2 * sizeof(float);
    return n;
}

std::size_t matrix_bytes(const RowMatrix& m) { return std::size_t(m.size()) * sizeof(float); }

std::size_t cross_kv_bytes(const GatedCrossAttention::State& st) {
    std::size_t n = 0;
    for (std::size_t j = 0; j < st.keys.size(); ++j)
        for (std::size_t b = 0; b < st.keys[j].size(); ++b) n += matrix_bytes(st.keys[j][b]) + matrix_bytes(st.values[j][b]);
    return n;
}
std::size_t cross_kv_bytes(const EarlyFusion<MlpProjector>::State&) { return 0; }

// Everything the fusion state keeps for the session.
std::size_t fusion_state_bytes(const GatedCrossAttention::State& st) {
    std::size_t n = cross_kv_bytes(st) + st.tile_mask.size();
    for (const auto& x : st.cross_states) n += matrix_bytes(x);
    return n;
}
std::size_t fusion_state_bytes(const EarlyFusion<MlpProjector>::State& st) {
    std::size_t n = 0;
    for (const auto& x : st.image_embeds) n += matrix_bytes(x);
    return n;
}

// Weight elements one token multiplies with in a self-attention layer (its MLP's active part) and in a
// cross-attention layer (q, o and its dense MLP; k and v ran on the image at attach).
template <class Mlp>
double self_layer_params(const Shapes& s) {
    const double H = double(s.hidden), q = double(s.heads * s.head_dim()), kv = double(s.kv_dim());
    const double mlp = std::is_same_v<Mlp, MoeMlp>
                           ? H * double(s.experts) + double(s.top_k) * 3 * H * double(s.expert_intermediate())
                           : 3 * H * double(s.intermediate);
    return 2 * H * q + 2 * H * kv + mlp;
}
double cross_layer_params(const Shapes& s) {
    return 2 * double(s.hidden) * double(s.heads * s.head_dim()) + 3 * double(s.hidden) * double(s.intermediate);
}

// Matrix-product FLOPs (2 per multiply-add) of the prompt: n new tokens, no cache before them, the
// logits of the last token only. Attention costs 4 * q_dim per (token, key): QK^T and AV.
template <class Mlp>
double prefill_flops(const Shapes& s, std::int64_t n, std::int64_t cross_layers, std::int64_t vision_tokens) {
    const double N = double(n), q = double(s.heads * s.head_dim());
    const double self_layer = 2 * N * self_layer_params<Mlp>(s) + 4 * q * N * (N + 1) / 2;  // causal
    const double cross_layer = 2 * N * cross_layer_params(s) + 4 * q * N * double(vision_tokens);
    return double(s.layers) * self_layer + double(cross_layers) * cross_layer + 2 * double(s.hidden * s.vocab);
}

// One decode token after `past` cached ones: FLOPs and weight bytes read (bf16). The cache bytes read
// on top are the cache_bytes of the point.
template <class Mlp>
std::pair<double, double> decode_cost(const Shapes& s, double past, std::int64_t cross_layers,
                                      std::int64_t vision_tokens) {
    const double q = double(s.heads * s.head_dim()), C = double(cross_layers), L = double(s.layers);
    const double head = double(s.hidden * s.vocab);
    const double flops = L * (2 * self_layer_params<Mlp>(s) + 4 * q * (past + 1)) +
                         C * (2 * cross_layer_params(s) + 4 * q * double(vision_tokens)) + 2 * head;
    const double params = L * self_layer_params<Mlp>(s) + C * cross_layer_params(s) + head;
    return {flops, 2 * params};
}

struct Point {
    std::string strategy, mlp;
    std::int64_t image_size = 0, images = 0, prompt = 0, generated = 0;
    std::int64_t sequence = 0, vision_tokens_per_image = 0, image_tokens_per_image = 0;
    double vision_s = 0, vision_flops = 0, attach_s = 0, prefill_s = 0, prefill_flops = 0, decode_s = 0;
    double decode_step_s = 0;  // median time of one decode step (robust to preemption on a shared machine)
    double decode_flops = 0, decode_weight_bytes = 0;  // analytic, per decode token
    std::size_t kv_bytes = 0, cross_kv_bytes = 0, fusion_state_bytes = 0;

    double prefill_gflops() const { return prefill_flops / prefill_s * 1e-9; }
    std::optional<double> decode_tokens_per_s() const {
        if (generated <= 1) return std::nullopt;
        return 1.0 / decode_step_s;
    }
    double total_s() const { return vision_s + attach_s + prefill_s + decode_s; }
};

// One sweep point for one model: image features already encoded (vision time measured by the caller).
struct Workload {
    std::int64_t image_size = 0, images = 0, prompt = 0;
    const std::vector<std::int64_t>* gens = nullptr;
    const RowMatrix* features = nullptr;  // [images * vision tokens, vision hidden]
    double vision_s = 0, vision_flops = 0;
};

// The prompt as each strategy lays it out, `prompt` text tokens in both: BOS, the images, then text.
// Early fusion: features_per_image image tokens per image; cross-attention: one marker per image, and a
// mask where each token sees the images whose marker it follows (as MllamaProcessor builds it).
struct Prompt {
    std::vector<std::int64_t> ids;
    std::vector<std::int64_t> cross_mask;  // [seq, images]
};

Prompt make_prompt(const Shapes& s, std::int64_t text, std::int64_t images, std::int64_t tokens_per_image, bool cross) {
    Prompt p;
    p.ids.push_back(1);
    p.ids.insert(p.ids.end(), std::size_t(images * tokens_per_image), s.vocab);
    for (std::int64_t i = 1; i < text; ++i) p.ids.push_back((i * 7919 + 11) % s.vocab);
    if (cross) {
        const std::int64_t seq = std::int64_t(p.ids.size());
        p.cross_mask.assign(std::size_t(seq * images), 0);
        for (std::int64_t t = 0; t < seq; ++t)
            for (std::int64_t i = 0; i < images; ++i) p.cross_mask[std::size_t(t * images + i)] = t >= 1 + i ? 1 : 0;
    }
    return p;
}

// Runs attach, prefill and decode `repeats` times on fresh sessions; one Point per generated-token count,
// each measurement the median over the repeats.
template <class Model, class MakePlacement>
std::vector<Point> run_model(ThreadPool& pool, const Model& model, const Workload& w, int repeats,
                             const std::string& strategy, const std::string& mlp, const Prompt& prompt,
                             std::int64_t image_tokens_per_image, double flops, MakePlacement placement) {
    const std::vector<std::int64_t>& gens = *w.gens;
    const std::int64_t seq = std::int64_t(prompt.ids.size()), steps = gens.back() - 1;
    const TokenBatch tokens{1, seq, prompt.ids, {}, {}};
    std::vector<double> attach, prefill;
    std::vector<std::vector<double>> decode(gens.size()), steps_s(gens.size());
    std::vector<double> step_times;
    std::vector<Point> points(gens.size());
    for (int r = 0; r < repeats; ++r) {
        auto session = model.new_session(1);
        const auto t_attach = Clock::now();
        model.fusion().attach(pool, session.fusion, std::span<const RowMatrix>(w.features, 1), placement(tokens));
        attach.push_back(seconds_since(t_attach));

        const auto t_prefill = Clock::now();
        RowMatrix logits = model.forward(pool, session, tokens, Logits::Last);
        prefill.push_back(seconds_since(t_prefill));

        std::vector<std::int64_t> next{argmax(logits.row(0))};
        double decoding = 0;
        for (std::int64_t step = 0; step <= steps; ++step) {
            for (std::size_t g = 0; g < gens.size(); ++g) {
                if (gens[g] - 1 != step) continue;
                decode[g].push_back(decoding);
                steps_s[g].insert(steps_s[g].end(), step_times.begin(), step_times.end());
                points[g].kv_bytes = kv_bytes(session.decoder);
                points[g].cross_kv_bytes = cross_kv_bytes(session.fusion);
                points[g].fusion_state_bytes = fusion_state_bytes(session.fusion);
            }
            if (step == steps) break;
            const auto t_step = Clock::now();
            logits = model.forward(pool, session, TokenBatch{1, 1, next, {}, {}}, Logits::Last);
            step_times.push_back(seconds_since(t_step));
            decoding += step_times.back();
            next[0] = argmax(logits.row(0));
        }
        if (!logits.allFinite())
            throw ShapeError(strategy + "/" + mlp + ": non-finite logits (random weights out of range)");
    }
    for (std::size_t g = 0; g < gens.size(); ++g) {
        Point& p = points[g];
        p.strategy = strategy;
        p.mlp = mlp;
        p.image_size = w.image_size;
        p.images = w.images;
        p.prompt = w.prompt;
        p.generated = gens[g];
        p.sequence = seq;
        p.vision_tokens_per_image = model.vision().tokens();
        p.image_tokens_per_image = image_tokens_per_image;
        p.vision_s = w.vision_s;
        p.vision_flops = w.vision_flops;
        p.attach_s = median(attach);
        p.prefill_s = median(prefill);
        p.prefill_flops = flops;
        p.decode_s = median(decode[g]);
        p.decode_step_s = steps_s[g].empty() ? 0.0 : median(steps_s[g]);
    }
    return points;
}

// The analytic decode cost per token, in the middle of each point's decode steps.
template <class Mlp>
void set_decode_cost(std::vector<Point>& points, const Shapes& s, std::int64_t cross_layers, std::int64_t vision_tokens) {
    for (Point& p : points) {
        if (p.generated <= 1) continue;
        const auto [flops, bytes] =
            decode_cost<Mlp>(s, double(p.sequence) + double(p.generated - 2) / 2, cross_layers, vision_tokens);
        p.decode_flops = flops;
        p.decode_weight_bytes = bytes;
    }
}

template <class Mlp>
std::vector<Point> run_cross(ThreadPool& pool, const CrossModel<Mlp>& model, const Shapes& s, const Workload& w,
                             int repeats, const std::string& mlp) {
    const Prompt prompt = make_prompt(s, w.prompt, w.images, 1, /*cross=*/true);
    const std::int64_t seq = std::int64_t(prompt.ids.size());
    const std::int64_t vision_tokens = w.images * model.vision().tokens();
    const double flops =
        prefill_flops<Mlp>(s, seq, std::int64_t(model.fusion().layer_indices().size()), vision_tokens);
    std::vector<Point> points =
        run_model(pool, model, w, repeats, "cross_attention", mlp, prompt, 1, flops, [&](const TokenBatch&) {
            return CrossAttentionMask{1, seq, w.images, 1, prompt.cross_mask};
        });
    set_decode_cost<Mlp>(points, s, std::int64_t(model.fusion().layer_indices().size()), vision_tokens);
    return points;
}

template <class Mlp>
std::vector<Point> run_early(ThreadPool& pool, const EarlyModel<Mlp>& model, const Shapes& s, const Workload& w,
                             int repeats, const std::string& mlp) {
    const std::int64_t per_image = model.fusion().features_per_image();
    const Prompt prompt = make_prompt(s, w.prompt, w.images, per_image, /*cross=*/false);
    // The projector runs at attach; prefill is the decoder alone.
    const double flops = prefill_flops<Mlp>(s, std::int64_t(prompt.ids.size()), 0, 0);
    std::vector<Point> points = run_model(pool, model, w, repeats, "early_fusion", mlp, prompt, per_image, flops,
                                          [](const TokenBatch& t) { return t; });
    set_decode_cost<Mlp>(points, s, 0, 0);
    return points;
}

// Distinct deterministic pixels per image, roughly the range of normalised CLIP inputs.
std::vector<float> random_pixels(std::size_t n, std::uint32_t seed) {
    std::vector<float> v(n);
    std::uint32_t x = seed * 2654435761u + 12345u;
    for (float& p : v) {
        x = x * 1664525u + 1013904223u;
        p = float(x >> 8) * 0x1p-24f * 4.0f - 2.0f;
    }
    return v;
}

// ---------------------------------------------------------------- output

json to_json(const Point& p) {
    json j{{"strategy", p.strategy},
           {"mlp", p.mlp},
           {"image_size", p.image_size},
           {"images", p.images},
           {"prompt_tokens", p.prompt},
           {"generated", p.generated},
           {"sequence_tokens", p.sequence},
           {"vision_tokens_per_image", p.vision_tokens_per_image},
           {"image_tokens_per_image", p.image_tokens_per_image},
           {"vision_s", p.vision_s},
           {"vision_gflops_per_s", p.vision_flops / p.vision_s * 1e-9},
           {"attach_s", p.attach_s},
           {"prefill_s", p.prefill_s},
           {"prefill_flops", p.prefill_flops},
           {"prefill_gflops_per_s", p.prefill_gflops()},
           {"decode_s", p.decode_s},
           {"decode_step_median_s", p.decode_step_s},
           {"decode_flops_per_token", p.decode_flops},
           {"decode_weight_bytes_per_token", p.decode_weight_bytes},
           {"total_s", p.total_s()},
           {"kv_cache_bytes", p.kv_bytes},
           {"cross_kv_bytes", p.cross_kv_bytes},
           {"cache_bytes", p.kv_bytes + p.cross_kv_bytes},
           {"fusion_state_bytes", p.fusion_state_bytes}};
    const auto tps = p.decode_tokens_per_s();
    j["decode_tokens_per_s"] = tps ? json(*tps) : json(nullptr);
    return j;
}

std::string label(const std::string& strategy, const std::string& mlp) {
    return (strategy == "cross_attention" ? "cross-attention" : "early fusion") + std::string(" (") +
           (mlp == "moe" ? "MoE" : "dense") + ")";
}

// One row per run: prefill-side numbers, then decode speed and cache at the largest generated count.
void print_table(const std::vector<Point>& points, std::int64_t gen_max, int threads) {
    std::printf("fusionlm-compare: %d thread(s); medians; decode = 1 / median step time, cache after %lld generated "
                "tokens (self-attention KV + cross-attention K/V)\n",
                threads, static_cast<long long>(gen_max));
    std::printf("%-16s %-5s %4s %4s %5s %6s %9s %9s %9s %8s %10s %10s\n", "strategy", "mlp", "px", "imgs", "text", "seq",
                "vision_s", "attach_s", "prefill_s", "GFLOP/s", "decode t/s", "cache_KiB");
    for (const Point& p : points) {
        if (p.generated != gen_max) continue;
        const auto tps = p.decode_tokens_per_s();
        char decode[32];
        if (tps) std::snprintf(decode, sizeof decode, "%.1f", *tps);
        else std::snprintf(decode, sizeof decode, "-");
        std::printf("%-16s %-5s %4lld %4lld %5lld %6lld %9.4f %9.4f %9.4f %8.1f %10s %10.1f\n", p.strategy.c_str(),
                    p.mlp.c_str(), static_cast<long long>(p.image_size), static_cast<long long>(p.images),
                    static_cast<long long>(p.prompt), static_cast<long long>(p.sequence), p.vision_s, p.attach_s,
                    p.prefill_s, p.prefill_gflops(), decode, double(p.kv_bytes + p.cross_kv_bytes) / 1024.0);
    }
}

std::string fmt(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

// A step of 1, 2 or 5 times a power of ten giving about five ticks from 0 to at least `top`.
double nice_step(double top) {
    if (!(top > 0)) return 1;
    const double raw = top / 5, mag = std::pow(10.0, std::floor(std::log10(raw))), norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
}

struct Series {
    std::string strategy, mlp, name, color, dash, marker;
    std::vector<std::pair<double, double>> xy;
};

// One panel: axes, ticks, grid, a polyline with markers per series.
void svg_panel(std::ostream& o, double x0, double y0, double w, double h, const std::string& title,
               const std::string& ylabel, const std::vector<std::int64_t>& xs, const std::vector<Series>& series) {
    double ymax = 0;
    for (const auto& s : series)
        for (const auto& [x, y] : s.xy) ymax = std::max(ymax, y);
    const double step = nice_step(ymax), ytop = ymax > 0 ? std::ceil(ymax / step) * step : 1;
    const double xmin = double(xs.front()), xmax = double(xs.back());
    const auto px = [&](double x) { return xmax > xmin ? x0 + 30 + (x - xmin) / (xmax - xmin) * (w - 60) : x0 + w / 2; };
    const auto py = [&](double y) { return y0 + h - y / ytop * h; };

    o << "<text x=\"" << x0 + w / 2 << "\" y=\"" << y0 - 12 << "\" text-anchor=\"middle\" font-size=\"14\">" << title
      << "</text>\n";
    for (double y = 0; y <= ytop + step / 2; y += step) {
        o << "<line x1=\"" << x0 << "\" y1=\"" << py(y) << "\" x2=\"" << x0 + w << "\" y2=\"" << py(y)
          << "\" stroke=\"#ddd\"/>\n";
        o << "<text x=\"" << x0 - 6 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\" font-size=\"11\">" << fmt(y)
          << "</text>\n";
    }
    for (std::int64_t x : xs) {
        o << "<line x1=\"" << px(double(x)) << "\" y1=\"" << y0 + h << "\" x2=\"" << px(double(x)) << "\" y2=\""
          << y0 + h + 5 << "\" stroke=\"#000\"/>\n";
        o << "<text x=\"" << px(double(x)) << "\" y=\"" << y0 + h + 18 << "\" text-anchor=\"middle\" font-size=\"11\">"
          << x << "</text>\n";
    }
    o << "<line x1=\"" << x0 << "\" y1=\"" << y0 + h << "\" x2=\"" << x0 + w << "\" y2=\"" << y0 + h
      << "\" stroke=\"#000\"/>\n";
    o << "<line x1=\"" << x0 << "\" y1=\"" << y0 << "\" x2=\"" << x0 << "\" y2=\"" << y0 + h << "\" stroke=\"#000\"/>\n";
    o << "<text x=\"" << x0 + w / 2 << "\" y=\"" << y0 + h + 36 << "\" text-anchor=\"middle\" font-size=\"12\">"
      << "images per prompt</text>\n";
    o << "<text transform=\"translate(" << x0 - 46 << "," << y0 + h / 2 << ") rotate(-90)\" text-anchor=\"middle\" "
      << "font-size=\"12\">" << ylabel << "</text>\n";
    for (const auto& s : series) {
        if (s.xy.empty()) continue;
        o << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"2\"";
        if (!s.dash.empty()) o << " stroke-dasharray=\"" << s.dash << "\"";
        o << " points=\"";
        for (const auto& [x, y] : s.xy) o << px(x) << "," << py(y) << " ";
        o << "\"/>\n";
        for (const auto& [x, y] : s.xy) {
            if (s.marker == "circle")
                o << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"4\" fill=\"" << s.color << "\"/>\n";
            else
                o << "<rect x=\"" << px(x) - 4 << "\" y=\"" << py(y) - 4 << "\" width=\"8\" height=\"8\" fill=\""
                  << s.color << "\"/>\n";
        }
    }
}

// Prefill seconds and decode tokens/s against images per prompt, at one prompt length and image size.
void write_svg(const fs::path& file, const std::vector<Point>& points, std::int64_t image_size, std::int64_t prompt,
               std::int64_t gen_max, int threads) {
    std::vector<std::int64_t> xs;
    for (const Point& p : points)
        if (std::find(xs.begin(), xs.end(), p.images) == xs.end()) xs.push_back(p.images);
    std::sort(xs.begin(), xs.end());
    std::vector<Series> prefill, decode;
    for (const char* strategy : {"cross_attention", "early_fusion"})
        for (const char* mlp : {"dense", "moe"}) {
            Series s{strategy, mlp, label(strategy, mlp), std::string(strategy) == "cross_attention" ? "#1f77b4" : "#d62728",
                     std::string(mlp) == "moe" ? "6,4" : "", std::string(mlp) == "moe" ? "square" : "circle", {}};
            Series d = s;
            for (const Point& p : points) {
                if (p.strategy != strategy || p.mlp != mlp || p.image_size != image_size || p.prompt != prompt ||
                    p.generated != gen_max)
                    continue;
                s.xy.emplace_back(double(p.images), p.prefill_s);
                if (const auto tps = p.decode_tokens_per_s()) d.xy.emplace_back(double(p.images), *tps);
            }
            prefill.push_back(std::move(s));
            decode.push_back(std::move(d));
        }

    std::ostringstream o;
    const double W = 960, H = 470;
    o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
      << " " << H << "\" font-family=\"sans-serif\">\n";
    o << "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
    o << "<text x=\"" << W / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">fusionlm-compare: "
      << "cross-attention vs early fusion, " << image_size << " px images, " << prompt << " text tokens, " << threads
      << " thread(s)</text>\n";
    svg_panel(o, 90, 70, 340, 280, "prefill (s, lower is better)", "seconds", xs, prefill);
    svg_panel(o, 560, 70, 340, 280,
              "decode, median step of " + std::to_string(gen_max - 1) + " (tokens/s, higher is better)", "tokens / s", xs,
              decode);
    // Legend below both panels.
    double lx = 90;
    const double ly = 440;
    for (const auto& s : prefill) {
        o << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 30 << "\" y2=\"" << ly << "\" stroke=\""
          << s.color << "\" stroke-width=\"2\"";
        if (!s.dash.empty()) o << " stroke-dasharray=\"" << s.dash << "\"";
        o << "/>\n";
        if (s.marker == "circle")
            o << "<circle cx=\"" << lx + 15 << "\" cy=\"" << ly << "\" r=\"4\" fill=\"" << s.color << "\"/>\n";
        else
            o << "<rect x=\"" << lx + 11 << "\" y=\"" << ly - 4 << "\" width=\"8\" height=\"8\" fill=\"" << s.color
              << "\"/>\n";
        o << "<text x=\"" << lx + 36 << "\" y=\"" << ly + 4 << "\" font-size=\"12\">" << s.name << "</text>\n";
        lx += 205;
    }
    o << "</svg>\n";

    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << o.str();
    out.close();
    if (!out) throw InputError("--svg: cannot write '" + file.string() + "'");
}

// ---------------------------------------------------------------- the sweep

int run(const Args& args) {
    if (args.help) {
        std::fputs(kUsage, stdout);
        return 0;
    }
    const Shapes shapes = args.tiny ? tiny_shapes() : default_shapes();
    const std::vector<std::int64_t> images = args.images.value_or(std::vector<std::int64_t>{1, 2, 4});
    const std::vector<std::int64_t> sizes =
        args.sizes.value_or(args.tiny ? std::vector<std::int64_t>{28, 56} : std::vector<std::int64_t>{112, 224});
    const std::vector<std::int64_t> prompts =
        args.prompts.value_or(args.tiny ? std::vector<std::int64_t>{8, 16} : std::vector<std::int64_t>{32, 256});
    const std::vector<std::int64_t> gens =
        args.gen.value_or(args.tiny ? std::vector<std::int64_t>{1, 4} : std::vector<std::int64_t>{1, 32});
    for (std::int64_t px : sizes)
        if (px < shapes.vision.patch_size || px % shapes.vision.patch_size != 0)
            throw InputError("--sizes: " + std::to_string(px) + " px is not a positive multiple of the patch size " +
                             std::to_string(shapes.vision.patch_size));

    ThreadPool pool(args.threads);
    RandomWeightsOptions options;
    options.dtype = DType::BF16;
    options.shared_prefix = "vision_tower.";  // the tower is compute-bound; one buffer per shape
    RandomWeights weights(options);
    const TextParts text = bind_text(weights, shapes);

    std::vector<Point> points;
    for (std::int64_t px : sizes) {
        ClipVisionConfig vc = shapes.vision;
        vc.image_size = px;
        const ClipViT vit = ClipViT::bind(weights, vc, "vision_tower.vision_model.", -1);
        const auto cross_dense = make_cross<DenseMlp>(text, shapes, vit);
        const auto cross_moe = make_cross<MoeMlp>(text, shapes, vit);
        const auto early_dense = make_early<DenseMlp>(text, shapes, vit);
        const auto early_moe = make_early<MoeMlp>(text, shapes, vit);

        // Both strategies use the same tower on the same images: encode once per image count.
        std::map<std::int64_t, std::pair<RowMatrix, double>> encoded;
        for (std::int64_t n : images) {
            std::vector<std::vector<float>> pixels;
            for (std::int64_t i = 0; i < n; ++i)
                pixels.push_back(random_pixels(std::size_t(vit.channels() * px * px), std::uint32_t(i + 1)));
            std::vector<double> times;
            RowMatrix features(n * vit.tokens(), vit.hidden_size());
            for (int r = 0; r < args.repeats; ++r) {
                const auto t0 = Clock::now();
                for (std::int64_t i = 0; i < n; ++i)
                    features.middleRows(i * vit.tokens(), vit.tokens()) =
                        encode_image(vit, pool, ClipImage{pixels[std::size_t(i)]}, nullptr);
                times.push_back(seconds_since(t0));
            }
            encoded[n] = {std::move(features), median(times)};
        }

        for (std::int64_t prompt : prompts)
            for (std::int64_t n : images) {
                const Workload w{px, n, prompt, &gens, &encoded[n].first, encoded[n].second,
                                 double(n) * vit.flops(vit.output_layer())};
                const auto add = [&](std::vector<Point> batch) { points.insert(points.end(), batch.begin(), batch.end()); };
                add(run_cross(pool, cross_dense, shapes, w, args.repeats, "dense"));
                add(run_cross(pool, cross_moe, shapes, w, args.repeats, "moe"));
                add(run_early(pool, early_dense, shapes, w, args.repeats, "dense"));
                add(run_early(pool, early_moe, shapes, w, args.repeats, "moe"));
            }
    }

    const std::int64_t gen_max = gens.back();
    write_svg(args.svg, points, sizes.back(), prompts.front(), gen_max, pool.size());
    if (args.json) {
        json configs = json::array();
        for (const Point& p : points) configs.push_back(to_json(p));
        const auto slots = shapes.cross_slots();
        json doc{{"tool", "fusionlm-compare"},
                 {"threads", pool.size()},
                 {"repeats", args.repeats},
                 {"svg", args.svg.string()},
                 {"vision", {{"hidden_size", shapes.vision.hidden_size},
                             {"intermediate_size", shapes.vision.intermediate_size},
                             {"num_attention_heads", shapes.vision.num_attention_heads},
                             {"num_hidden_layers", shapes.vision.num_hidden_layers},
                             {"patch_size", shapes.vision.patch_size}}},
                 {"decoder", {{"hidden_size", shapes.hidden},
                              {"self_attention_layers", shapes.layers},
                              {"num_attention_heads", shapes.heads},
                              {"num_key_value_heads", shapes.kv_heads},
                              {"intermediate_size", shapes.intermediate},
                              {"vocab_size", shapes.vocab},
                              {"weights_dtype", "bf16"},
                              {"cross_attention_slots", slots},
                              {"moe", {{"experts", shapes.experts},
                                       {"top_k", shapes.top_k},
                                       {"expert_intermediate_size", shapes.expert_intermediate()}}}}},
                 {"configurations", std::move(configs)}};
        std::cout << doc.dump(1) << "\n";
    } else {
        print_table(points, gen_max, pool.size());
        std::printf("plot: %s\n", args.svg.string().c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(parse_args(argc, argv));
    } catch (const fusionlm::Error& e) {
        std::fprintf(stderr, "fusionlm-compare: %s\n", e.what());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fusionlm-compare: %s\n", e.what());
    }
    return 2;
}
