#pragma once
// Run-time CPU feature detection: kernels choose their instruction set once, from what the running
// CPU (and OS) supports, so one binary is right everywhere and fast on each machine.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string_view>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fusionlm {

// The instruction sets our kernels are written for. Generic is portable C++ (the reference path).
// Avx512Bf16 is AVX-512 plus bf16 dot products, which round the activations of bf16-weight matrix products
// to bf16: faster, no longer f32 compute, so it is chosen explicitly (fastest_isa), never by best_isa.
// AmxBf16 adds the AMX tile unit's bf16 products (Sapphire Rapids and later) with the same rounding.
enum class Isa { Generic, Avx2, Avx512, Avx512Bf16, AmxBf16 };

struct CpuFeatures {
    bool avx2_fma = false;     // AVX2 + FMA3 (+ F16C for f16 weights)
    bool f16c = false;
    bool avx512 = false;       // AVX-512 F, BW, DQ, VL
    bool avx512_bf16 = false;  // vdpbf16ps
    bool amx_bf16 = false;     // AMX-TILE and AMX-BF16, tile state enabled by the OS
};

namespace detail {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
// CPUID leaf / subleaf -> eax, ebx, ecx, edx (zeros past the highest leaf).
inline void cpuid(unsigned leaf, unsigned subleaf, unsigned r[4]) {
    r[0] = r[1] = r[2] = r[3] = 0;
    __cpuid_count(0, 0, r[0], r[1], r[2], r[3]);
    if (leaf > r[0]) {
        r[0] = r[1] = r[2] = r[3] = 0;
        return;
    }
    __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
}
#endif

// Linux hands out the AMX tile registers only to a process that asks for them (arch_prctl
// ARCH_REQ_XCOMP_PERM for XTILEDATA); a tile instruction before that is SIGILL. Asked once per process.
inline bool amx_permitted() {
#if defined(__linux__) && defined(__x86_64__)
    static const bool permitted = [] {
        constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
        return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
    }();
    return permitted;
#else
    return false;
#endif
}
}  // namespace detail

inline const CpuFeatures& cpu_features() {
    static const CpuFeatures features = [] {
        CpuFeatures f;
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
        // The CPU must have the instructions and the OS must save their registers (XCR0).
        unsigned l1[4], l7[4], l71[4];
        detail::cpuid(1, 0, l1);
        detail::cpuid(7, 0, l7);
        detail::cpuid(7, 1, l71);
        const bool osxsave = l1[2] & (1u << 27);
        std::uint64_t xcr0 = 0;
        if (osxsave) {
            unsigned lo = 0, hi = 0;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            xcr0 = (std::uint64_t(hi) << 32) | lo;
        }
        const bool avx_state = (xcr0 & 0x6) == 0x6;
        const bool avx512_state = avx_state && (xcr0 & 0xe0) == 0xe0;
        const bool amx_state = (xcr0 & 0x60000) == 0x60000;
        const bool avx = avx_state && (l1[2] & (1u << 28));
        f.f16c = avx && (l1[2] & (1u << 29));
        f.avx2_fma = avx && (l7[1] & (1u << 5)) && (l1[2] & (1u << 12));
        f.avx512 = avx512_state && (l7[1] & (1u << 16)) && (l7[1] & (1u << 17)) && (l7[1] & (1u << 30)) &&
                   (l7[1] & (1u << 31));
        f.avx512_bf16 = f.avx512 && (l71[0] & (1u << 5));
        f.amx_bf16 = amx_state && (l7[3] & (1u << 22)) && (l7[3] & (1u << 24));
#endif
        return f;
    }();
    return features;
}

inline bool isa_supported(Isa isa) {
    const CpuFeatures& f = cpu_features();
    switch (isa) {
        case Isa::Generic: return true;
        case Isa::Avx2: return f.avx2_fma && f.f16c;
        case Isa::Avx512: return f.avx512 && f.avx2_fma && f.f16c;
        case Isa::Avx512Bf16: return f.avx512_bf16 && f.avx512 && f.avx2_fma && f.f16c;
        case Isa::AmxBf16:
            return f.amx_bf16 && f.avx512_bf16 && f.avx512 && f.avx2_fma && f.f16c && detail::amx_permitted();
    }
    return false;
}

// The fastest instruction set that computes in f32: what kernels use unless told otherwise.
inline Isa best_isa() {
    static const Isa best = isa_supported(Isa::Avx512) ? Isa::Avx512
                            : isa_supported(Isa::Avx2) ? Isa::Avx2
                                                       : Isa::Generic;
    return best;
}

namespace detail {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
// Seconds for 12 independent chains of `steps` vdpbf16ps (Bf16) or vfmadd231ps, 512 bits wide.
template <bool Bf16>
__attribute__((target("avx512f,avx512bf16"))) inline double avx512_chain_seconds(int steps) {
    __m512 acc[12];
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(float(i));  // distinct, so no two chains merge
    const __m512 x = _mm512_set1_ps(1e-3f);
    const __m512bh h = (__m512bh)_mm512_set1_epi16(0x3a83);
    const auto t0 = std::chrono::steady_clock::now();
    for (int s = 0; s < steps; ++s)
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) acc[i] = Bf16 ? _mm512_dpbf16_ps(acc[i], h, h) : _mm512_fmadd_ps(x, x, acc[i]);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    __m512 sum = acc[0];
#pragma GCC unroll 12
    for (int i = 1; i < 12; ++i) sum = _mm512_add_ps(sum, acc[i]);
    alignas(64) float out[16];
    _mm512_store_ps(out, sum);
    volatile float sink = out[0];
    (void)sink;
    return seconds;
}
#endif

// Whether vdpbf16ps (64 flops) outruns vfmadd231ps (32 flops) on this CPU: about 2x on AMD Zen 4 and 5,
// about 0.5x on Intel Sapphire Rapids, where the bf16 dot products would slow prefill down. Best of 5
// short timings each (about a millisecond in all), so a busy neighbour cannot flip a 4x difference.
inline bool bf16_dot_outruns_fma() {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    static const bool faster = [] {
        double dot = 1e9, fma = 1e9;
        for (int r = 0; r < 5; ++r) {
            dot = std::min(dot, avx512_chain_seconds<true>(4000));
            fma = std::min(fma, avx512_chain_seconds<false>(4000));
        }
        return 64.0 / dot > 1.2 * 32.0 / fma;
    }();
    return faster;
#else
    return false;
#endif
}
}  // namespace detail

// The fastest instruction set, bf16 products included where the CPU has them: AMX tiles, else bf16 dot
// products where they outrun f32 FMAs (measured once), else best_isa().
inline Isa fastest_isa() {
    if (isa_supported(Isa::AmxBf16)) return Isa::AmxBf16;
    if (isa_supported(Isa::Avx512Bf16) && detail::bf16_dot_outruns_fma()) return Isa::Avx512Bf16;
    return best_isa();
}

inline std::string_view isa_name(Isa isa) {
    switch (isa) {
        case Isa::Generic: return "generic";
        case Isa::Avx2: return "avx2";
        case Isa::Avx512: return "avx512";
        case Isa::Avx512Bf16: return "avx512bf16";
        case Isa::AmxBf16: return "amxbf16";
    }
    return "?";
}

}  // namespace fusionlm
