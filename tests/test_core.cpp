// Core: dtype conversions against their bit-level definitions, and the thread pool.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "fusionlm/core/dtype.hpp"
#include "fusionlm/core/tensor.hpp"
#include "fusionlm/core/threads.hpp"

using namespace fusionlm;

TEST(DType, Bf16RoundsToNearestEven) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even mantissa.
    EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    EXPECT_EQ(f32_to_bf16(1.0f + 0x1p-7f + 0x1p-8f), 0x3f82);
    EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
    // A NaN whose payload lives only in the low bits must stay NaN, not become Inf.
    EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::bit_cast<float>(0x7f800001u)))));
}

TEST(DType, F16RoundTripAndSpecials) {
    for (std::uint32_t h = 0; h < 0x10000; ++h) {
        const float f = f16_to_f32(std::uint16_t(h));
        if (std::isnan(f)) {
            EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
            continue;
        }
        ASSERT_EQ(f32_to_f16(f), h) << "half bits " << h;
    }
    EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds past the largest finite half
    EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
    EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);  // halfway to the smallest subnormal: ties to even
    EXPECT_EQ(f32_to_f16(0x1.8p-25f), 0x0001);
}

TEST(Threads, ParallelForCoversEveryIndexOnce) {
    for (int threads : {1, 2, 3}) {
        ThreadPool pool(threads);
        EXPECT_EQ(pool.size(), threads);
        for (std::size_t n : {0u, 1u, 7u, 100u, 1001u}) {
            std::vector<std::atomic<int>> hits(n);
            pool.parallel_for(n, 8, [&](std::size_t b, std::size_t e) {
                for (std::size_t i = b; i < e; ++i) hits[i]++;
            });
            for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1);
        }
    }
}

TEST(Threads, ExceptionsReachTheCaller) {
    ThreadPool pool(2);
    EXPECT_THROW(pool.run([](int t) { if (t == 1) throw std::runtime_error("worker"); }),
                 std::runtime_error);
    int calls = 0;
    pool.run([&](int t) { if (t == 0) ++calls; });
    EXPECT_EQ(calls, 1);
}
