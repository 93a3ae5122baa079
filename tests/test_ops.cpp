// Every op against a plain scalar reference written here (loops, double accumulation), on random inputs
// of awkward sizes, f32 / bf16 / f16 weights, 1 and 2 threads, and every kernel path this CPU supports.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "fusionlm/core/cpu.hpp"
#include "fusionlm/ops/activation.hpp"
#include "fusionlm/ops/attention.hpp"
#include "fusionlm/ops/embedding.hpp"
#include "fusionlm/ops/kv_cache.hpp"
#include "fusionlm/ops/linear.hpp"
#include "fusionlm/ops/norm.hpp"
#include "fusionlm/ops/rope.hpp"
#include "fusionlm/ops/softmax.hpp"
#include "fusionlm/ops/tile_gemm.hpp"

namespace fl = fusionlm;

namespace {

fl::RowMatrix random_matrix(std::int64_t rows, std::int64_t cols, std::mt19937& rng, float scale = 1.0f) {
    std::normal_distribution<float> dist(0.0f, scale);
    fl::RowMatrix m(rows, cols);
    for (std::int64_t i = 0; i < m.size(); ++i) m.data()[i] = dist(rng);
    return m;
}

// A weight stored in a given dtype, with the f32 values it represents (what the reference computes with).
struct StoredWeight {
    std::vector<float> f32;
    std::vector<std::uint16_t> half;
    std::vector<float> values;  // the stored values widened back to f32
    fl::TensorView view;
};

StoredWeight make_weight(fl::DType dtype, std::int64_t out, std::int64_t in, std::mt19937& rng, const std::string& name = "w") {
    StoredWeight w;
    const fl::RowMatrix m = random_matrix(out, in, rng, 0.5f);
    const std::size_t n = std::size_t(out * in);
    w.values.resize(n);
    if (dtype == fl::DType::F32) {
        w.f32.assign(m.data(), m.data() + n);
        w.values = w.f32;
        w.view.data = reinterpret_cast<const std::byte*>(w.f32.data());
    } else {
        w.half.resize(n);
        for (std::size_t i = 0; i < n; ++i) {
            w.half[i] = dtype == fl::DType::BF16 ? fl::f32_to_bf16(m.data()[i]) : fl::f32_to_f16(m.data()[i]);
            w.values[i] = dtype == fl::DType::BF16 ? fl::bf16_to_f32(w.half[i]) : fl::f16_to_f32(w.half[i]);
        }
        w.view.data = reinterpret_cast<const std::byte*>(w.half.data());
    }
    w.view.name = name;
    w.view.dtype = dtype;
    w.view.shape = {out, in};
    return w;
}

std::vector<fl::Isa> supported_isas() {
    std::vector<fl::Isa> isas;
    for (fl::Isa isa : {fl::Isa::Generic, fl::Isa::Avx2, fl::Isa::Avx512})
        if (fl::isa_supported(isa)) isas.push_back(isa);
    return isas;
}

// Checks y against x W^T + b in double; each entry's error is bounded relative to sum |x_k w_k| (the scale
// of rounding in any summation order).
void expect_linear_close(const fl::RowMatrix& x, const StoredWeight& w, const std::vector<float>& bias,
                         const Eigen::Ref<const fl::RowMatrix>& y, double rel, const std::string& what) {
    const std::int64_t out = w.view.shape[0], in = w.view.shape[1];
    ASSERT_EQ(y.rows(), x.rows());
    ASSERT_EQ(y.cols(), out);
    for (std::int64_t r = 0; r < x.rows(); ++r)
        for (std::int64_t o = 0; o < out; ++o) {
            double s = bias.empty() ? 0.0 : bias[std::size_t(o)], mag = std::abs(s);
            for (std::int64_t k = 0; k < in; ++k) {
                const double p = double(x(r, k)) * double(w.values[std::size_t(o * in + k)]);
                s += p;
                mag += std::abs(p);
            }
            ASSERT_NEAR(y(r, o), s, rel * mag + 1e-30) << what << " at (" << r << ", " << o << ")";
        }
}

// x as a bf16 dot-product kernel reads it: rounded to bf16.
fl::RowMatrix rounded_to_bf16(const fl::RowMatrix& x) {
    fl::RowMatrix r(x.rows(), x.cols());
    for (std::int64_t i = 0; i < x.size(); ++i) r.data()[i] = fl::bf16_to_f32(fl::f32_to_bf16(x.data()[i]));
    return r;
}

// The input a path computes with: x itself, for every f32-compute path.
struct ExactInput {
    const fl::RowMatrix& operator()(const fl::RowMatrix& x) const { return x; }
};

// Runs `linear` (x, layer, y) over awkward shapes, the given weight dtypes, with and without bias, 1 and 2
// threads; the reference multiplies input(x) (what the path computes with) by the stored weights.
template <class LinearFn, class Input = ExactInput>
void check_linear_cases(const std::string& path, LinearFn&& linear,
                        std::initializer_list<fl::DType> dtypes = {fl::DType::F32, fl::DType::BF16, fl::DType::F16},
                        Input&& input = {}) {
    std::mt19937 rng(1);
    fl::ThreadPool one(1), two(2);
    struct Case { std::int64_t n, in, out; };
    // Awkward sizes, every short last tile (1 .. 11 rows for 6- and 12-row tiles), plus sizes past the kernel
    // blocking (KC 256, MC 96, NC 256), to cover every edge.
    const Case cases[] = {{1, 1, 1},   {1, 5, 3},     {1, 67, 45},  {1, 133, 70},  {2, 67, 19},  {3, 13, 37},
                          {4, 67, 19}, {7, 133, 45}, {8, 70, 33}, {9, 67, 19}, {10, 13, 37}, {13, 70, 33},
                          {23, 133, 45}, {1, 301, 259}, {101, 301, 275}};
    for (fl::DType dtype : dtypes)
        for (const Case& c : cases)
            for (bool with_bias : {false, true}) {
                const StoredWeight w = make_weight(dtype, c.out, c.in, rng);
                fl::Linear layer{w.view, {}};
                if (with_bias) {
                    const fl::RowMatrix b = random_matrix(1, c.out, rng);
                    layer.bias.assign(b.data(), b.data() + c.out);
                }
                EXPECT_EQ(layer.in_features(), c.in);
                EXPECT_EQ(layer.out_features(), c.out);
                const fl::RowMatrix x = random_matrix(c.n, c.in, rng);
                for (fl::ThreadPool* pool : {&one, &two}) {
                    fl::RowMatrix y = fl::RowMatrix::Constant(c.n, c.out, std::nanf(""));
                    linear(*pool, x, layer, y);
                    const std::string what = path + " " + std::string(fl::dtype_name(dtype)) + " n=" +
                                             std::to_string(c.n) + " in=" + std::to_string(c.in) + " out=" +
                                             std::to_string(c.out) + " threads=" + std::to_string(pool->size());
                    expect_linear_close(input(x), w, layer.bias, y, 1e-5, what);
                }
            }
}

}  // namespace

