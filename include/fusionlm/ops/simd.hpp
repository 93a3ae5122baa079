#pragma once
// The matrix kernels (simd_kernels.inc) compiled once per instruction set: a portable one (the reference
// path, also what non-x86 CPUs run), AVX2+FMA, AVX-512, and AVX-512 with bf16 dot products (vdpbf16ps).
// Each set lives in its own namespace and is compiled for its target only; the dispatchers (gemv.hpp,
// gemm.hpp) pick one at run time.
#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/threads.hpp"
#include "weight_matrix.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define FUSIONLM_X86_KERNELS 1
#include <immintrin.h>
#endif

namespace fusionlm::kernels {

// Per-thread scratch (packed panels, a rearranged input row), grown on demand and reused across calls so
// the hot path does not allocate. Slot 0 belongs to the calling thread's setup, slot 1 to the workers.
template <class T>
inline T* scratch_buffer(int slot, std::size_t n) {
    thread_local std::vector<T, Eigen::aligned_allocator<T>> buffers[2];
    auto& buffer = buffers[slot];
    if (buffer.size() < n) {
        buffer.clear();
        buffer.resize(n);
    }
    return buffer.data();
}

// Runs fn(chunk) for chunk in [0, chunks) on the pool's threads, each thread taking the next chunk when it
// finishes one: on a shared machine a descheduled thread delays only its current chunk, not a fixed share.
template <class Fn>
void parallel_chunks(ThreadPool& pool, std::size_t chunks, Fn&& fn) {
    if (chunks == 0) return;
    if (pool.size() == 1 || chunks == 1) {
        for (std::size_t c = 0; c < chunks; ++c) fn(c);
        return;
    }
    std::atomic<std::size_t> next{0};
    pool.run([&](int) {
        for (std::size_t c = next.fetch_add(1, std::memory_order_relaxed); c < chunks;
             c = next.fetch_add(1, std::memory_order_relaxed))
            fn(c);
    });
}

// The weight block a thread packs after the current one: rows [row, row + rows), columns [col, col + cols).
struct PanelSource {
    std::int64_t row = 0, rows = 0, col = 0, cols = 0;
};

// Prefetches part `part` of `parts` of a weight block's source lines, so the memory-bound packing of the
// next block overlaps the current block's arithmetic.
template <class T>
inline void prefetch_panel(const T* w, std::int64_t ld, const PanelSource& next, std::int64_t part,
                           std::int64_t parts) {
    constexpr std::int64_t per_line = 64 / std::int64_t(sizeof(T));
    const std::int64_t lines_per_row = (next.cols + per_line - 1) / per_line;
    const std::int64_t total = next.rows * lines_per_row;
    for (std::int64_t l = total * part / parts; l < total * (part + 1) / parts; ++l)
        __builtin_prefetch(w + (next.row + l / lines_per_row) * ld + next.col + (l % lines_per_row) * per_line, 0, 3);
}

// Two consecutive bf16 elements as one 32-bit word, the first in the low half (their order in memory).
inline std::uint32_t bf16_pair(const std::uint16_t* p) { return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 16; }

// x[0] and x[1] rounded to bf16 (nearest even) and joined as bf16_pair joins two stored ones.
inline std::uint32_t rounded_bf16_pair(const float* x) {
    return std::uint32_t(f32_to_bf16(x[0])) | std::uint32_t(f32_to_bf16(x[1])) << 16;
}

// A bf16 value (low 16 bits of h) as f32 the way bf16 dot-product instructions read it: denormals as zero.
inline float bf16_daz(std::uint32_t h) {
    return bf16_to_f32(std::uint16_t((h & 0x7f80u) == 0 ? h & 0x8000u : h));
}

// Portable vectors of Width floats: plain loops, the reference every intrinsic path is tested against.
template <int Width, int Rows>
struct GenericSimd {
    struct V {
        float v[Width];
    };
    static constexpr int W = Width, MR = Rows;
    static V zero() { return V{}; }
    static V load(const float* p) {
        V r;
        for (int i = 0; i < W; ++i) r.v[i] = p[i];
        return r;
    }
    static void store(float* p, const V& a) {
        for (int i = 0; i < W; ++i) p[i] = a.v[i];
    }
    static V broadcast(float s) {
        V r;
        for (int i = 0; i < W; ++i) r.v[i] = s;
        return r;
    }
    static V fma(const V& a, const V& b, V c) {
        for (int i = 0; i < W; ++i) c.v[i] += a.v[i] * b.v[i];
        return c;
    }
    static V add(V a, const V& b) {
        for (int i = 0; i < W; ++i) a.v[i] += b.v[i];
        return a;
    }
    static float reduce(const V& a) {
        float s = 0.0f;
        for (int i = 0; i < W; ++i) s += a.v[i];
        return s;
    }
    static void load_bf16_pair(const std::uint16_t* p, V& even, V& odd) {
        for (int i = 0; i < W; ++i) {
            even.v[i] = bf16_to_f32(p[2 * i]);
            odd.v[i] = bf16_to_f32(p[2 * i + 1]);
        }
    }
    static void load_f16_pair(const std::uint16_t* p, V& a, V& b) {
        for (int i = 0; i < W; ++i) {
            a.v[i] = f16_to_f32(p[i]);
            b.v[i] = f16_to_f32(p[W + i]);
        }
    }
    template <DType D>
    static void pack8(const storage_t<D>* w, std::int64_t ld, std::int64_t kc, float* dst, std::int64_t stride) {
        for (int r = 0; r < 8; ++r)
            for (std::int64_t p = 0; p < kc; ++p) dst[p * stride + r] = widen<D>(w[r * ld + p]);
    }

