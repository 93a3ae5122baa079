// Linear at the shape of a 1B-class decoder's MLP (in 2048, out 8192): decode (1 row) and prefill
// (128, 512 rows), f32 and bf16 weights, 1 and 2 threads, and bf16 dot products and AMX tiles where the
// CPU has them.
// Counters: GFLOPS, GBps (weight bytes read per second), and both as fractions of this machine's limits
// measured by probe.hpp in the same process.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "fusionlm/ops/linear.hpp"
#include "probe.hpp"

namespace {

constexpr std::int64_t kIn = 2048, kOut = 8192;
// Successive iterations use different copies of the weight (128 MiB or more in all), so weights stream from
// memory as in a real model instead of being served by a 32 MiB last-level cache.
constexpr std::size_t kCopies = 4;

struct Weights {
    std::vector<float> f32;
    std::vector<std::uint16_t> bf16;
    Weights() : f32(std::size_t(kIn * kOut) * kCopies), bf16(f32.size()) {
        const std::size_t n = std::size_t(kIn * kOut);
        std::mt19937 rng(42);
        std::normal_distribution<float> dist(0.0f, 0.02f);
        for (std::size_t i = 0; i < n; ++i) {
            f32[i] = dist(rng);
            bf16[i] = fusionlm::f32_to_bf16(f32[i]);
        }
        for (std::size_t c = 1; c < kCopies; ++c) {
            std::copy_n(f32.begin(), n, f32.begin() + std::ptrdiff_t(c * n));
            std::copy_n(bf16.begin(), n, bf16.begin() + std::ptrdiff_t(c * n));
        }
    }
};

const Weights& weights() {
    static const Weights w;
    return w;
}

void bench_linear(benchmark::State& state, fusionlm::DType dtype, std::int64_t rows, int threads, fusionlm::Isa isa) {
    const fusionlm::bench::Limits& limits = fusionlm::bench::machine_limits();
    const Weights& w = weights();
    std::vector<fusionlm::Linear> layers(kCopies);
    for (std::size_t c = 0; c < kCopies; ++c) {
        fusionlm::TensorView& weight = layers[c].weight;
        weight.name = "bench.weight." + std::to_string(c);
        weight.dtype = dtype;
        weight.shape = {kOut, kIn};
        const std::size_t offset = c * std::size_t(kIn * kOut);
        weight.data = dtype == fusionlm::DType::F32 ? reinterpret_cast<const std::byte*>(w.f32.data() + offset)
                                                    : reinterpret_cast<const std::byte*>(w.bf16.data() + offset);
    }
    fusionlm::ThreadPool pool(threads);
    pool.set_isa(isa);
    const fusionlm::RowMatrix x = fusionlm::RowMatrix::Random(rows, kIn);
    fusionlm::RowMatrix y(rows, kOut);
    for (const fusionlm::Linear& layer : layers) fusionlm::linear(pool, x, layer, y);  // warm-up: scratch, page faults
    // Wall-clock time: the pool's other threads do half the work, so the main thread's CPU time understates it.
    double seconds = 0;
    std::int64_t iterations = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        fusionlm::linear(pool, x, layers[std::size_t(iterations) % kCopies], y);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++iterations;
    }
    const double flops = 2.0 * double(rows) * double(kIn) * double(kOut) * double(iterations);
    const double bytes = double(layers[0].weight.nbytes()) * double(iterations);
    const double gflops = flops / seconds * 1e-9, gbps = bytes / seconds * 1e-9;
    state.counters["GFLOPS"] = gflops;
    state.counters["GBps"] = gbps;
    const double peak = limits.fma_gflops[threads - 1], bandwidth = limits.read_gbps[threads - 1];
    state.counters["peak_frac"] = peak > 0 ? gflops / peak : 0.0;
    state.counters["bw_frac"] = bandwidth > 0 ? gbps / bandwidth : 0.0;
    if (isa == fusionlm::Isa::Avx512Bf16) {
        const double bf16_peak = limits.bf16_gflops[threads - 1];
        state.counters["bf16_peak_frac"] = bf16_peak > 0 ? gflops / bf16_peak : 0.0;
    }
    if (isa == fusionlm::Isa::AmxBf16) {
        const double amx_peak = limits.amx_gflops[threads - 1];
        state.counters["amx_peak_frac"] = amx_peak > 0 ? gflops / amx_peak : 0.0;
    }
}

// Names Linear/<dtype>/<rows>/<threads>, e.g. Linear/bf16/1/2, computing in f32; on CPUs with AVX-512-BF16
// also Linear/bf16dot/<rows>/<threads>: bf16 weights on vdpbf16ps (prefill rows only; one row stays f32),
// and on CPUs with AMX Linear/amx/<rows>/<threads>: bf16 weights on tiles.
[[maybe_unused]] const bool registered = [] {
    const auto add = [](const std::string& kind, fusionlm::DType dtype, std::int64_t rows, int threads,
                        fusionlm::Isa isa) {
        const std::string name = "Linear/" + kind + "/" + std::to_string(rows) + "/" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), bench_linear, dtype, rows, threads, isa)->Unit(benchmark::kMillisecond);
    };
    for (fusionlm::DType dtype : {fusionlm::DType::F32, fusionlm::DType::BF16})
        for (std::int64_t rows : {1, 128, 512})
            for (int threads : {1, 2})
                add(dtype == fusionlm::DType::F32 ? "f32" : "bf16", dtype, rows, threads, fusionlm::best_isa());
    if (fusionlm::isa_supported(fusionlm::Isa::Avx512Bf16))
        for (std::int64_t rows : {128, 512})
            for (int threads : {1, 2}) add("bf16dot", fusionlm::DType::BF16, rows, threads, fusionlm::Isa::Avx512Bf16);
    if (fusionlm::isa_supported(fusionlm::Isa::AmxBf16))
        for (std::int64_t rows : {128, 512})
            for (int threads : {1, 2}) add("amx", fusionlm::DType::BF16, rows, threads, fusionlm::Isa::AmxBf16);
    return true;
}();

}  // namespace
