// The fusion-strategy sweep (issue 9): models of equal vision tower and equal decoder, random weights,
// built by models/fusion_comparison.hpp at its small() size (the models fusionlm-compare runs, at half
// its widths and depth), one benchmark per point:
//   Fusion/<strategy>/<mlp>/<image kind>/<images>/<prompt>/<gen>
//   strategy    cross_attention (Mllama-style gated cross-attention layers) | early_fusion (LLaVA-style
//               image tokens spliced into the prompt)
//   mlp         dense | moe (8 experts, top-2, the dense MLP's active parameters per token)
//   image kind  clip336: one 336 px CLIP image, 577 tokens at patch 14.
//               tiled448: a Mllama-style 448 px image. The comparison has no tiles (each image is one
//               (image, tile) entry of the cross-attention mask), so the image is modelled by its token
//               count through the same ClipViT at 448 px: 1025 tokens, those of the one 448 px tile a
//               square 448 px image takes in Mllama (1024 patches + the class token; TiledViT pads to 1032).
//   images 1, 2, 4 per prompt; prompt 32, 256, 1024 text tokens; gen 1, 64 generated tokens.
// Each iteration: a fresh session, the images through the tower, attach (projection; cross-attention
// K/V), prefill of the prompt (its image tokens included, for early fusion), then gen - 1 greedy decode
// steps. The reported time is the sum of those phases on the wall clock (the pool's other thread does
// half the work). The weights are bound once, the towers once per image kind, and each model composed once
// from them (the early-fusion wrapper holds its tower's token count, so a model per image kind too).
// Counters: vision_s, attach_s, prefill_s (seconds per iteration), decode_tok_s (0 when gen is 1),
// cache_bytes, activation_bytes, flops, GFLOPS, prefill_tokens, threads; see benchmarks/README.md.
// Threads: 2, as the other suites, or FUSIONLM_BENCH_THREADS.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "fusionlm/core/error.hpp"
#include "fusionlm/core/tensor.hpp"
#include "fusionlm/core/threads.hpp"
#include "fusionlm/generate.hpp"
#include "fusionlm/io/random_weights.hpp"
#include "fusionlm/models/fusion_comparison.hpp"
#include "fusionlm/text_model/decoder.hpp"
#include "fusionlm/text_model/mlp.hpp"
#include "fusionlm/text_model/moe.hpp"
#include "fusionlm/vision/clip_vit.hpp"

namespace {

using namespace fusionlm;
using Clock = std::chrono::steady_clock;

struct ImageKind {
    const char* name;
    std::int64_t image_size;
};
constexpr ImageKind kImageKinds[] = {{"clip336", 336}, {"tiled448", 448}};
constexpr std::int64_t kImageCounts[] = {1, 2, 4};
constexpr std::int64_t kPromptTokens[] = {32, 256, 1024};
constexpr std::int64_t kGenerated[] = {1, 64};
constexpr std::int64_t kMaxImages = std::ranges::max(kImageCounts);

struct Point {
    std::string name;
    ImageKind kind;
    std::int64_t images = 0, prompt = 0, gen = 0;
};

int bench_threads() {
    const char* env = std::getenv("FUSIONLM_BENCH_THREADS");
    if (!env) return 2;
    const std::string text = env;
    bool ok = !text.empty() && text.size() <= 4;
    for (char c : text) ok = ok && c >= '0' && c <= '9';
    const int n = ok ? std::stoi(text) : 0;
    if (n < 1 || n > 1024)
        throw InputError("FUSIONLM_BENCH_THREADS: '" + text + "' is not a whole number from 1 to 1024");
    return n;
}

// The weights, towers, models and pixels every Fusion/ benchmark shares, made on first use.
class Sweep {
public:
    static Sweep& get() {
        static Sweep sweep;
        return sweep;
    }

    const ComparisonShapes& shapes() const { return shapes_; }

    ThreadPool& pool(int threads) {
        auto& p = pools_[threads];
        if (!p) p = std::make_unique<ThreadPool>(threads);
        return *p;
    }

    const ClipViT& tower(const ImageKind& kind) {
        auto& t = towers_[kind.image_size];
        if (!t) t = std::make_unique<const ClipViT>(bind_comparison_tower(weights_, shapes_, kind.image_size));
        return *t;
    }

    // kMaxImages distinct images [channels, size, size] of one kind.
    const std::vector<std::vector<float>>& pixels(const ImageKind& kind) {
        auto& p = pixels_[kind.image_size];
        if (p.empty()) {
            const ClipViT& vit = tower(kind);
            for (std::int64_t i = 0; i < kMaxImages; ++i)
                p.push_back(comparison_pixels(std::size_t(vit.channels() * vit.image_size() * vit.image_size()),
                                              std::uint32_t(i + 1)));
        }
        return p;
    }

    template <class Mlp, bool CrossAttention>
    const auto& model(const ImageKind& kind) {
        using Model = std::conditional_t<CrossAttention, CrossAttentionVlm<Mlp>, EarlyFusionVlm<Mlp>>;
        static std::map<std::int64_t, std::unique_ptr<const Model>> built;
        auto& m = built[kind.image_size];
        if (!m) {
            if constexpr (CrossAttention)
                m = std::make_unique<const Model>(make_cross_attention_model<Mlp>(text_, shapes_, tower(kind)));
            else
                m = std::make_unique<const Model>(make_early_fusion_model<Mlp>(text_, shapes_, tower(kind)));
        }
        return *m;
    }

private:
    Sweep() = default;

