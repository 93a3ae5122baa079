#pragma once
// y = x W^T + b for bf16 W on a tile matrix unit (AMX-BF16). The roles are swapped so that W keeps its
// layout: 16 rows of W are a tile's A operand (rows of 32 bf16 along k, copied as they are into contiguous
// tiles); x, rounded to bf16 (nearest even, as PyTorch's bf16 matmul rounds its input), is packed once per
// call as the B operand (for each pair of k, 16 rows' pairs side by side). A 16 x 16 f32 result tile is
// then a block of y^T, accumulated over k in a per-thread buffer and written back transposed.
// The tile operations come from a policy: AmxTiles runs the instructions, EmulatedTiles does what the
// Intel SDM defines them to do in portable C++, so the driver is tested on machines without AMX.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "../core/threads.hpp"
#include "simd.hpp"
#include "weight_matrix.hpp"

namespace fusionlm::kernels {

// ldtilecfg's 64-byte operand, palette 1. Tiles used here are all 16 rows of 64 bytes.
struct alignas(64) TileConfig {
    std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
    std::uint16_t colsb[16] = {};
    std::uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

inline constexpr int kTileRows = 16, kTileBytes = 64;

inline TileConfig full_tiles(int count) {
    TileConfig config;
    for (int t = 0; t < count; ++t) {
        config.colsb[t] = kTileBytes;
        config.rows[t] = kTileRows;
    }
    return config;
}

// The tile registers in portable C++, per thread, as the SDM defines the instructions: loads and stores of
// rows[t] rows of colsb[t] bytes at a byte stride; dot_bf16 is tdpbf16ps.
struct EmulatedTiles {
    struct State {
        std::uint8_t tile[8][kTileRows * kTileBytes] = {};
        TileConfig config;
        bool configured = false;
    };
    static State& state() {
        thread_local State s;
        return s;
    }
    // Hardware faults on a tile instruction without a configuration: so does the emulation.
    static State& configured_state() {
        State& s = state();
        if (!s.configured) throw std::logic_error("tile instruction without ldtilecfg");
        return s;
    }
    static void configure(const TileConfig& config) {
        State& s = state();
        s.config = config;
        std::memset(s.tile, 0, sizeof s.tile);  // ldtilecfg zeroes the tiles
        s.configured = true;
    }
    static void release() { state().configured = false; }
    template <int T>
    static void zero() {
        std::memset(configured_state().tile[T], 0, kTileRows * kTileBytes);
    }
    template <int T>
    static void load(const void* src, std::int64_t stride) {
        State& s = configured_state();
        for (int r = 0; r < s.config.rows[T]; ++r)
            std::memcpy(s.tile[T] + r * kTileBytes, static_cast<const std::uint8_t*>(src) + r * stride,
                        s.config.colsb[T]);
    }
    template <int T>
    static void store(void* dst, std::int64_t stride) {
        State& s = configured_state();
        for (int r = 0; r < s.config.rows[T]; ++r)
            std::memcpy(static_cast<std::uint8_t*>(dst) + r * stride, s.tile[T] + r * kTileBytes,
                        s.config.colsb[T]);
    }
    // The SDM's tdpbf16ps: for each result, the even and the odd products of all pairs p (A[m].bf16[2p] *
    // B[p].bf16[2n], and 2p+1 with 2n+1) are summed apart, from zero, then added to each other and to C;
    // every step rounded to f32 (a product of two bf16 values is exact in f32), denormal inputs read as
    // zero, denormal results flushed.
    template <int C, int A, int B>
    static void dot_bf16() {
        State& s = configured_state();
        const TileConfig& cfg = s.config;
        const auto flush = [](float f) { return std::abs(f) < std::numeric_limits<float>::min() ? f * 0.0f : f; };
        for (int m = 0; m < cfg.rows[C]; ++m)
            for (int n = 0; n < cfg.colsb[C] / 4; ++n) {
                float even = 0.0f, odd = 0.0f, c;
                for (int p = 0; p < cfg.colsb[A] / 4; ++p) {
                    std::uint32_t a, b;
                    std::memcpy(&a, s.tile[A] + m * kTileBytes + 4 * p, 4);
                    std::memcpy(&b, s.tile[B] + p * kTileBytes + 4 * n, 4);
                    even = flush(even + bf16_daz(a & 0xffffu) * bf16_daz(b & 0xffffu));
                    odd = flush(odd + bf16_daz(a >> 16) * bf16_daz(b >> 16));
                }
                std::memcpy(&c, s.tile[C] + m * kTileBytes + 4 * n, 4);
                c = flush(c + flush(even + odd));
                std::memcpy(s.tile[C] + m * kTileBytes + 4 * n, &c, 4);
            }
    }
};

#ifdef FUSIONLM_X86_KERNELS
// The AMX instructions. Plain inline assembly (both syntaxes), so no target attribute is needed and the
// tile numbers can be template arguments; the memory clobbers order tile loads and stores with C++ accesses.
struct AmxTiles {
    static void configure(const TileConfig& config) {
        __asm__ volatile("{ldtilecfg (%0)|ldtilecfg [%0]}" ::"r"(&config) : "memory");
    }
    static void release() { __asm__ volatile("tilerelease" ::: "memory"); }
    template <int T>
    static void zero() {
        __asm__ volatile("tilezero %%tmm%c0" ::"i"(T));
    }
    template <int T>
    static void load(const void* src, std::int64_t stride) {
        __asm__ volatile("{tileloadd (%0,%1,1), %%tmm%c2|tileloadd %%tmm%c2, [%0+%1*1]}" ::"r"(src), "r"(stride),
                         "i"(T)
                         : "memory");
    }
    template <int T>
    static void store(void* dst, std::int64_t stride) {
        __asm__ volatile("{tilestored %%tmm%c2, (%0,%1,1)|tilestored [%0+%1*1], %%tmm%c2}" ::"r"(dst), "r"(stride),
                         "i"(T)
                         : "memory");
    }
    template <int C, int A, int B>
    static void dot_bf16() {
        __asm__ volatile("{tdpbf16ps %%tmm%c2, %%tmm%c1, %%tmm%c0|tdpbf16ps %%tmm%c0, %%tmm%c1, %%tmm%c2}" ::"i"(C),
                         "i"(A), "i"(B));
    }
};
#endif

namespace tiles {

inline constexpr std::int64_t kTileK = 32;        // bf16 elements of k in one tile row
inline constexpr std::int64_t kBlockRows = 32;    // rows of W (two A tiles) one thread owns at a time
inline constexpr std::int64_t kBlockCols = 32;    // rows of x (two B tiles) per step
inline constexpr std::int64_t kPassK = 512;       // k per pass over the accumulators: 32 W rows of it stay in L1
inline constexpr std::int64_t kChunkBytes = 1 << 20;  // the rows of bf16 x one block reuses stay in L2

inline std::int64_t round_up(std::int64_t v, std::int64_t to) { return (v + to - 1) / to * to; }

// Panel `panel` (16 rows of x from row 16 * panel) as B operand rows: dst[p * 16 + i] holds row i's pair p,
// rounded to bf16; pairs past k and rows past m are zero.
template <class ToPairs>
inline void pack_x_panel(const float* x, std::int64_t ldx, std::int64_t m, std::int64_t k, std::int64_t pairs_pad,
                         std::int64_t panel, const ToPairs& to_pairs, std::uint32_t* row_pairs, std::uint32_t* dst) {
    for (std::int64_t i = 0; i < kTileRows; ++i) {
        const std::int64_t row = panel * kTileRows + i;
        std::fill(row_pairs, row_pairs + pairs_pad, 0u);
        if (row < m) {
            to_pairs(x + row * ldx, k / 2, row_pairs);
            if (k % 2) row_pairs[k / 2] = f32_to_bf16(x[row * ldx + k - 1]);
        }
        for (std::int64_t p = 0; p < pairs_pad; ++p) dst[p * kTileRows + i] = row_pairs[p];
    }
}

// Columns [k0, k0 + 32 steps) of W rows [n0, n0 + rows) as A operands, two 16-row tiles per 32 k:
// dst[(s * 32 + r) * 32 + e] = W[n0 + r][k0 + 32 s + e], zero past k and past `rows`. Contiguous tiles, as
// W's own rows at a stride of a multiple of 4 KiB would all fall in one L1 set.
inline void pack_w_piece(const std::uint16_t* w, std::int64_t k, std::int64_t n0, std::int64_t rows,
                         std::int64_t k0, std::int64_t steps, std::uint16_t* dst) {
    for (std::int64_t s = 0; s < steps; ++s) {
        const std::int64_t col = k0 + s * kTileK, valid = std::clamp(k - col, std::int64_t(0), kTileK);
        for (std::int64_t r = 0; r < kBlockRows; ++r) {
            std::uint16_t* out = dst + (s * kBlockRows + r) * kTileK;
            const std::int64_t copied = r < rows ? valid : 0;
            if (copied > 0) std::copy_n(w + (n0 + r) * k + col, copied, out);
            std::fill(out + copied, out + kTileK, std::uint16_t(0));
        }
    }
}

// acc [32, ldacc] = W rows [n0, n0 + rows) (zero rows past them) times the B panels of x_panels for rows
// [0, cols) of the chunk, over k: per 32 x 32 block, four result tiles in tmm0-3, W in tmm4-5, x in tmm6-7.
template <class Tiles>
inline void block_product(const std::uint16_t* w, std::int64_t k, std::int64_t n0, std::int64_t rows,
                          const std::uint32_t* x_panels, std::int64_t pairs_pad, std::int64_t cols,
                          std::uint16_t* w_piece, float* acc, std::int64_t ldacc) {
    const std::int64_t c_stride = ldacc * 4;
    constexpr std::int64_t a_stride = kTileBytes, b_stride = kTileBytes, panel_words = kTileRows;
    for (std::int64_t k0 = 0; k0 < 2 * pairs_pad; k0 += kPassK) {
        const std::int64_t steps = std::min(kPassK, 2 * pairs_pad - k0) / kTileK;
        pack_w_piece(w, k, n0, rows, k0, steps, w_piece);
        // The next pass's piece is read from memory while this one's products run.
        const PanelSource next{n0, k0 + kPassK < k ? rows : 0, k0 + kPassK, std::min(kPassK, k - k0 - kPassK)};
        for (std::int64_t j = 0; j < cols; j += kBlockCols) {
            if (next.rows > 0) prefetch_panel(w, k, next, j / kBlockCols, cols / kBlockCols);
            float* c = acc + j;
            if (k0 == 0) {
                Tiles::template zero<0>();
                Tiles::template zero<1>();
                Tiles::template zero<2>();
                Tiles::template zero<3>();
            } else {
                Tiles::template load<0>(c, c_stride);
                Tiles::template load<1>(c + kTileRows, c_stride);
                Tiles::template load<2>(c + kTileRows * ldacc, c_stride);
                Tiles::template load<3>(c + kTileRows * ldacc + kTileRows, c_stride);
            }
            const std::uint32_t* b0 = x_panels + (j / kTileRows * pairs_pad + k0 / 2) * panel_words;
            const std::uint32_t* b1 = b0 + pairs_pad * panel_words;
            for (std::int64_t s = 0; s < steps; ++s) {
                const std::uint16_t* a0 = w_piece + s * kBlockRows * kTileK;
                Tiles::template load<4>(a0, a_stride);
                Tiles::template load<5>(a0 + kTileRows * kTileK, a_stride);
                Tiles::template load<6>(b0 + s * kTileK / 2 * panel_words, b_stride);
                Tiles::template load<7>(b1 + s * kTileK / 2 * panel_words, b_stride);
                Tiles::template dot_bf16<0, 4, 6>();
                Tiles::template dot_bf16<1, 4, 7>();
                Tiles::template dot_bf16<2, 5, 6>();
                Tiles::template dot_bf16<3, 5, 7>();
            }
            Tiles::template store<0>(c, c_stride);
            Tiles::template store<1>(c + kTileRows, c_stride);
            Tiles::template store<2>(c + kTileRows * ldacc, c_stride);
            Tiles::template store<3>(c + kTileRows * ldacc + kTileRows, c_stride);
        }
    }
}

}  // namespace tiles

// y [m, out] = x [m, in] W^T + b for bf16 W on tiles; to_pairs(x_row, pairs, out) rounds x to bf16 pairs
// (see GenericSimd::to_bf16_pairs). Any shape: ragged edges are zero-padded.
template <class Tiles, class ToPairs>
inline void gemm_bf16_tiles(ThreadPool& pool, const float* x, std::int64_t ldx, std::int64_t m, const WeightMatrix& w,
                            const float* bias, float* y, std::int64_t ldy, const ToPairs& to_pairs) {
    using namespace tiles;
    const std::int64_t n = w.rows, k = w.cols;
    const std::int64_t k_pad = round_up(k, kTileK), pairs_pad = k_pad / 2, m_pad = round_up(m, kBlockCols);
    std::uint32_t* x_panels = scratch_buffer<std::uint32_t>(0, std::size_t(m_pad * pairs_pad));
    pool.parallel_for(std::size_t(m_pad / kTileRows), 1, [&](std::size_t begin, std::size_t end) {
        std::uint32_t* row_pairs = scratch_buffer<std::uint32_t>(1, std::size_t(pairs_pad));
        for (std::size_t panel = begin; panel < end; ++panel)
            pack_x_panel(x, ldx, m, k, pairs_pad, std::int64_t(panel), to_pairs, row_pairs,
                         x_panels + std::int64_t(panel) * pairs_pad * kTileRows);
    });
    const std::uint16_t* wd = w.as<std::uint16_t>();
    // Rows of x per chunk: as many as keep the chunk's bf16 x in L2 while every W block passes over it.
    const std::int64_t chunk_cols =
        std::clamp(kChunkBytes / (k_pad * 2) / kBlockCols * kBlockCols, kBlockCols, std::int64_t(512));
    for (std::int64_t i0 = 0; i0 < m_pad; i0 += chunk_cols) {
        const std::int64_t cols = std::min(chunk_cols, m_pad - i0);
        parallel_chunks(pool, std::size_t((n + kBlockRows - 1) / kBlockRows), [&](std::size_t block) {
            const std::int64_t n0 = std::int64_t(block) * kBlockRows, rows = std::min(kBlockRows, n - n0);
            std::uint16_t* w_piece = scratch_buffer<std::uint16_t>(1, std::size_t(kBlockRows * kPassK));
            float* acc = scratch_buffer<float>(1, std::size_t(kBlockRows * cols));
            Tiles::configure(full_tiles(8));
            block_product<Tiles>(wd, k, n0, rows, x_panels + i0 * pairs_pad, pairs_pad, cols, w_piece, acc, cols);
            Tiles::release();
            for (std::int64_t i = 0; i < std::min(cols, m - i0); ++i) {
                float* y_row = y + (i0 + i) * ldy + n0;
                for (std::int64_t r = 0; r < rows; ++r) y_row[r] = acc[r * cols + i] + (bias ? bias[n0 + r] : 0.0f);
            }
        });
    }
}

}  // namespace fusionlm::kernels
