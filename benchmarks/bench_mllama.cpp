// Llama 3.2 Vision (Mllama) end to end with random weights, 1 and 2 threads:
//   Mllama/<size>/vision/<threads>   one image of max_num_tiles tiles through the tiled ViT (items = tiles)
//   Mllama/<size>/prefill/<threads>  the prompt through the decoder, image cross-attention K/V already cached
//   Mllama/<size>/decode/<threads>   one generated token per iteration (the cache grows as it would)
// Sizes:
//   tiny:  the golden case's shapes (56 px tiles, vision 64 x 3+2 layers, text 64 x 6 layers), prompt 15
//   small: vision hidden 1024, 20 local + 4 global layers (24), 448 px tiles, 4 tiles; text hidden 2048,
//          16 layers of which 4 cross-attention, 32/8 heads, MLP 8192, vocab 128256; prompt 128.
//          Text weights are bf16 (2.5 GB, every tensor its own memory so decode reads what a real model
//          reads); the vision tower shares one f32 buffer per weight shape (it is compute-bound).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fusionlm/core/dtype.hpp"
#include "fusionlm/core/tensor.hpp"
#include "fusionlm/core/threads.hpp"
#include "fusionlm/generate.hpp"
#include "fusionlm/io/config.hpp"
#include "fusionlm/io/random_weights.hpp"
#include "fusionlm/models/mllama.hpp"

namespace {

using namespace fusionlm;

struct Setup {
    MllamaConfig config;
    std::int64_t prompt = 0;
    DType text_dtype = DType::F32;
};

Setup tiny_setup() {
    Setup s;
    auto& v = s.config.vision_config;
    v.hidden_size = 64;
    v.intermediate_size = 128;
    v.attention_heads = 4;
    v.num_hidden_layers = 3;
    v.num_global_layers = 2;
    v.image_size = 56;
    v.patch_size = 14;
    v.max_num_tiles = 4;
    v.intermediate_layers_indices = {1, 3};
    v.vision_output_dim = 192;
    auto& t = s.config.text_config;
    t.hidden_size = 64;
    t.intermediate_size = 128;
    t.num_hidden_layers = 6;
    t.num_attention_heads = 4;
    t.num_key_value_heads = 2;
    t.vocab_size = 512;
    t.cross_attention_layers = {1, 4};
    t.rope_scaling = RopeScaling{"llama3", 8.0f, 1.0f, 4.0f, 64};
    s.config.image_token_index = 512;
    s.prompt = 15;
    return s;
}

Setup small_setup() {
    Setup s;
    auto& v = s.config.vision_config;
    v.hidden_size = 1024;
    v.intermediate_size = 4096;
    v.attention_heads = 16;
    v.num_hidden_layers = 20;
    v.num_global_layers = 4;
    v.image_size = 448;
    v.patch_size = 14;
    v.max_num_tiles = 4;
    v.intermediate_layers_indices = {3, 7, 15, 19};
    v.vision_output_dim = 1024 * 5;
    auto& t = s.config.text_config;
    t.hidden_size = 2048;
    t.intermediate_size = 8192;
    t.num_hidden_layers = 16;
    t.num_attention_heads = 32;
    t.num_key_value_heads = 8;
    t.vocab_size = 128256;
    t.cross_attention_layers = {3, 7, 11, 15};
    t.rope_scaling = RopeScaling{"llama3", 8.0f, 1.0f, 4.0f, 8192};
    s.config.image_token_index = 128256;
    s.prompt = 128;
    s.text_dtype = DType::BF16;
    return s;
}

// One model per size, built on first use and kept for every benchmark of that size.
struct Bench {
    Setup setup;
    std::shared_ptr<RandomWeights> weights;
    std::unique_ptr<MllamaModel> model;
    std::vector<float> pixels;
    std::vector<std::int64_t> tile_mask;
    std::vector<std::int64_t> prompt;
    std::vector<std::int64_t> cross_mask;

    explicit Bench(Setup s) : setup(std::move(s)) {
        // The vision tower is compute-bound: one shared f32 buffer per weight shape is enough.
        weights = std::make_shared<RandomWeights>(RandomWeightsOptions{setup.text_dtype, "vision_model."});
        model = std::make_unique<MllamaModel>(bind_mllama(*weights, setup.config, weights));
        const auto& v = setup.config.vision_config;
        const std::int64_t T = v.max_num_tiles;
        pixels.resize(std::size_t(T * v.num_channels * v.image_size * v.image_size));
        std::uint32_t x = 12345;
        for (float& p : pixels) {
            x = x * 1664525u + 1013904223u;
            p = float(x >> 8) * 0x1p-24f * 4.0f - 2.0f;
        }
        tile_mask.assign(std::size_t(T), 1);
        const std::int64_t S = setup.prompt;
        prompt.resize(std::size_t(S));
        for (std::int64_t s = 0; s < S; ++s) prompt[std::size_t(s)] = (s * 7919 + 11) % setup.config.text_config.vocab_size;
        prompt[1] = setup.config.image_token_index;
        cross_mask.assign(std::size_t(S * T), 1);  // every token after the image tag sees every tile
        for (std::int64_t t = 0; t < T; ++t) cross_mask[std::size_t(t)] = 0;
    }