// The kernel template with the AVX-512 tile geometry (16-float vectors, 12-row tiles) on portable vectors,
// so that geometry is checked on machines without AVX-512 too.
namespace fusionlm::kernels::generic16 {
using Simd = GenericSimd<16, 12>;
#include "fusionlm/ops/simd_kernels.inc"
}  // namespace fusionlm::kernels::generic16

TEST(OpsLinear, MatchesScalarReferenceOnEveryPath) {
    for (fl::Isa isa : supported_isas())
        check_linear_cases(std::string(fl::isa_name(isa)),
                           [isa](fl::ThreadPool& pool, const fl::RowMatrix& x, const fl::Linear& layer, fl::RowMatrix& y) {
                               fl::detail::linear_with(isa, pool, x, layer, y);
                           });
}

TEST(OpsLinear, Avx512GeometryOnPortableVectors) {
    check_linear_cases("generic16", [](fl::ThreadPool& pool, const fl::RowMatrix& x, const fl::Linear& layer,
                                       fl::RowMatrix& y) {
        const fl::WeightMatrix w{layer.weight.data, layer.weight.dtype, layer.weight.shape[0], layer.weight.shape[1]};
        const float* bias = layer.bias.empty() ? nullptr : layer.bias.data();
        auto run = [&]<fl::DType D>() {
            if (x.rows() == 1) fl::kernels::generic16::gemv<D>(pool, x.data(), w, bias, y.data());
            else fl::kernels::generic16::gemm<D>(pool, x.data(), x.cols(), x.rows(), w, bias, y.data(), y.cols());
        };
        if (w.dtype == fl::DType::F32) run.template operator()<fl::DType::F32>();
        else if (w.dtype == fl::DType::BF16) run.template operator()<fl::DType::BF16>();
        else run.template operator()<fl::DType::F16>();
    });
}

// The bf16 dot-product GEMM, in the AVX-512 geometry and the 8-wide one, on portable vectors that do what
// vdpbf16ps does: the reference multiplies x rounded to bf16. An odd `in` (no whole pairs) takes the f32 GEMM.
TEST(OpsLinear, Bf16DotGemmOnPortableVectors) {
    const auto check = [](const std::string& path, auto gemm_bf16_dot, auto gemm_f32) {
        check_linear_cases(
            path,
            [&](fl::ThreadPool& pool, const fl::RowMatrix& x, const fl::Linear& layer, fl::RowMatrix& y) {
                const fl::WeightMatrix w{layer.weight.data, layer.weight.dtype, layer.weight.shape[0],
                                         layer.weight.shape[1]};
                const float* bias = layer.bias.empty() ? nullptr : layer.bias.data();
                if (w.cols % 2 == 0) gemm_bf16_dot(pool, x.data(), x.cols(), x.rows(), w, bias, y.data(), y.cols());
                else gemm_f32(pool, x.data(), x.cols(), x.rows(), w, bias, y.data(), y.cols());
            },
            {fl::DType::BF16}, [](const fl::RowMatrix& x) { return x.cols() % 2 == 0 ? rounded_to_bf16(x) : x; });
    };
    check("generic16 bf16-dot", fl::kernels::generic16::gemm_bf16_dot<>,
          fl::kernels::generic16::gemm<fl::DType::BF16>);
    check("generic bf16-dot", fl::kernels::generic::gemm_bf16_dot<>, fl::kernels::generic::gemm<fl::DType::BF16>);
}