    // bf16 pairs, one per 32-bit lane (see bf16_pair), and the vdpbf16ps step on them.
    struct P {
        std::uint32_t v[Width];
    };
    static P load_pairs(const std::uint32_t* p) {
        P r;
        for (int i = 0; i < W; ++i) r.v[i] = p[i];
        return r;
    }
    static P broadcast_pair(std::uint32_t a) {
        P r;
        for (int i = 0; i < W; ++i) r.v[i] = a;
        return r;
    }
    // acc += a.high * b.high, then acc += a.low * b.low, as vdpbf16ps does: each step rounded to f32 (a
    // product of two bf16 values is exact in f32), denormal inputs read as zero, denormal results flushed.
    static V dot_bf16(V acc, const P& a, const P& b) {
        const auto flush = [](float f) { return std::abs(f) < std::numeric_limits<float>::min() ? f * 0.0f : f; };
        for (int i = 0; i < W; ++i) {
            acc.v[i] = flush(acc.v[i] + bf16_daz(a.v[i] >> 16) * bf16_daz(b.v[i] >> 16));
            acc.v[i] = flush(acc.v[i] + bf16_daz(a.v[i] & 0xffffu) * bf16_daz(b.v[i] & 0xffffu));
        }
        return acc;
    }
    // x[0 .. 2 * pairs) rounded to bf16 (nearest even), as pairs.
    static void to_bf16_pairs(const float* x, std::int64_t pairs, std::uint32_t* out) {
        for (std::int64_t p = 0; p < pairs; ++p) out[p] = rounded_bf16_pair(x + 2 * p);
    }
    // 8 bf16 weight rows, kc pairs -> dst[p * stride + r] (pairs copied, not widened).
    static void pack8_pairs(const std::uint16_t* w, std::int64_t ld, std::int64_t kc, std::uint32_t* dst,
                            std::int64_t stride) {
        for (int r = 0; r < 8; ++r)
            for (std::int64_t p = 0; p < kc; ++p) dst[p * stride + r] = bf16_pair(w + r * ld + 2 * p);
    }
};

namespace generic {
using Simd = GenericSimd<8, 6>;
#include "simd_kernels.inc"
}  // namespace generic

#ifdef FUSIONLM_X86_KERNELS

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
namespace avx2 {

inline __m256 widen8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 widen8(const std::uint16_t* p, DType d) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if (d == DType::BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

// Writes column q of the 8 x 8 block r[0..7] (rows) to dst + q * stride.
inline void transpose8_store(__m256 r[8], float* dst, std::int64_t stride) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(dst + 0 * stride, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + 1 * stride, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * stride, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * stride, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * stride, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * stride, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * stride, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * stride, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// 8 weight rows, kc columns -> dst[p * stride + r], widened to f32, 8 x 8 blocks transposed in registers.
template <DType D>
inline void pack8_avx(const storage_t<D>* w, std::int64_t ld, std::int64_t kc, float* dst, std::int64_t stride) {
    std::int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i) {
            if constexpr (D == DType::F32) r[i] = widen8(w + i * ld + p);
            else r[i] = widen8(w + i * ld + p, D);
        }
        transpose8_store(r, dst + p * stride, stride);
    }
    for (; p < kc; ++p)
        for (int i = 0; i < 8; ++i) dst[p * stride + i] = widen<D>(w[i * ld + p]);
}

// f32 -> bf16 bits (round to nearest even, NaN kept and quieted, as f32_to_bf16) in each lane's low half.
inline __m256i round_bf16(__m256 v) {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i bias = _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff));
    const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
    const __m256i nan =
        _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(rounded, quiet, nan);
}

