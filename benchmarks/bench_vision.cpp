// Vision encoders at realistic sizes with random weights, per image / per tile, 1 and 2 threads:
//   ClipViT/L14_336/<threads>: CLIP ViT-L/14 at 336 px (577 tokens, 24 layers, hidden 1024, 16 heads,
//                              MLP 4096, quick_gelu), all 24 layers.
//   TiledViT/448_tile/<threads>: one Mllama tile of 448 px, patch 14 (1025 tokens padded to 1032),
//                              hidden 1024, 16 heads, MLP 4096, 20 local + 4 gated global layers.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "fusionlm/core/dtype.hpp"
#include "fusionlm/core/tensor.hpp"
#include "fusionlm/core/threads.hpp"
#include "fusionlm/io/config.hpp"
#include "fusionlm/io/random_weights.hpp"
#include "fusionlm/vision/clip_vit.hpp"
#include "fusionlm/vision/tiled_vit.hpp"
#include "probe.hpp"

namespace {

using namespace fusionlm;

// Every weight of one size shares one buffer, so a 24-layer tower costs one layer's memory (the
// products are the same; each layer's weights are far larger than the caches either way).
RandomWeightsOptions shared_weights() {
    RandomWeightsOptions o;
    o.shared_prefix = "";
    return o;
}

// Times `encode` on wall-clock time (the pool's other thread does half the work) and reports
// GFLOPS and its fraction of the machine's measured fp32 FMA peak at that thread count.
template <class Encode>
void run_timed(benchmark::State& state, double flops, int threads, Encode&& encode) {
    const double peak = bench::machine_limits().fma_gflops[threads - 1];
    double seconds = 0;
    std::int64_t iterations = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        benchmark::DoNotOptimize(encode().data());
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++iterations;
    }
    const double gflops = flops * double(iterations) / seconds * 1e-9;
    state.counters["GFLOPS"] = gflops;
    state.counters["peak_frac"] = peak > 0 ? gflops / peak : 0.0;
}

std::vector<float> random_pixels(std::size_t n) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng);
    return v;
}

void BM_ClipViT_L14_336(benchmark::State& state) {
    ClipVisionConfig c;
    c.hidden_size = 1024;
    c.intermediate_size = 4096;
    c.num_attention_heads = 16;
    c.num_hidden_layers = 24;
    c.image_size = 336;
    c.patch_size = 14;
    c.num_channels = 3;
    c.hidden_act = "quick_gelu";
    c.layer_norm_eps = 1e-5;
    RandomWeights w(shared_weights());
    const ClipViT vit = ClipViT::bind(w, c, "vision_model.");
    const std::vector<float> pixels = random_pixels(std::size_t(3 * 336 * 336));
    const int threads = int(state.range(0));
    ThreadPool pool(threads);
    run_timed(state, vit.flops(-1), threads, [&] { return vit.hidden_state(pool, pixels, -1); });
    state.counters["tokens"] = double(vit.tokens());
}
BENCHMARK(BM_ClipViT_L14_336)->Name("ClipViT/L14_336")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_TiledViT_448(benchmark::State& state) {
    MllamaVisionConfig c;
    c.hidden_size = 1024;
    c.intermediate_size = 4096;
    c.attention_heads = 16;
    c.num_hidden_layers = 20;
    c.num_global_layers = 4;
    c.image_size = 448;
    c.patch_size = 14;
    c.num_channels = 3;
    c.max_num_tiles = 1;
    c.intermediate_layers_indices = {3, 7, 15, 19};
    c.vision_output_dim = 1024 * 5;
    c.hidden_act = "gelu";
    c.norm_eps = 1e-5;
    c.supported_aspect_ratios = {{1, 1}};
    RandomWeights w(shared_weights());
    const TiledViT vit = TiledViT::bind(w, c, "vision_model.");
    const std::vector<float> pixels = random_pixels(std::size_t(3 * 448 * 448));
    const std::vector<std::int64_t> mask{1};
    const int threads = int(state.range(0));
    ThreadPool pool(threads);
    run_timed(state, vit.flops(), threads, [&] { return vit.encode(pool, pixels, 1, mask); });
    state.counters["tokens"] = double(vit.padded_tokens_per_tile());
}
BENCHMARK(BM_TiledViT_448)->Name("TiledViT/448_tile")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