namespace {

// Through linear on a pool set to a bf16 instruction set, where the CPU has it: bf16 weights on inputs the
// path rounds (rounded(x)) match the reference on x rounded to bf16, everything else computes in f32.
// False where the CPU lacks the set, after checking that set_isa refuses it.
template <class Rounded>
bool check_bf16_path_on_this_cpu(fl::Isa isa, Rounded&& rounded) {
    if (!fl::isa_supported(isa)) {
        fl::ThreadPool pool(1);
        EXPECT_THROW(pool.set_isa(isa), fl::UnsupportedError);
        return false;
    }
    const auto run = [isa](fl::ThreadPool& pool, const fl::RowMatrix& x, const fl::Linear& layer, fl::RowMatrix& y) {
        pool.set_isa(isa);
        fl::linear(pool, x, layer, y);
    };
    const std::string name(fl::isa_name(isa));
    check_linear_cases(name, run, {fl::DType::BF16},
                       [&](const fl::RowMatrix& x) { return rounded(x) ? rounded_to_bf16(x) : x; });
    check_linear_cases(name + " f32/f16 weights", run, {fl::DType::F32, fl::DType::F16});
    return true;
}

}  // namespace

// vdpbf16ps takes bf16 weights with an even `in` and more than 3 rows.
TEST(OpsLinear, Bf16DotPathOnThisCpu) {
    if (!check_bf16_path_on_this_cpu(fl::Isa::Avx512Bf16,
                                     [](const fl::RowMatrix& x) { return x.rows() > 3 && x.cols() % 2 == 0; }))
        GTEST_SKIP() << "this CPU has no AVX-512-BF16";
}

// The AVX2 pieces the AVX-512-BF16 kernel shares (rounding to bf16 pairs, packing pairs) against the
// portable ones, bit for bit, ties, NaN, infinities and denormals included.
TEST(OpsLinear, Bf16PairRoundingAndPackingMatchPortable) {
#ifdef FUSIONLM_X86_KERNELS
    if (!fl::isa_supported(fl::Isa::Avx2)) GTEST_SKIP() << "this CPU has no AVX2";
    std::mt19937 rng(6);
    std::vector<float> x(2 * 37);
    for (float& v : x) v = std::normal_distribution<float>(0.0f, 3.0f)(rng);
    const float specials[] = {std::nanf(""), -std::nanf(""), std::numeric_limits<float>::infinity(),
                              -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min(),
                              -1e-40f, 0.0f, -0.0f, std::bit_cast<float>(0x3f808000u), std::bit_cast<float>(0x3f818000u),
                              std::numeric_limits<float>::max(), 1.0f + 1.0f / 512};
    std::copy(std::begin(specials), std::end(specials), x.begin() + 3);
    std::vector<std::uint32_t> want(37), got(37);
    fl::kernels::generic::Simd::to_bf16_pairs(x.data(), 37, want.data());
    fl::kernels::avx2::to_bf16_pairs_avx(x.data(), 37, got.data());
    EXPECT_EQ(got, want);

    const std::int64_t ld = 2 * 21 + 6, kc = 21, stride = 16;
    std::vector<std::uint16_t> w(std::size_t(8 * ld));
    for (auto& h : w) h = std::uint16_t(rng());
    std::vector<std::uint32_t> packed_want(std::size_t(kc * stride)), packed_got(packed_want.size());
    fl::kernels::generic::Simd::pack8_pairs(w.data() + 2, ld, kc, packed_want.data(), stride);
    fl::kernels::avx2::pack8_pairs_avx(w.data() + 2, ld, kc, packed_got.data(), stride);
    EXPECT_EQ(packed_got, packed_want);
#else
    GTEST_SKIP() << "not an x86 build";
#endif
}

// The portable vdpbf16ps step: high pair products first, each step rounded to f32, denormal inputs as zero.
TEST(OpsLinear, PortableBf16DotFollowsTheInstruction) {
    using S = fl::kernels::generic::Simd;
    const auto pair = [](float lo, float hi) {
        return std::uint32_t(fl::f32_to_bf16(lo)) | std::uint32_t(fl::f32_to_bf16(hi)) << 16;
    };
    S::V acc = S::broadcast(1.0f);
    // 1 + 2^-24 * 1 rounds back to 1 before the low product (2^-23 * 1) is added: high first, then low.
    acc = S::dot_bf16(acc, S::broadcast_pair(pair(0x1p-23f, 0x1p-24f)), S::broadcast_pair(pair(1.0f, 1.0f)));
    EXPECT_EQ(acc.v[0], 1.0f + 0x1p-23f);
    // A denormal bf16 input reads as zero: 1e-39 * 2^100 would be about 1.3e-9.
    const std::uint32_t denormal = std::uint32_t(0x000bu);
    acc = S::dot_bf16(S::zero(), S::broadcast_pair(denormal), S::broadcast_pair(pair(0x1p100f, 0.0f)));
    EXPECT_EQ(acc.v[0], 0.0f);
    // 2^-70 * 2^-70 is below the f32 normal range: flushed to zero.
    acc = S::dot_bf16(S::zero(), S::broadcast_pair(pair(0x1p-70f, 0.0f)), S::broadcast_pair(pair(0x1p-70f, 0.0f)));
    EXPECT_EQ(acc.v[0], 0.0f);
}

