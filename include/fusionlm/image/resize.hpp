#pragma once
// Pillow's resampling of 8-bit images (Image.resize without reducing_gap, libImaging/Resample.c),
// reproduced bit for bit: separable convolution, horizontal pass first, filter support scaled by the
// downscale factor (antialiasing), coefficients normalised in double then rounded to 22-bit fixed
// point, integer accumulation with rounding, clipping to 0..255 after each pass.
//
// Channels are filtered independently; unlike PIL's RGBA/LA resize there is no premultiplication
// (the processors composite or drop alpha before resizing).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "image.hpp"

namespace fusionlm {

// PIL's numbering, as `resample` appears in preprocessor_config.json.
enum class Resample : int { Nearest = 0, Lanczos = 1, Bilinear = 2, Bicubic = 3, Box = 4, Hamming = 5 };

namespace detail {

inline constexpr int kResamplePrecisionBits = 32 - 8 - 2;

// Pillow's C is compiled without FMA contraction; a volatile round trip keeps ours from fusing a
// product into the following add (GCC contracts across statements at -march with FMA).
inline double fp_round(double x) {
    volatile double v = x;
    return v;
}

inline double filter_support(Resample f) {
    switch (f) {
        case Resample::Box: return 0.5;
        case Resample::Bilinear: case Resample::Hamming: return 1.0;
        case Resample::Bicubic: return 2.0;
        case Resample::Lanczos: return 3.0;
        case Resample::Nearest: break;
    }
    throw UnsupportedError("resample filter " + std::to_string(int(f)) + " has no convolution kernel");
}

inline double sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * std::numbers::pi;
    return std::sin(x) / x;
}

inline double filter_value(Resample f, double x) {
    switch (f) {
        case Resample::Box: return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
        case Resample::Bilinear:
            if (x < 0.0) x = -x;
            return x < 1.0 ? 1.0 - x : 0.0;
        case Resample::Hamming: {
            if (x < 0.0) x = -x;
            if (x == 0.0) return 1.0;
            if (x >= 1.0) return 0.0;
            x = x * std::numbers::pi;
            return std::sin(x) / x * (0.54f + fp_round(0.46f * std::cos(x)));
        }
        case Resample::Bicubic: {
            constexpr double a = -0.5;
            if (x < 0.0) x = -x;
            if (x < 1.0) return fp_round(fp_round(fp_round((a + 2.0) * x) - (a + 3.0)) * x * x) + 1;
            if (x < 2.0) return (fp_round(fp_round(fp_round((x - 5) * x) + 8) * x) - 4) * a;
            return 0.0;
        }
        case Resample::Lanczos: return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0;
        case Resample::Nearest: break;
    }
    return 0.0;
}

// Fixed-point taps of one axis: output i reads inputs first[i] .. first[i] + count[i] - 1 with
// weights[i * ksize + j].
struct ResampleTaps {
    int ksize = 0;
    std::vector<int> first, count;
    std::vector<std::int32_t> weights;
};

inline ResampleTaps resample_taps(int in_size, int out_size, Resample f) {
    const double scale = double(float(in_size)) / out_size;
    const double filterscale = std::max(scale, 1.0);
    const double support = filter_support(f) * filterscale;
    ResampleTaps t;
    t.ksize = int(std::ceil(support)) * 2 + 1;
    t.first.resize(std::size_t(out_size));
    t.count.resize(std::size_t(out_size));
    t.weights.assign(std::size_t(out_size) * std::size_t(t.ksize), 0);
    std::vector<double> k(std::size_t(t.ksize));
    for (int xx = 0; xx < out_size; ++xx) {
        const double center = fp_round((xx + 0.5) * scale);
        const double ss = 1.0 / filterscale;
        const int xmin = std::max(int(center - support + 0.5), 0);
        const int xmax = std::min(int(center + support + 0.5), in_size) - xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; ++x) {
            const double w = filter_value(f, fp_round((x + xmin - center + 0.5) * ss));
            k[std::size_t(x)] = w;
            ww += w;
        }
        std::int32_t* out = &t.weights[std::size_t(xx) * std::size_t(t.ksize)];
        for (int x = 0; x < xmax; ++x) {
            const double v = ww != 0.0 ? k[std::size_t(x)] / ww : k[std::size_t(x)];
            const double fixed = v * (1 << kResamplePrecisionBits);
            out[x] = std::int32_t(v < 0 ? -0.5 + fixed : 0.5 + fixed);
        }
        t.first[std::size_t(xx)] = xmin;
        t.count[std::size_t(xx)] = std::max(xmax, 0);
    }
    return t;
}

inline std::uint8_t clip_fixed(std::int32_t acc) {
    return std::uint8_t(std::clamp(acc >> kResamplePrecisionBits, 0, 255));
}

