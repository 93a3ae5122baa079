#pragma once
// Conversions of decoded images to 3-channel RGB, as the reference processors do them with Pillow.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "image.hpp"

namespace fusionlm {

// Pillow's Image.alpha_composite(white, image.convert("RGBA")).convert("RGB") for straight alpha
// (its 7-bit fixed-point blend; exact for every value/alpha pair). Mllama's convert_to_rgb.
inline std::uint8_t composite_over_white(std::uint8_t value, std::uint8_t alpha) {
    if (alpha == 0) return 255;
    // Background alpha is 255, so Pillow's coef1 = alpha * 128 and coef2 = (255 - alpha) * 128.
    const std::uint32_t tmp = std::uint32_t(value) * alpha * 128u + 255u * (255u - alpha) * 128u + (0x80u << 7);
    return std::uint8_t((((tmp >> 8) + tmp) >> 8) >> 7);
}

// RGBA/LA are composited onto white, gray is replicated, RGB is copied.
inline Image to_rgb_over_white(const Image& src, std::string_view name) {
    check_image(src, name);
    if (src.channels == 3) return src;
    Image out{src.width, src.height, 3, std::vector<std::uint8_t>(std::size_t(src.width) * std::size_t(src.height) * 3)};
    const std::size_t n = std::size_t(src.width) * std::size_t(src.height);
    const std::uint8_t* p = src.pixels.data();
    std::uint8_t* q = out.pixels.data();
    switch (src.channels) {
        case 1:
            for (std::size_t i = 0; i < n; ++i) q[3 * i] = q[3 * i + 1] = q[3 * i + 2] = p[i];
            break;
        case 2:
            for (std::size_t i = 0; i < n; ++i) q[3 * i] = q[3 * i + 1] = q[3 * i + 2] = composite_over_white(p[2 * i], p[2 * i + 1]);
            break;
        default:
            for (std::size_t i = 0; i < n; ++i)
                for (int c = 0; c < 3; ++c) q[3 * i + std::size_t(c)] = composite_over_white(p[4 * i + std::size_t(c)], p[4 * i + 3]);
    }
    return out;
}

// Pillow's image.convert("RGB"): alpha is dropped (no compositing), gray is replicated. CLIP's.
inline Image to_rgb_drop_alpha(const Image& src, std::string_view name) {
    check_image(src, name);
    if (src.channels == 3) return src;
    Image out{src.width, src.height, 3, std::vector<std::uint8_t>(std::size_t(src.width) * std::size_t(src.height) * 3)};
    const std::size_t n = std::size_t(src.width) * std::size_t(src.height);
    const std::size_t c_in = std::size_t(src.channels);
    const std::uint8_t* p = src.pixels.data();
    std::uint8_t* q = out.pixels.data();
    if (src.channels <= 2) {
        for (std::size_t i = 0; i < n; ++i) q[3 * i] = q[3 * i + 1] = q[3 * i + 2] = p[c_in * i];
    } else {
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t c = 0; c < 3; ++c) q[3 * i + c] = p[c_in * i + c];
    }
    return out;
}

}  // namespace fusionlm