// The tile GEMM driver on emulated AMX tiles: x rounded to bf16 for every row count, W read in place (in a
// multiple of 32, whole 32-row blocks) or zero-padded (ragged k or rows), over the shared awkward cases and
// shapes past its blocking (passes of 512 k, chunks of x rows held in L2).
TEST(OpsLinear, TileGemmOnEmulatedTiles) {
    const auto run = [](fl::ThreadPool& pool, const fl::RowMatrix& x, const fl::Linear& layer, fl::RowMatrix& y) {
        const fl::WeightMatrix w{layer.weight.data, layer.weight.dtype, layer.weight.shape[0], layer.weight.shape[1]};
        fl::kernels::gemm_bf16_tiles<fl::kernels::EmulatedTiles>(
            pool, x.data(), x.cols(), x.rows(), w, layer.bias.empty() ? nullptr : layer.bias.data(), y.data(),
            y.cols(), fl::kernels::generic::Simd::to_bf16_pairs);
    };
    check_linear_cases("emulated tiles", run, {fl::DType::BF16}, rounded_to_bf16);

    std::mt19937 rng(9);
    fl::ThreadPool two(2);
    struct Case { std::int64_t n, in, out; };
    for (const Case& c : {Case{33, 64, 96}, Case{5, 544, 64}, Case{70, 1056, 45}, Case{40, 16384, 40}}) {
        const StoredWeight w = make_weight(fl::DType::BF16, c.out, c.in, rng);
        fl::Linear layer{w.view, {}};
        const fl::RowMatrix x = random_matrix(c.n, c.in, rng);
        fl::RowMatrix y = fl::RowMatrix::Constant(c.n, c.out, std::nanf(""));
        run(two, x, layer, y);
        expect_linear_close(rounded_to_bf16(x), w, {}, y, 1e-5,
                            "emulated tiles n=" + std::to_string(c.n) + " in=" + std::to_string(c.in) +
                                " out=" + std::to_string(c.out));
    }
}

// The emulation follows the SDM's tdpbf16ps: even and odd products summed apart, then together, then into
// C, each step rounded to f32; denormal inputs read as zero, denormal results flushed; no tile instruction
// before a configuration.
TEST(OpsLinear, EmulatedTilesFollowTheInstruction) {
    using T = fl::kernels::EmulatedTiles;
    T::release();
    EXPECT_THROW(T::zero<0>(), std::logic_error);
    T::configure(fl::kernels::full_tiles(3));
    const auto pair = [](float lo, float hi) {
        return std::uint32_t(fl::f32_to_bf16(lo)) | std::uint32_t(fl::f32_to_bf16(hi)) << 16;
    };
    std::uint32_t a[16][16] = {}, b[16][16] = {};
    float c[16][16] = {};
    c[0][0] = 1.0f;
    // 2^-24 + 2^-23 is exact, and 1 + 3 * 2^-24 is a tie that rounds to even, 1 + 2^-22; adding the
    // products to C one at a time would give 1 + 2^-23 instead.
    a[0][0] = pair(0x1p-24f, 0x1p-23f);
    b[0][0] = pair(1.0f, 1.0f);
    a[1][0] = std::uint32_t(0x000bu);  // a denormal bf16: read as zero, so 2^100 times it adds nothing
    b[0][1] = pair(0x1p100f, 0.0f);
    a[2][0] = pair(0x1p-70f, 0.0f);  // 2^-140: flushed
    b[0][2] = pair(0x1p-70f, 0.0f);
    a[3][5] = pair(2.0f, 3.0f);  // pair 5 of row 3 meets row 5 of B
    b[5][4] = pair(5.0f, 7.0f);
    T::load<0>(c, sizeof c[0]);
    T::load<1>(a, sizeof a[0]);
    T::load<2>(b, sizeof b[0]);
    T::dot_bf16<0, 1, 2>();
    T::store<0>(c, sizeof c[0]);
    T::release();
    EXPECT_EQ(c[0][0], 1.0f + 0x1p-22f);
    EXPECT_EQ(c[1][1], 0.0f);
    EXPECT_EQ(c[2][2], 0.0f);
    EXPECT_EQ(c[3][4], 2.0f * 5.0f + 3.0f * 7.0f);
    EXPECT_THROW(T::store<0>(c, sizeof c[0]), std::logic_error);
}

// AMX tiles take bf16 weights with more than 3 rows, any `in`.
TEST(OpsLinear, AmxPathOnThisCpu) {
    if (!check_bf16_path_on_this_cpu(fl::Isa::AmxBf16, [](const fl::RowMatrix& x) { return x.rows() > 3; }))
        GTEST_SKIP() << "this CPU (or OS) offers no AMX-BF16";
}

TEST(OpsLinear, StridedInputAndOutputAndConvenienceOverload) {
    std::mt19937 rng(2);
    fl::ThreadPool pool(2);
    for (fl::DType dtype : {fl::DType::F32, fl::DType::BF16}) {
        const StoredWeight w = make_weight(dtype, 29, 41, rng);
        const fl::Linear layer{w.view, {}};
        for (std::int64_t n : {1, 9}) {
            const fl::RowMatrix big_x = random_matrix(n + 2, 50, rng);
            fl::RowMatrix big_y = fl::RowMatrix::Zero(n + 3, 40);
            const auto x = big_x.block(1, 3, n, 41);
            fl::linear(pool, x, layer, big_y.block(2, 5, n, 29));
            expect_linear_close(x, w, {}, big_y.block(2, 5, n, 29), 1e-5, "strided");
            EXPECT_EQ(big_y.block(0, 0, 2, 40).cwiseAbs().maxCoeff(), 0.0f) << "wrote outside the output block";
            EXPECT_EQ(big_y.block(2, 0, n, 5).cwiseAbs().maxCoeff(), 0.0f) << "wrote outside the output block";
            const fl::RowMatrix y = fl::linear(pool, fl::RowMatrix(x), layer);
            expect_linear_close(x, w, {}, y, 1e-5, "returned");
        }
    }
}

