// An MoE decoder (8 experts, top-2) against the dense decoder with the same active parameters per token
// (dense intermediate = 2 x expert intermediate), bf16 weights, 2 threads: prefill of 128 and 512 tokens
// and single-token decode. Counters: tokens/s (items_per_second), expert (MLP) weight bytes read per
// decoded token, and the MLP weight bytes the model holds.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <fusionlm/core/dtype.hpp>
#include <fusionlm/core/tensor.hpp>
#include <fusionlm/core/threads.hpp>
#include <fusionlm/models/causal_lm.hpp>
#include <fusionlm/text_model/decoder.hpp>
#include <fusionlm/text_model/mlp.hpp>
#include <fusionlm/text_model/moe.hpp>

namespace {

using namespace fusionlm;

constexpr std::int64_t kHidden = 1024, kLayers = 4, kHeads = 16, kKvHeads = 4, kVocab = 4096;
constexpr std::int64_t kExperts = 8, kTopK = 2, kExpertInter = 1024, kDenseInter = kTopK * kExpertInter;

// Random bf16 weights that outlive the models built over them.
class Weights {
public:
    Linear linear(const std::string& name, std::int64_t out, std::int64_t in) {
        return Linear{view(name, {out, in}, 1.0f / float(in)), {}};
    }
    TensorView view(const std::string& name, Shape shape, float variance) {
        std::normal_distribution<float> nd(0.f, std::sqrt(variance));
        auto& data = store_.emplace_back(std::size_t(numel(shape)));
        for (auto& v : data) v = f32_to_bf16(nd(rng_));
        return TensorView{name, DType::BF16, std::move(shape), reinterpret_cast<const std::byte*>(data.data())};
    }

private:
    std::mt19937 rng_{2024};
    std::deque<std::vector<std::uint16_t>> store_;
};

DecoderConfig config() {
    DecoderConfig c;
    c.hidden_size = kHidden;
    c.num_layers = kLayers;
    c.num_heads = kHeads;
    c.num_kv_heads = kKvHeads;
    c.head_dim = kHidden / kHeads;
    c.rope_theta = 1e6;
    return c;
}

template <class Mlp, class MakeMlp>
CausalLM<Mlp> build(Weights& w, MakeMlp make_mlp) {
    const DecoderConfig c = config();
    const AttentionShape s = c.attention();
    std::vector<std::optional<DecoderLayer<Mlp>>> layers;
    for (std::int64_t i = 0; i < kLayers; ++i) {
        const std::string p = "layers." + std::to_string(i) + ".";
        SelfAttention attn{w.linear(p + "q_proj", s.q_dim(), kHidden), w.linear(p + "k_proj", s.kv_dim(), kHidden),
                           w.linear(p + "v_proj", s.kv_dim(), kHidden), w.linear(p + "o_proj", kHidden, s.q_dim()),
                           {}, {}};
        layers.push_back(DecoderLayer<Mlp>{std::vector<float>(kHidden, 1.f), std::move(attn),
                                           std::vector<float>(kHidden, 1.f), make_mlp(p)});
    }
    const TensorView embed = w.view("embed_tokens", {kVocab, kHidden}, 1.0f);
    return CausalLM<Mlp>(Decoder<Mlp>(c, embed, std::move(layers), std::vector<float>(kHidden, 1.f),
                                      w.linear("lm_head", kVocab, kHidden)),
                         nullptr);
}

const CausalLM<MoeMlp>& moe_model() {
    static Weights w;
    static const CausalLM<MoeMlp> m = build<MoeMlp>(w, [](const std::string& p) {
        std::vector<DenseMlp> experts;
        for (std::int64_t e = 0; e < kExperts; ++e) {
            const std::string x = p + "experts." + std::to_string(e) + ".";
            experts.emplace_back(w.linear(x + "gate_proj", kExpertInter, kHidden),
                                 w.linear(x + "up_proj", kExpertInter, kHidden),
                                 w.linear(x + "down_proj", kHidden, kExpertInter));
        }
        return MoeMlp(w.linear(p + "router", kExperts, kHidden), std::move(experts), int(kTopK), true);
    });
    return m;
}

const CausalLM<DenseMlp>& dense_model() {
    static Weights w;
    static const CausalLM<DenseMlp> m = build<DenseMlp>(w, [](const std::string& p) {
        return DenseMlp(w.linear(p + "gate_proj", kDenseInter, kHidden), w.linear(p + "up_proj", kDenseInter, kHidden),
                        w.linear(p + "down_proj", kHidden, kDenseInter));
    });
    return m;
}

std::vector<std::int64_t> prompt(std::int64_t n) {
    std::vector<std::int64_t> ids(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) ids[std::size_t(i)] = (i * 7919 + 13) % kVocab;
    return ids;
}

// MLP weight bytes one token reads (bf16), and what the model stores.
constexpr double kActiveMlpBytes = double(kLayers * kTopK * 3 * kHidden * kExpertInter * 2);
constexpr double kMoeMlpBytes = double(kLayers * kExperts * 3 * kHidden * kExpertInter * 2);
constexpr double kDenseMlpBytes = double(kLayers * 3 * kHidden * kDenseInter * 2);

template <class Model>
void prefill(benchmark::State& state, const Model& model) {
    ThreadPool pool(2);
    const std::int64_t n = state.range(0);
    const std::vector<std::int64_t> ids = prompt(n);
    for (auto _ : state) {
        auto session = model.new_session(1);
        benchmark::DoNotOptimize(model.forward(pool, session, TokenBatch{1, n, ids, {}, {}}, Logits::Last));
    }
    state.SetItemsProcessed(state.iterations() * n);
}

// One token per iteration after a 64-token prompt; the session restarts every 64 steps so the KV cache
// (and the attention cost) stays in the same range.
template <class Model>
void decode(benchmark::State& state, const Model& model, double mlp_bytes_per_token, double mlp_bytes_held) {
    ThreadPool pool(2);
    const std::vector<std::int64_t> ids = prompt(64);
    auto session = model.new_session(1);
    model.forward(pool, session, TokenBatch{1, 64, ids, {}, {}}, Logits::Last);
    std::vector<std::int64_t> next{1};
    std::int64_t steps = 0;
    for (auto _ : state) {
        if (++steps % 64 == 0) {
            state.PauseTiming();
            session = model.new_session(1);
            model.forward(pool, session, TokenBatch{1, 64, ids, {}, {}}, Logits::Last);
            state.ResumeTiming();
        }
        const RowMatrix logits = model.forward(pool, session, TokenBatch{1, 1, next, {}, {}}, Logits::Last);
        Eigen::Index best = 0;
        logits.row(0).maxCoeff(&best);
        next[0] = std::int64_t(best);
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["mlp_MB_per_token"] = mlp_bytes_per_token / 1e6;
    state.counters["mlp_MB_held"] = mlp_bytes_held / 1e6;
    state.counters["mlp_GBps"] =
        benchmark::Counter(mlp_bytes_per_token * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_MoePrefill(benchmark::State& s) { prefill(s, moe_model()); }
void BM_DensePrefill(benchmark::State& s) { prefill(s, dense_model()); }
void BM_MoeDecode(benchmark::State& s) { decode(s, moe_model(), kActiveMlpBytes, kMoeMlpBytes); }
void BM_DenseDecode(benchmark::State& s) { decode(s, dense_model(), kDenseMlpBytes, kDenseMlpBytes); }

BENCHMARK(BM_MoePrefill)->Name("Moe8x2/prefill")->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DensePrefill)->Name("DenseEqualActive/prefill")->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MoeDecode)->Name("Moe8x2/decode")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DenseDecode)->Name("DenseEqualActive/decode")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