// Resamples `rows` rows of width src_w starting at row `row0` along x into dst (rows x dst_w).
template <int C>
void resample_horizontal(const std::uint8_t* src, int src_w, int row0, int rows, const ResampleTaps& t,
                         std::uint8_t* dst, int dst_w) {
    constexpr std::int32_t half = 1 << (kResamplePrecisionBits - 1);
    for (int r = 0; r < rows; ++r) {
        const std::uint8_t* in = src + std::size_t(row0 + r) * std::size_t(src_w) * C;
        std::uint8_t* out = dst + std::size_t(r) * std::size_t(dst_w) * C;
        for (int xx = 0; xx < dst_w; ++xx) {
            const std::int32_t* k = &t.weights[std::size_t(xx) * std::size_t(t.ksize)];
            const std::uint8_t* p = in + std::size_t(t.first[std::size_t(xx)]) * C;
            const int n = t.count[std::size_t(xx)];
            std::int32_t acc[C];
            for (int c = 0; c < C; ++c) acc[c] = half;
            for (int x = 0; x < n; ++x)
                for (int c = 0; c < C; ++c) acc[c] += std::int32_t(p[x * C + c]) * k[x];
            for (int c = 0; c < C; ++c) out[std::size_t(xx) * C + std::size_t(c)] = clip_fixed(acc[c]);
        }
    }
}

// Resamples along y: output row yy mixes input rows first[yy] - row_offset ...; row_len = width * C.
inline void resample_vertical(const std::uint8_t* src, std::size_t row_len, int row_offset, const ResampleTaps& t,
                              std::uint8_t* dst, int dst_h) {
    constexpr std::int32_t half = 1 << (kResamplePrecisionBits - 1);
    std::vector<std::int32_t> acc(row_len);
    for (int yy = 0; yy < dst_h; ++yy) {
        std::fill(acc.begin(), acc.end(), half);
        const std::int32_t* k = &t.weights[std::size_t(yy) * std::size_t(t.ksize)];
        const int first = t.first[std::size_t(yy)] - row_offset;
        for (int y = 0; y < t.count[std::size_t(yy)]; ++y) {
            const std::uint8_t* row = src + std::size_t(first + y) * row_len;
            const std::int32_t w = k[y];
            for (std::size_t j = 0; j < row_len; ++j) acc[j] += std::int32_t(row[j]) * w;
        }
        std::uint8_t* out = dst + std::size_t(yy) * row_len;
        for (std::size_t j = 0; j < row_len; ++j) out[j] = clip_fixed(acc[j]);
    }
}

template <int C>
Image resize_channels(const Image& src, int width, int height, Resample filter) {
    const bool need_h = width != src.width, need_v = height != src.height;
    Image out{width, height, C, {}};
    if (!need_h && !need_v) {
        out.pixels = src.pixels;
        return out;
    }
    const ResampleTaps vt = resample_taps(src.height, height, filter);
    // Only the input rows the vertical pass reads are resampled horizontally, as in Pillow.
    int row_first = 0, row_last = src.height;
    if (need_v) {
        row_first = vt.first.front();
        row_last = vt.first.back() + vt.count.back();
    }
    const std::uint8_t* rows = src.pixels.data();
    int row_offset = 0;
    std::vector<std::uint8_t> temp;
    if (need_h) {
        const ResampleTaps ht = resample_taps(src.width, width, filter);
        const int n = row_last - row_first;
        temp.resize(std::size_t(n) * std::size_t(width) * C);
        resample_horizontal<C>(src.pixels.data(), src.width, row_first, n, ht, temp.data(), width);
        if (!need_v) {
            out.pixels = std::move(temp);
            return out;
        }
        rows = temp.data();
        row_offset = row_first;
    }
    out.pixels.resize(out.size_bytes());
    resample_vertical(rows, std::size_t(width) * C, row_offset, vt, out.pixels.data(), height);
    return out;
}

}  // namespace detail

// Pillow's Image.resize((width, height), filter) on an 8-bit image with 1..4 channels.
inline Image resize(const Image& src, int width, int height, Resample filter) {
    check_image(src, "resize input");
    if (width <= 0 || height <= 0 || width > (1 << 24) || height > (1 << 24))
        throw InputError("resize: invalid target size " + std::to_string(width) + "x" + std::to_string(height));
    detail::filter_support(filter);  // rejects filters without a kernel
    switch (src.channels) {
        case 1: return detail::resize_channels<1>(src, width, height, filter);
        case 2: return detail::resize_channels<2>(src, width, height, filter);
        case 3: return detail::resize_channels<3>(src, width, height, filter);
        default: return detail::resize_channels<4>(src, width, height, filter);
    }
}

}  // namespace fusionlm