TEST(OpsLinear, ShapeErrorsNameTheWeight) {
    std::mt19937 rng(3);
    fl::ThreadPool pool(1);
    const StoredWeight w = make_weight(fl::DType::F32, 4, 6, rng, "model.layers.0.mlp.up_proj.weight");
    fl::Linear layer{w.view, {}};
    fl::RowMatrix y(2, 4);
    try {
        fl::linear(pool, fl::RowMatrix::Zero(2, 5), layer, y);
        FAIL() << "expected ShapeError";
    } catch (const fl::ShapeError& e) {
        EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.up_proj.weight"), std::string::npos) << e.what();
    }
    fl::RowMatrix wrong_y(2, 3);
    EXPECT_THROW(fl::linear(pool, fl::RowMatrix::Zero(2, 6), layer, wrong_y), fl::ShapeError);
    layer.bias.assign(3, 0.0f);
    EXPECT_THROW(fl::linear(pool, fl::RowMatrix::Zero(2, 6), layer, y), fl::ShapeError);
    layer.bias.clear();
    layer.weight.dtype = fl::DType::I64;
    EXPECT_THROW(fl::linear(pool, fl::RowMatrix::Zero(2, 6), layer, y), fl::ShapeError);
    layer.weight.dtype = fl::DType::F32;
    layer.weight.shape = {24};
    EXPECT_THROW(fl::linear(pool, fl::RowMatrix::Zero(2, 6), layer, y), fl::ShapeError);
}

TEST(OpsNorm, RmsNormMatchesReferenceAndMayAlias) {
    std::mt19937 rng(4);
    const fl::RowMatrix x = random_matrix(7, 37, rng, 3.0f);
    const fl::RowMatrix w = random_matrix(1, 37, rng);
    const float eps = 1e-5f;
    fl::RowMatrix y(7, 37);
    fl::rms_norm(x, w.data(), eps, y);
    fl::RowMatrix in_place = x;
    fl::rms_norm(in_place, w.data(), eps, in_place);
    for (int r = 0; r < 7; ++r) {
        double ss = 0;
        for (int c = 0; c < 37; ++c) ss += double(x(r, c)) * x(r, c);
        const double inv = 1.0 / std::sqrt(ss / 37 + eps);
        for (int c = 0; c < 37; ++c) {
            const double ref = double(w(0, c)) * x(r, c) * inv;
            EXPECT_NEAR(y(r, c), ref, 1e-5 * std::abs(ref) + 1e-6);
            EXPECT_EQ(in_place(r, c), y(r, c));
        }
    }
    fl::RowMatrix narrow(7, 36);
    EXPECT_THROW(fl::rms_norm(x, w.data(), eps, narrow), fl::ShapeError);
}

TEST(OpsNorm, LayerNormMatchesReferenceAndMayAlias) {
    std::mt19937 rng(5);
    fl::RowMatrix x = random_matrix(5, 45, rng, 2.0f);
    x.array() += 3.0f;  // a mean far from zero checks the two-pass variance
    const fl::RowMatrix w = random_matrix(1, 45, rng), b = random_matrix(1, 45, rng);
    fl::RowMatrix y(5, 45);
    fl::layer_norm(x, w.data(), b.data(), 1e-5f, y);
    fl::RowMatrix in_place = x;
    fl::layer_norm(in_place, w.data(), b.data(), 1e-5f, in_place);
    for (int r = 0; r < 5; ++r) {
        double mean = 0, var = 0;
        for (int c = 0; c < 45; ++c) mean += x(r, c);
        mean /= 45;
        for (int c = 0; c < 45; ++c) var += (x(r, c) - mean) * (x(r, c) - mean);
        var /= 45;
        for (int c = 0; c < 45; ++c) {
            const double ref = (x(r, c) - mean) / std::sqrt(var + 1e-5) * w(0, c) + b(0, c);
            EXPECT_NEAR(y(r, c), ref, 1e-5 * std::abs(ref) + 2e-6);
            EXPECT_EQ(in_place(r, c), y(r, c));
        }
    }
}

TEST(OpsActivation, EachFunctionMatchesItsFormula) {
    std::mt19937 rng(6);
    const fl::RowMatrix x = random_matrix(3, 53, rng, 4.0f);
    struct Ref { fl::Activation act; double (*f)(double); };
    const Ref refs[] = {
        {fl::Activation::Gelu, [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }},
        {fl::Activation::GeluTanh,
         [](double v) { return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))); }},
        {fl::Activation::Silu, [](double v) { return v / (1 + std::exp(-v)); }},
        {fl::Activation::QuickGelu, [](double v) { return v / (1 + std::exp(-1.702 * v)); }},
        {fl::Activation::Relu, [](double v) { return v > 0 ? v : 0.0; }},
    };
    for (const Ref& ref : refs) {
        fl::RowMatrix y = x;
        fl::apply_activation(ref.act, y);
        for (int i = 0; i < x.size(); ++i) {
            const double e = ref.f(x.data()[i]);
            EXPECT_NEAR(y.data()[i], e, 1e-5 * std::abs(e) + 1e-6) << int(ref.act) << " x=" << x.data()[i];
        }
    }
    // The named entry points and a strided block (only the block changes).
    fl::RowMatrix big = x;
    fl::silu(big.block(1, 2, 2, 40));
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 53; ++c) {
            const bool inside = r >= 1 && c >= 2 && c < 42;
            const double e = inside ? x(r, c) / (1 + std::exp(-double(x(r, c)))) : x(r, c);
            EXPECT_NEAR(big(r, c), e, 1e-5 * std::abs(e) + 1e-6);
        }
}