// x[0 .. 2 * pairs) rounded to bf16 pairs (see GenericSimd::to_bf16_pairs), 8 pairs per step.
inline void to_bf16_pairs_avx(const float* x, std::int64_t pairs, std::uint32_t* out) {
    std::int64_t p = 0;
    for (; p + 8 <= pairs; p += 8) {
        const __m256i lo = round_bf16(_mm256_loadu_ps(x + 2 * p)), hi = round_bf16(_mm256_loadu_ps(x + 2 * p + 8));
        // packus leaves the 16-bit values as they are but interleaves the 128-bit halves; the permute
        // restores the order.
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xd8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + p), packed);
    }
    for (; p < pairs; ++p) out[p] = rounded_bf16_pair(x + 2 * p);
}

// 8 bf16 weight rows, kc pairs -> dst[p * stride + r]: the 32-bit pairs moved by the f32 8 x 8 transpose.
inline void pack8_pairs_avx(const std::uint16_t* w, std::int64_t ld, std::int64_t kc, std::uint32_t* dst,
                            std::int64_t stride) {
    std::int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i)
            r[i] = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i * ld + 2 * p)));
        transpose8_store(r, reinterpret_cast<float*>(dst + p * stride), stride);
    }
    for (; p < kc; ++p)
        for (int i = 0; i < 8; ++i) dst[p * stride + i] = bf16_pair(w + i * ld + 2 * p);
}

struct Simd {
    using V = __m256;
    static constexpr int W = 8, MR = 6;
    static V zero() { return _mm256_setzero_ps(); }
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, V a) { _mm256_storeu_ps(p, a); }
    static V broadcast(float s) { return _mm256_set1_ps(s); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static float reduce(V a) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    // Each 32-bit lane holds bf16 elements 2i (low half) and 2i+1 (high half): a shift or a mask makes both
    // valid floats.
    static void load_bf16_pair(const std::uint16_t* p, V& even, V& odd) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xffff0000u))));
    }
    static void load_f16_pair(const std::uint16_t* p, V& a, V& b) {
        a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
    }
    template <DType D>
    static void pack8(const storage_t<D>* w, std::int64_t ld, std::int64_t kc, float* dst, std::int64_t stride) {
        pack8_avx<D>(w, ld, kc, dst, stride);
    }
};

#include "simd_kernels.inc"
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
#endif
namespace avx512 {

// The AVX2 kernels' template with 16-float vectors; weight packing reuses the AVX2 8 x 8 transpose.
struct Simd {
    using V = __m512;
    static constexpr int W = 16, MR = 12;
    static V zero() { return _mm512_setzero_ps(); }
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, V a) { _mm512_storeu_ps(p, a); }
    static V broadcast(float s) { return _mm512_set1_ps(s); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static float reduce(V a) {
        alignas(64) float t[16];
        _mm512_store_ps(t, a);
        return avx2::Simd::reduce(_mm256_add_ps(_mm256_load_ps(t), _mm256_load_ps(t + 8)));
    }
    static void load_bf16_pair(const std::uint16_t* p, V& even, V& odd) {
        const __m512i v = _mm512_loadu_si512(p);
        // Full-mask maskz forms: GCC 12's unmasked intrinsics warn (falsely) about an uninitialised source.
        even = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(__mmask16(0xffff), v, 16));
        odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u))));
    }
    static void load_f16_pair(const std::uint16_t* p, V& a, V& b) {
        a = _mm512_maskz_cvtph_ps(__mmask16(0xffff), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
        b = _mm512_maskz_cvtph_ps(__mmask16(0xffff), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
    }
    template <DType D>
    static void pack8(const storage_t<D>* w, std::int64_t ld, std::int64_t kc, float* dst, std::int64_t stride) {
        avx2::pack8_avx<D>(w, ld, kc, dst, stride);
    }
};

#include "simd_kernels.inc"
}  // namespace avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(                                                                                    \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c")
#endif
namespace avx512bf16 {

// The AVX-512 kernels plus vdpbf16ps for gemm_bf16_dot: the pair packing and rounding are the AVX2 ones.
struct Simd : avx512::Simd {
    using P = __m512i;
    static P load_pairs(const std::uint32_t* p) { return _mm512_loadu_si512(p); }
    static P broadcast_pair(std::uint32_t a) { return _mm512_set1_epi32(int(a)); }
    static V dot_bf16(V acc, P a, P b) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b); }
    static void to_bf16_pairs(const float* x, std::int64_t pairs, std::uint32_t* out) {
        avx2::to_bf16_pairs_avx(x, pairs, out);
    }
    static void pack8_pairs(const std::uint16_t* w, std::int64_t ld, std::int64_t kc, std::uint32_t* dst,
                            std::int64_t stride) {
        avx2::pack8_pairs_avx(w, ld, kc, dst, stride);
    }
};

#include "simd_kernels.inc"
}  // namespace avx512bf16
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif  // FUSIONLM_X86_KERNELS

}  // namespace fusionlm::kernels
