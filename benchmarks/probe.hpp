#pragma once
// The machine's limits, measured in-process so benchmark figures can be reported as fractions of them:
// peak fp32 FMA throughput (AVX-512 or AVX2, whichever the kernels use here), peak bf16 dot throughput
// (AVX-512-BF16, where present), peak AMX bf16 tile throughput (where present), and read-only streaming
// bandwidth, each at 1 and 2 threads. Measured once per process (a few seconds) and cached; each figure is
// the best of several runs, since a limit is what the machine can do, and the machine is shared and noisy.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "fusionlm/core/cpu.hpp"
#include "fusionlm/core/threads.hpp"
#include "fusionlm/ops/tile_gemm.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace fusionlm::bench {

struct Limits {
    double fma_gflops[2] = {0, 0};   // fp32 FMA, 1 and 2 threads
    double bf16_gflops[2] = {0, 0};  // bf16 dot products (0 when the CPU has none)
    double amx_gflops[2] = {0, 0};   // AMX bf16 tile products (0 when the CPU or OS has none)
    double read_gbps[2] = {0, 0};    // read-only streaming from memory
    std::string fma_isa;
};

namespace probe_detail {

constexpr std::int64_t kFmaIterations = 20'000'000;

// 12 independent FMA chains hide the 4-cycle latency on two FMA ports; returns flops done.
__attribute__((target("avx2,fma"))) inline double fma_avx2() {
    __m256 acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(float(i));
    const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    for (std::int64_t it = 0; it < kFmaIterations; ++it)
        for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, a);
    __m256 s = acc[0];
    for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
    volatile float sink = _mm256_cvtss_f32(s);
    (void)sink;
    return double(kFmaIterations) * 12 * 8 * 2;
}

// 12 chains of AVX-512 FMAs (16 lanes, 2 flops) or of vdpbf16ps (32 bf16 products summed pairwise into 16
// lanes, 64 flops per instruction): fastest_isa's own timing loop; returns flops done.
template <bool Bf16>
inline double chains_avx512() {
    detail::avx512_chain_seconds<Bf16>(int(kFmaIterations));
    return double(kFmaIterations) * 12 * (Bf16 ? 64 : 32);
}

#ifdef FUSIONLM_X86_KERNELS
// tdpbf16ps: 16 x 16 results, each a sum of 32 bf16 products, 16384 flops per instruction; four result
// tiles, as the GEMM's block uses them, so each instruction waits on no other.
inline double bf16_amx() {
    using T = kernels::AmxTiles;
    constexpr std::int64_t iterations = kFmaIterations / 10;
    T::configure(kernels::full_tiles(8));
    for (std::int64_t it = 0; it < iterations; ++it) {
        T::dot_bf16<0, 4, 6>();
        T::dot_bf16<1, 4, 7>();
        T::dot_bf16<2, 5, 6>();
        T::dot_bf16<3, 5, 7>();
    }
    T::release();
    return double(iterations) * 4 * 16 * 16 * 32 * 2;
}
#endif

// Sums a range as 8 interleaved streams (one vector add chain each); returns bytes read. Several streams
// per thread keep enough cache misses in flight: one stream reaches only ~60% of the bandwidth here.
__attribute__((target("avx2"))) inline double read_avx2(const float* p, std::size_t n) {
    constexpr std::size_t streams = 8;
    const std::size_t len = n / streams / 8 * 8;
    __m256 acc[streams];
    for (std::size_t s = 0; s < streams; ++s) acc[s] = _mm256_setzero_ps();
    for (std::size_t i = 0; i < len; i += 8)
        for (std::size_t s = 0; s < streams; ++s) acc[s] = _mm256_add_ps(acc[s], _mm256_loadu_ps(p + s * len + i));
    __m256 sum = acc[0];
    for (std::size_t s = 1; s < streams; ++s) sum = _mm256_add_ps(sum, acc[s]);
    volatile float sink = _mm256_cvtss_f32(sum);
    (void)sink;
    return double(len * streams) * sizeof(float);
}

// Runs work(thread) on every thread of a `threads`-wide pool; the best of `repeats` rates (units / s).
template <class Work>
double best_rate(int threads, int repeats, Work&& work) {
    ThreadPool pool(threads);
    double best = 0;
    for (int r = 0; r < repeats; ++r) {
        std::vector<double> done(std::size_t(threads), 0.0);
        const auto t0 = std::chrono::steady_clock::now();
        pool.run([&](int t) { done[std::size_t(t)] = work(t); });
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        double total = 0;
        for (double d : done) total += d;
        best = std::max(best, total / seconds);
    }
    return best;
}

inline Limits measure() {
    Limits l;
    const CpuFeatures& f = cpu_features();
    const bool avx512 = isa_supported(Isa::Avx512);
    l.fma_isa = avx512 ? "avx512" : f.avx2_fma ? "avx2" : "none";
    // 256 MiB: far beyond any last-level cache, so reads stream from memory.
    const std::size_t n = std::size_t(64) << 20;
    std::vector<float, Eigen::aligned_allocator<float>> buffer;
    if (f.avx2_fma) buffer.assign(n, 1.0f);
    for (int threads = 1; threads <= 2; ++threads) {
        const int i = threads - 1;
        if (avx512) l.fma_gflops[i] = best_rate(threads, 3, [](int) { return chains_avx512<false>(); }) * 1e-9;
        else if (f.avx2_fma) l.fma_gflops[i] = best_rate(threads, 3, [](int) { return fma_avx2(); }) * 1e-9;
        if (f.avx512_bf16) l.bf16_gflops[i] = best_rate(threads, 3, [](int) { return chains_avx512<true>(); }) * 1e-9;
#ifdef FUSIONLM_X86_KERNELS
        if (isa_supported(Isa::AmxBf16)) l.amx_gflops[i] = best_rate(threads, 3, [](int) { return bf16_amx(); }) * 1e-9;
#endif
        if (f.avx2_fma)
            l.read_gbps[i] = best_rate(threads, 5, [&](int t) {
                const std::size_t chunk = n / std::size_t(threads) / 64 * 64;
                return read_avx2(buffer.data() + std::size_t(t) * chunk, chunk);
            }) * 1e-9;
    }
    std::fprintf(stderr,
                 "probe: fp32 FMA (%s) %.1f / %.1f GFLOP/s, bf16 dot %.1f / %.1f GFLOP/s, AMX bf16 %.1f / %.1f "
                 "GFLOP/s, read %.1f / %.1f GB/s (1 / 2 threads)\n",
                 l.fma_isa.c_str(), l.fma_gflops[0], l.fma_gflops[1], l.bf16_gflops[0], l.bf16_gflops[1],
                 l.amx_gflops[0], l.amx_gflops[1], l.read_gbps[0], l.read_gbps[1]);
    return l;
}

}  // namespace probe_detail

inline const Limits& machine_limits() {
    static const Limits limits = probe_detail::measure();
    return limits;
}

}  // namespace fusionlm::bench