TEST(OpsActivation, ParsesHuggingFaceNames) {
    EXPECT_EQ(fl::parse_activation("gelu"), fl::Activation::Gelu);
    EXPECT_EQ(fl::parse_activation("gelu_pytorch_tanh"), fl::Activation::GeluTanh);
    EXPECT_EQ(fl::parse_activation("gelu_new"), fl::Activation::GeluTanh);
    EXPECT_EQ(fl::parse_activation("silu"), fl::Activation::Silu);
    EXPECT_EQ(fl::parse_activation("swish"), fl::Activation::Silu);
    EXPECT_EQ(fl::parse_activation("quick_gelu"), fl::Activation::QuickGelu);
    EXPECT_EQ(fl::parse_activation("relu"), fl::Activation::Relu);
    try {
        fl::parse_activation("mish");
        FAIL() << "expected ConfigError";
    } catch (const fl::ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("mish"), std::string::npos);
    }
}

TEST(OpsActivation, SiluMulIsSwiGlu) {
    std::mt19937 rng(7);
    const fl::RowMatrix g = random_matrix(5, 67, rng, 3.0f), u = random_matrix(5, 67, rng);
    fl::RowMatrix out = g;
    fl::silu_mul(out, u);
    for (int i = 0; i < g.size(); ++i) {
        const double e = g.data()[i] / (1 + std::exp(-double(g.data()[i]))) * u.data()[i];
        EXPECT_NEAR(out.data()[i], e, 1e-5 * std::abs(e) + 1e-6);
    }
    EXPECT_THROW(fl::silu_mul(out, fl::RowMatrix(5, 66)), fl::ShapeError);
}

TEST(OpsSoftmax, StableAndDefinedOnMaskedRows) {
    std::mt19937 rng(8);
    fl::RowMatrix x = random_matrix(4, 37, rng, 5.0f);
    x(0, 3) = 1000.0f;  // overflows exp without the max subtraction
    const fl::RowMatrix in = x;
    const float inf = std::numeric_limits<float>::infinity();
    x.row(2).setConstant(-inf);                      // nothing to attend to: zeros
    x.row(3).setConstant(fl::kMaskedValue);          // Hugging Face's masked row: uniform
    x(1, 5) = -inf;                                  // one masked key: probability 0
    fl::softmax_rows(x);
    for (int r : {0, 1}) {
        double mx = -1e300;
        for (int c = 0; c < 37; ++c)
            if (!(r == 1 && c == 5)) mx = std::max(mx, double(in(r, c)));
        double sum = 0;
        for (int c = 0; c < 37; ++c)
            if (!(r == 1 && c == 5)) sum += std::exp(in(r, c) - mx);
        for (int c = 0; c < 37; ++c) {
            const double e = (r == 1 && c == 5) ? 0.0 : std::exp(in(r, c) - mx) / sum;
            EXPECT_NEAR(x(r, c), e, 1e-5 * e + 1e-7);
        }
    }
    for (int c = 0; c < 37; ++c) {
        EXPECT_EQ(x(2, c), 0.0f);
        EXPECT_NEAR(x(3, c), 1.0 / 37, 1e-7);
    }
}

namespace {
// transformers 4.45 / torch 1.13 (f32): _compute_llama3_parameters for head_dim 16, theta 5e5, factor 8,
// low 1, high 4, original_max_position_embeddings 64 (the mllama_tiny config), and cos / sin of the
// rotary embedding at position 123456.
const float kLlama3InvFreq[8] = {0x1.000000p+0f,  0x1.453c18p-4f,  0x1.341190p-8f,  0x1.ddee9ep-11f,
                                 0x1.72ba42p-13f, 0x1.1f91f0p-15f, 0x1.be2188p-18f, 0x1.5a0f4ep-20f};
const float kCos123456[8] = {-0x1.583708p-1f, 0x1.10a444p-1f, -0x1.4eab48p-1f, 0x1.b2a0a0p-1f,
                             -0x1.f8e060p-1f, -0x1.d908fep-2f, 0x1.5d0722p-1f, 0x1.f9876ep-1f};
const float kSin123456[8] = {-0x1.7b066ep-1f, 0x1.b15f02p-1f, 0x1.837ad6p-1f, -0x1.0ea26ap-1f,
                             0x1.5470dap-3f, -0x1.c618a6p-1f, 0x1.76990ep-1f, 0x1.4493d4p-3f};
}  // namespace

TEST(OpsRope, Llama3FrequenciesMatchTheReference) {
    const fl::RopeScaling scaling{"llama3", 8.0f, 1.0f, 4.0f, 64};
    const fl::Rope rope(16, 5e5, &scaling);
    ASSERT_EQ(rope.inv_freq().size(), 8u);
    for (int i = 0; i < 8; ++i) EXPECT_NEAR(rope.inv_freq()[std::size_t(i)], kLlama3InvFreq[i], 2e-7 * kLlama3InvFreq[i]);
    // Rotating the unit vectors e_i and e_{i+8} by position 123456 reads out cos and sin.
    fl::RowMatrix x = fl::RowMatrix::Zero(2, 16);
    for (int i = 0; i < 8; ++i) x(0, i) = 1.0f;
    for (int i = 8; i < 16; ++i) x(1, i) = 1.0f;
    const std::int64_t pos[] = {123456, 123456};
    rope.apply(x, 1, pos);
    for (int i = 0; i < 8; ++i) {
        EXPECT_NEAR(x(0, i), kCos123456[i], 2e-6);     // x1 * cos
        EXPECT_NEAR(x(0, i + 8), kSin123456[i], 2e-6);  // x1 * sin
        EXPECT_NEAR(x(1, i), -kSin123456[i], 2e-6);     // -x2 * sin
        EXPECT_NEAR(x(1, i + 8), kCos123456[i], 2e-6);  // x2 * cos
    }
}

