#pragma once
// y = W x (+ b) for one input row: picks the instruction set and the weight dtype once per call.
#include <string>

#include "../core/cpu.hpp"
#include "../core/error.hpp"
#include "../core/threads.hpp"
#include "simd.hpp"

namespace fusionlm {

namespace detail {
template <template <DType> class Fn, class... Args>
void dispatch_dtype(DType dtype, Args&&... args) {
    switch (dtype) {
        case DType::F32: Fn<DType::F32>::run(args...); return;
        case DType::BF16: Fn<DType::BF16>::run(args...); return;
        case DType::F16: Fn<DType::F16>::run(args...); return;
        default: throw ShapeError("matrix kernel: weight dtype " + std::string(dtype_name(dtype)) + " is not F32, BF16 or F16");
    }
}

template <DType D>
struct GemvCall {
    static void run(Isa isa, ThreadPool& pool, const float* x, const WeightMatrix& w, const float* bias, float* y) {
        switch (isa) {
#ifdef FUSIONLM_X86_KERNELS
            // One row is bound by reading the weights, not by arithmetic: no use for bf16 dot products.
            case Isa::AmxBf16:
            case Isa::Avx512Bf16:
            case Isa::Avx512: kernels::avx512::gemv<D>(pool, x, w, bias, y); return;
            case Isa::Avx2: kernels::avx2::gemv<D>(pool, x, w, bias, y); return;
#endif
            default: kernels::generic::gemv<D>(pool, x, w, bias, y); return;
        }
    }
};
}  // namespace detail

// x [w.cols], y [w.rows]; bias may be null.
inline void gemv(Isa isa, ThreadPool& pool, const float* x, const WeightMatrix& w, const float* bias, float* y) {
    detail::dispatch_dtype<detail::GemvCall>(w.dtype, isa, pool, x, w, bias, y);
}

}  // namespace fusionlm
