#pragma once
// Y = X W^T (+ b) for several input rows: picks the instruction set and the weight dtype once per call.
#include "../core/cpu.hpp"
#include "../core/error.hpp"
#include "../core/threads.hpp"
#include "gemv.hpp"
#include "simd.hpp"
#include "tile_gemm.hpp"

namespace fusionlm {

namespace detail {
template <DType D>
struct GemmCall {
    static void run(Isa isa, ThreadPool& pool, const float* x, std::int64_t ldx, std::int64_t m, const WeightMatrix& w,
                    const float* bias, float* y, std::int64_t ldy) {
        switch (isa) {
#ifdef FUSIONLM_X86_KERNELS
            case Isa::AmxBf16:
                if constexpr (D == DType::BF16) {
                    kernels::gemm_bf16_tiles<kernels::AmxTiles>(
                        pool, x, ldx, m, w, bias, y, ldy, [](const float* row, std::int64_t pairs, std::uint32_t* out) {
                            kernels::avx2::to_bf16_pairs_avx(row, pairs, out);
                        });
                    return;
                }
                [[fallthrough]];  // f32 and f16 weights: the AVX-512 GEMM
            case Isa::Avx512Bf16:
                // bf16 dot products take bf16 weights in pairs along k.
                if constexpr (D == DType::BF16) {
                    if (w.cols % 2 == 0) {
                        kernels::avx512bf16::gemm_bf16_dot(pool, x, ldx, m, w, bias, y, ldy);
                        return;
                    }
                }
                [[fallthrough]];  // other weights, or an odd `in`: the f32 AVX-512 GEMM
            case Isa::Avx512: kernels::avx512::gemm<D>(pool, x, ldx, m, w, bias, y, ldy); return;
            case Isa::Avx2: kernels::avx2::gemm<D>(pool, x, ldx, m, w, bias, y, ldy); return;
#endif
            default: kernels::generic::gemm<D>(pool, x, ldx, m, w, bias, y, ldy); return;
        }
    }
};
}  // namespace detail

// x [m, w.cols] with row stride ldx, y [m, w.rows] with row stride ldy; bias may be null.
inline void gemm(Isa isa, ThreadPool& pool, const float* x, std::int64_t ldx, std::int64_t m, const WeightMatrix& w,
                 const float* bias, float* y, std::int64_t ldy) {
    detail::dispatch_dtype<detail::GemmCall>(w.dtype, isa, pool, x, ldx, m, w, bias, y, ldy);
}

}  // namespace fusionlm