TEST(OpsRope, HalfSplitRotationMatchesReference) {
    std::mt19937 rng(9);
    const int d = 22, heads = 3;
    const fl::Rope rope(d, 10000.0, nullptr);
    const fl::RowMatrix x = random_matrix(5, heads * d, rng);
    const std::int64_t pos[] = {0, 1, 7, 300, 2};
    fl::RowMatrix y = x;
    rope.apply(y, heads, pos);
    for (int s = 0; s < 5; ++s)
        for (int h = 0; h < heads; ++h)
            for (int i = 0; i < d / 2; ++i) {
                const double f = 1.0 / std::pow(10000.0, 2.0 * i / d), a = double(pos[s]) * f;
                const double x1 = x(s, h * d + i), x2 = x(s, h * d + i + d / 2);
                // Angles up to 300 rad: f32 rounding of the angle allows ~300 * 6e-8 of phase error.
                EXPECT_NEAR(y(s, h * d + i), x1 * std::cos(a) - x2 * std::sin(a), 1e-4);
                EXPECT_NEAR(y(s, h * d + i + d / 2), x2 * std::cos(a) + x1 * std::sin(a), 1e-4);
            }
    EXPECT_THROW(rope.apply(y, 2, pos), fl::ShapeError);
    EXPECT_THROW(rope.apply(y, heads, std::span<const std::int64_t>(pos, 4)), fl::ShapeError);
    const fl::RopeScaling yarn{"yarn", 4.0f, 1.0f, 4.0f, 64};
    EXPECT_THROW(fl::Rope(16, 1e4, &yarn), fl::ConfigError);
    EXPECT_THROW(fl::Rope(15, 1e4, nullptr), fl::ConfigError);
}

namespace {
// Scalar attention in double: per query head, softmax(q k^T / sqrt(d) + mask) v.
fl::RowMatrix attention_reference(const fl::RowMatrix& q, const fl::RowMatrix& k, const fl::RowMatrix& v, int hq,
                                  int hkv, const float* mask) {
    const int d = int(q.cols()) / hq, g = hq / hkv;
    const auto sq = q.rows(), sk = k.rows();
    fl::RowMatrix out(sq, q.cols());
    std::vector<double> p(static_cast<std::size_t>(sk));
    for (int h = 0; h < hq; ++h) {
        const int j = h / g;
        for (Eigen::Index i = 0; i < sq; ++i) {
            double mx = -1e300;
            for (Eigen::Index t = 0; t < sk; ++t) {
                double s = 0;
                for (int c = 0; c < d; ++c) s += double(q(i, h * d + c)) * k(t, j * d + c);
                s = s / std::sqrt(double(d)) + (mask ? double(mask[i * sk + t]) : 0.0);
                p[std::size_t(t)] = s;
                mx = std::max(mx, s);
            }
            double sum = 0;
            for (auto& e : p) sum += (e = std::exp(e - mx));
            for (int c = 0; c < d; ++c) {
                double o = 0;
                for (Eigen::Index t = 0; t < sk; ++t) o += p[std::size_t(t)] / sum * v(t, j * d + c);
                out(i, h * d + c) = float(o);
            }
        }
    }
    return out;
}
}  // namespace

TEST(OpsAttention, GroupedQueryHeadsWithMasksMatchReference) {
    std::mt19937 rng(10);
    fl::ThreadPool one(1), two(2);
    struct Case { std::int64_t sq, sk; int hq, hkv, d; bool causal; };
    const Case cases[] = {{1, 1, 2, 1, 8, false},   {1, 23, 6, 2, 12, false}, {13, 13, 4, 2, 10, true},
                          {37, 53, 6, 3, 12, false}, {131, 131, 3, 1, 6, true}, {5, 70, 4, 4, 9, false},
                          // Unmasked with 256 query rows or more runs on the packed GEMM kernels: blocks of 256
                          // and a short last one, grouped heads, a head size that is no whole vector.
                          {300, 267, 4, 2, 20, false}};
    for (const Case& c : cases)
        for (fl::ThreadPool* pool : {&one, &two}) {
            const fl::RowMatrix q = random_matrix(c.sq, c.hq * c.d, rng), k = random_matrix(c.sk, c.hkv * c.d, rng),
                                v = random_matrix(c.sk, c.hkv * c.d, rng);
            fl::RowMatrix mask;
            if (c.causal) {
                std::vector<std::int64_t> key_mask(std::size_t(c.sk), 1);
                key_mask[0] = key_mask[1] = 0;  // left padding: rows 0 and 1 see nothing (uniform, finite)
                mask = fl::causal_mask(c.sq, c.sk - c.sq, key_mask);
            } else {
                mask = fl::RowMatrix::Zero(c.sq, c.sk);
                std::uniform_int_distribution<int> coin(0, 3);
                for (Eigen::Index i = 0; i < mask.size(); ++i)
                    if (coin(rng) == 0) mask.data()[i] = -std::numeric_limits<float>::infinity();
                mask.col(0).setZero();  // every query sees at least one key
            }
            fl::RowMatrix out(c.sq, c.hq * c.d);
            fl::attention(*pool, q, k, v, c.hq, c.hkv, mask.data(), out);
            const fl::RowMatrix ref = attention_reference(q, k, v, c.hq, c.hkv, mask.data());
            EXPECT_LE((out - ref).cwiseAbs().maxCoeff(), 1e-5 * std::max(1.0f, ref.cwiseAbs().maxCoeff()))
                << "sq=" << c.sq << " sk=" << c.sk << " threads=" << pool->size();
            EXPECT_TRUE(out.allFinite());
            // Without a mask.
            fl::attention(*pool, q, k, v, c.hq, c.hkv, nullptr, out);
            const fl::RowMatrix ref_nomask = attention_reference(q, k, v, c.hq, c.hkv, nullptr);
            EXPECT_LE((out - ref_nomask).cwiseAbs().maxCoeff(), 1e-5 * std::max(1.0f, ref_nomask.cwiseAbs().maxCoeff()));
        }
}