    ComparisonShapes shapes_ = ComparisonShapes::small();
    RandomWeights weights_{comparison_weights_options()};
    ComparisonText text_ = bind_comparison_text(weights_, shapes_);
    std::map<int, std::unique_ptr<ThreadPool>> pools_;
    std::map<std::int64_t, std::unique_ptr<const ClipViT>> towers_;
    std::map<std::int64_t, std::vector<std::vector<float>>> pixels_;
};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

benchmark::Counter bytes(double v) {
    return benchmark::Counter(v, benchmark::Counter::kDefaults, benchmark::Counter::OneK::kIs1024);
}

template <class Mlp, bool CrossAttention>
void BM_Fusion(benchmark::State& state, const Point& point) {
    try {
        const int threads = bench_threads();
        Sweep& sweep = Sweep::get();
        ThreadPool& pool = sweep.pool(threads);
        const ComparisonShapes& s = sweep.shapes();
        const auto& model = sweep.model<Mlp, CrossAttention>(point.kind);
        const auto& pixels = sweep.pixels(point.kind);
        const ClipViT& vit = model.vision();
        std::int64_t tokens_per_image = 1;  // cross attention: one marker token per image
        if constexpr (!CrossAttention) tokens_per_image = model.fusion().features_per_image();
        const ComparisonPrompt prompt =
            make_comparison_prompt(s, point.prompt, point.images, tokens_per_image, CrossAttention);
        const std::int64_t cross_layers = CrossAttention ? s.cross_layers() : 0;
        const std::int64_t vision_tokens = CrossAttention ? point.images * vit.tokens() : 0;
        double flops = prefill_flops<Mlp>(s, prompt.seq(), cross_layers, vision_tokens);
        for (std::int64_t step = 1; step < point.gen; ++step)
            flops += decode_cost<Mlp>(s, double(prompt.seq() + step - 1), cross_layers, vision_tokens).flops;

        RowMatrix features(point.images * vit.tokens(), vit.hidden_size());
        double vision_s = 0, attach_s = 0, prefill_s = 0, decode_s = 0;
        std::size_t cache_bytes = 0;
        for (auto _ : state) {
            auto session = model.new_session(1);
            const auto t_vision = Clock::now();
            for (std::int64_t i = 0; i < point.images; ++i)
                features.middleRows(i * vit.tokens(), vit.tokens()) =
                    encode_image(vit, pool, ClipImage{pixels[std::size_t(i)]}, nullptr);
            const double vision = seconds_since(t_vision);

            const auto t_attach = Clock::now();
            model.fusion().attach(pool, session.fusion, std::span<const RowMatrix>(&features, 1),
                                  image_placement(model.fusion(), prompt));
            const double attach = seconds_since(t_attach);

            const auto t_prefill = Clock::now();
            RowMatrix logits = model.forward(pool, session, prompt.tokens(), Logits::Last);
            const double prefill = seconds_since(t_prefill);

            const auto t_decode = Clock::now();
            std::vector<std::int64_t> next{argmax(logits.row(0))};
            for (std::int64_t step = 1; step < point.gen; ++step) {
                logits = model.forward(pool, session, TokenBatch{1, 1, next, {}, {}}, Logits::Last);
                next[0] = argmax(logits.row(0));
            }
            const double decode = seconds_since(t_decode);

            if (!logits.allFinite())
                throw ShapeError(point.name + ": non-finite logits (random weights out of range)");
            cache_bytes = kv_cache_bytes(session.decoder) + cross_kv_bytes(session.fusion);
            vision_s += vision;
            attach_s += attach;
            prefill_s += prefill;
            decode_s += decode;
            state.SetIterationTime(vision + attach + prefill + decode);
        }

        const double n = double(state.iterations());
        state.counters["vision_s"] = vision_s / n;
        state.counters["attach_s"] = attach_s / n;
        state.counters["prefill_s"] = prefill_s / n;
        state.counters["decode_tok_s"] = point.gen > 1 ? double(point.gen - 1) * n / decode_s : 0.0;
        state.counters["cache_bytes"] = bytes(double(cache_bytes));
        state.counters["activation_bytes"] =
            bytes(double(prefill_activation_bytes<Mlp>(s, prompt.seq(), cross_layers, vision_tokens, threads)));
        state.counters["flops"] = flops;
        state.counters["GFLOPS"] = flops * n / (prefill_s + decode_s) * 1e-9;
        state.counters["prefill_tokens"] = double(prompt.seq());
        state.counters["threads"] = threads;
    } catch (const std::exception& e) {
        state.SkipWithError(e.what());
    }
}

template <class Mlp, bool CrossAttention>
void register_strategy(const std::string& strategy, const std::string& mlp) {
    for (const ImageKind& kind : kImageKinds)
        for (std::int64_t images : kImageCounts)
            for (std::int64_t prompt : kPromptTokens)
                for (std::int64_t gen : kGenerated) {
                    const std::string name = "Fusion/" + strategy + "/" + mlp + "/" + kind.name + "/" +
                                             std::to_string(images) + "/" + std::to_string(prompt) + "/" +
                                             std::to_string(gen);
                    benchmark::RegisterBenchmark(name.c_str(), BM_Fusion<Mlp, CrossAttention>,
                                                 Point{name, kind, images, prompt, gen})
                        ->UseManualTime()
                        ->Unit(benchmark::kMillisecond);
                }
}

const bool registered = [] {
    register_strategy<DenseMlp, true>("cross_attention", "dense");
    register_strategy<MoeMlp, true>("cross_attention", "moe");
    register_strategy<DenseMlp, false>("early_fusion", "dense");
    register_strategy<MoeMlp, false>("early_fusion", "moe");
    return true;
}();

}  // namespace