    // A session with the image attached (vision encoded, cross-attention K/V cached), made once: the
    // realistic image costs minutes to encode and is not what prefill / decode measure.
    const MllamaModel::Session& session_with_image() {
        if (!prepared) {
            ThreadPool pool(2);
            prepared = std::make_unique<MllamaModel::Session>(model->new_session(1));
            const std::vector<std::vector<MllamaImage>> images{{MllamaImage{pixels, 6, tile_mask}}};
            model->attach_images(pool, *prepared, images,
                                 CrossAttentionMask{1, setup.prompt, 1, setup.config.vision_config.max_num_tiles,
                                                    cross_mask});
        }
        return *prepared;
    }
    std::unique_ptr<MllamaModel::Session> prepared;

    // Matrix-product FLOPs of `n` new tokens after `past` cached ones, logits for `logit_rows` rows.
    double decoder_flops(std::int64_t n, std::int64_t past, std::int64_t vision_tokens, std::int64_t logit_rows) const {
        const auto& t = setup.config.text_config;
        const double H = double(t.hidden_size), I = double(t.intermediate_size);
        const double q = H, kv = H / double(t.num_attention_heads) * double(t.num_key_value_heads);
        const double mlp = 3 * H * I;
        double f = 0;
        for (std::int64_t l = 0; l < t.num_hidden_layers; ++l) {
            const bool cross = std::find(t.cross_attention_layers.begin(), t.cross_attention_layers.end(), l) !=
                               t.cross_attention_layers.end();
            const double keys = cross ? double(vision_tokens) : double(past) + double(n + 1) / 2;
            const double proj = cross ? 2 * H * q : 2 * H * q + 2 * H * kv;
            f += 2 * double(n) * (proj + mlp) + 4 * double(n) * keys * q;
        }
        return f + 2 * double(logit_rows) * H * double(t.vocab_size);
    }
};

Bench& bench(const std::string& size) {
    static std::map<std::string, std::unique_ptr<Bench>> cache;
    auto& b = cache[size];
    if (!b) b = std::make_unique<Bench>(size == "tiny" ? tiny_setup() : small_setup());
    return *b;
}

void BM_Vision(benchmark::State& state, const std::string& size) {
    Bench& b = bench(size);
    ThreadPool pool(int(state.range(0)));
    for (auto _ : state)
        benchmark::DoNotOptimize(b.model->vision().encode(pool, b.pixels, 6, b.tile_mask).data());
    const std::int64_t tiles = b.setup.config.vision_config.max_num_tiles;
    state.SetItemsProcessed(std::int64_t(state.iterations()) * tiles);
    state.counters["GFLOPS"] =
        benchmark::Counter(b.model->vision().flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Prefill(benchmark::State& state, const std::string& size) {
    Bench& b = bench(size);
    ThreadPool pool(int(state.range(0)));
    const auto& prepared = b.session_with_image();
    const std::int64_t S = b.setup.prompt;
    for (auto _ : state) {
        state.PauseTiming();
        auto s = prepared;
        state.ResumeTiming();
        benchmark::DoNotOptimize(b.model->forward(pool, s, TokenBatch{1, S, b.prompt, {}, {}}, Logits::Last).data());
    }
    const std::int64_t vision_tokens = prepared.fusion.vision_tokens;
    state.SetItemsProcessed(std::int64_t(state.iterations()) * S);
    state.counters["GFLOPS"] = benchmark::Counter(b.decoder_flops(S, 0, vision_tokens, 1) * 1e-9,
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Decode(benchmark::State& state, const std::string& size) {
    Bench& b = bench(size);
    ThreadPool pool(int(state.range(0)));
    auto s = b.session_with_image();
    const std::int64_t S = b.setup.prompt;
    b.model->forward(pool, s, TokenBatch{1, S, b.prompt, {}, {}}, Logits::Last);
    std::vector<std::int64_t> token{7};
    for (auto _ : state) {
        const RowMatrix logits = b.model->forward(pool, s, TokenBatch{1, 1, token, {}, {}}, Logits::Last);
        token[0] = argmax(logits.row(0));
    }
    const std::int64_t past = s.decoder.length() - std::int64_t(state.iterations()) / 2;
    state.SetItemsProcessed(std::int64_t(state.iterations()));
    state.counters["GFLOPS"] = benchmark::Counter(b.decoder_flops(1, past, s.fusion.vision_tokens, 1) * 1e-9,
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK_CAPTURE(BM_Vision, tiny, std::string("tiny"))->Name("Mllama/tiny/vision")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Prefill, tiny, std::string("tiny"))->Name("Mllama/tiny/prefill")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Decode, tiny, std::string("tiny"))->Name("Mllama/tiny/decode")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Vision, small, std::string("small"))->Name("Mllama/small/vision")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_Prefill, small, std::string("small"))->Name("Mllama/small/prefill")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
BENCHMARK_CAPTURE(BM_Decode, small, std::string("small"))->Name("Mllama/small/decode")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

}  // namespace