TEST(OpsAttention, RejectsMismatchedHeads) {
    fl::ThreadPool pool(1);
    fl::RowMatrix q(3, 24), k(4, 12), v(4, 12), out(3, 24);
    EXPECT_THROW(fl::attention(pool, q, k, v, 4, 3, nullptr, out), fl::ShapeError);
    EXPECT_THROW(fl::attention(pool, q, k, v, 4, 1, nullptr, out), fl::ShapeError);
    EXPECT_THROW(fl::attention(pool, q, k, fl::RowMatrix(5, 12), 4, 2, nullptr, out), fl::ShapeError);
    fl::RowMatrix wrong(3, 20);
    EXPECT_THROW(fl::attention(pool, q, k, v, 4, 2, nullptr, wrong), fl::ShapeError);
}

TEST(OpsAttention, CausalMaskUsesHuggingFaceValue) {
    const std::int64_t key_mask[] = {0, 1, 1, 1, 1};
    const fl::RowMatrix m = fl::causal_mask(3, 2, key_mask);
    ASSERT_EQ(m.rows(), 3);
    ASSERT_EQ(m.cols(), 5);
    const float lo = std::numeric_limits<float>::lowest();
    const float expected[3][5] = {{lo, 0, 0, lo, lo}, {lo, 0, 0, 0, lo}, {lo, 0, 0, 0, 0}};
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 5; ++j) EXPECT_EQ(m(i, j), expected[i][j]) << i << "," << j;
    const fl::RowMatrix plain = fl::causal_mask(2, 0);
    EXPECT_EQ(plain(0, 0), 0.0f);
    EXPECT_EQ(plain(0, 1), lo);
    EXPECT_EQ(plain(1, 1), 0.0f);
    EXPECT_THROW(fl::causal_mask(3, 2, std::span<const std::int64_t>(key_mask, 4)), fl::ShapeError);
}

TEST(OpsKvCache, AppendsAndGrowsGeometrically) {
    std::mt19937 rng(11);
    fl::KvCache cache(12, 2);
    fl::RowMatrix all_k(0, 12), all_v(0, 12);
    int growths = 0;
    std::int64_t capacity = cache.capacity();
    const fl::RowMatrix prompt_k = random_matrix(5, 12, rng), prompt_v = random_matrix(5, 12, rng);
    cache.append(prompt_k, prompt_v);
    fl::RowMatrix ref_k = prompt_k, ref_v = prompt_v;
    for (int t = 0; t < 200; ++t) {
        const fl::RowMatrix k = random_matrix(1, 12, rng), v = random_matrix(1, 12, rng);
        cache.append(k, v);
        if (cache.capacity() != capacity) {
            ++growths;
            capacity = cache.capacity();
        }
        ref_k.conservativeResize(ref_k.rows() + 1, Eigen::NoChange);
        ref_v.conservativeResize(ref_v.rows() + 1, Eigen::NoChange);
        ref_k.bottomRows(1) = k;
        ref_v.bottomRows(1) = v;
    }
    EXPECT_EQ(cache.size(), 205);
    EXPECT_LE(growths, 7);  // doubling: 5 -> 10 -> ... -> 320
    EXPECT_EQ(cache.keys().rows(), 205);
    EXPECT_TRUE(cache.keys() == ref_k);
    EXPECT_TRUE(cache.values() == ref_v);
    EXPECT_THROW(cache.append(fl::RowMatrix(1, 11), fl::RowMatrix(1, 11)), fl::ShapeError);
    cache.clear();
    EXPECT_EQ(cache.size(), 0);
    EXPECT_EQ(cache.keys().rows(), 0);
}

TEST(OpsEmbedding, GathersRowsOfEveryDtype) {
    std::mt19937 rng(12);
    for (fl::DType dtype : {fl::DType::F32, fl::DType::BF16, fl::DType::F16}) {
        const StoredWeight table = make_weight(dtype, 19, 13, rng, "model.embed_tokens.weight");
        const std::int64_t ids[] = {3, 0, 18, 3};
        fl::RowMatrix out(4, 13);
        fl::embedding_lookup(table.view, ids, out);
        for (int i = 0; i < 4; ++i)
            for (int c = 0; c < 13; ++c) EXPECT_EQ(out(i, c), table.values[std::size_t(ids[i] * 13 + c)]);
        const std::int64_t bad[] = {2, 19};
        fl::RowMatrix out2(2, 13);
        try {
            fl::embedding_lookup(table.view, bad, out2);
            FAIL() << "expected InputError";
        } catch (const fl::InputError& e) {
            EXPECT_NE(std::string(e.what()).find("model.embed_tokens.weight"), std::string::npos) << e.what();
        }
        const std::int64_t negative[] = {-1};
        fl::RowMatrix out1(1, 13);
        EXPECT_THROW(fl::embedding_lookup(table.view, negative, out1), fl::InputError);
    }
}
