#pragma once
// Structural check of a PNG file before any decoder sees it: chunk framing, every chunk CRC (stb_image
// checks none), IHDR sanity. Gives the dimensions so size limits apply before pixel memory exists.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "../core/error.hpp"

namespace fusionlm {

struct PngInfo {
    std::uint32_t width = 0, height = 0;
    int bit_depth = 0, color_type = 0;
    bool interlaced = false;
};

namespace detail {

inline constexpr std::array<std::uint8_t, 8> kPngSignature = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};

inline constexpr std::array<std::uint32_t, 256> kCrc32Table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t n = 0; n < 256; ++n) {
        std::uint32_t c = n;
        for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        t[n] = c;
    }
    return t;
}();

// CRC-32 as PNG defines it (ISO 3309), over the chunk type and data.
inline std::uint32_t png_crc32(std::span<const std::uint8_t> bytes) {
    std::uint32_t c = 0xffffffffu;
    for (std::uint8_t b : bytes) c = kCrc32Table[(c ^ b) & 0xffu] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

inline std::uint32_t read_be32(const std::uint8_t* p) {
    return std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | std::uint32_t(p[2]) << 8 | p[3];
}

}  // namespace detail

inline bool is_png(std::span<const std::uint8_t> bytes) {
    if (bytes.size() < detail::kPngSignature.size()) return false;
    for (std::size_t i = 0; i < detail::kPngSignature.size(); ++i)
        if (bytes[i] != detail::kPngSignature[i]) return false;
    return true;
}

// Walks the chunks from the signature to IEND (bytes after IEND are ignored, as Pillow does) and
// throws InputError naming `name` on any damage: truncation, bad CRC, missing IHDR/IDAT, zero size.
inline PngInfo check_png(std::span<const std::uint8_t> bytes, std::string_view name) {
    const auto fail = [&](const std::string& why) -> InputError {
        return InputError("image '" + std::string(name) + "': broken PNG: " + why);
    };
    if (!is_png(bytes)) throw fail("no PNG signature");
    PngInfo info;
    bool seen_ihdr = false, seen_idat = false;
    std::size_t pos = detail::kPngSignature.size();
    for (;;) {
        if (bytes.size() - pos < 12) throw fail(seen_ihdr ? "truncated (no IEND chunk)" : "no IHDR chunk");
        const std::uint32_t length = detail::read_be32(&bytes[pos]);
        const std::uint8_t* type = &bytes[pos + 4];
        std::string type_name;
        for (int i = 0; i < 4; ++i) {
            const char c = char(type[i]);
            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) throw fail("invalid chunk type at byte " + std::to_string(pos + 4));
            type_name += c;
        }
        if (length > 0x7fffffffu || bytes.size() - pos - 12 < length)
            throw fail("chunk " + type_name + " at byte " + std::to_string(pos) + " runs past the end of the file (truncated)");
        const std::uint8_t* data = type + 4;
        const std::uint32_t stored_crc = detail::read_be32(data + length);
        if (detail::png_crc32({type, std::size_t(length) + 4}) != stored_crc)
            throw fail("chunk " + type_name + " at byte " + std::to_string(pos) + " has a bad CRC (damaged data)");
        if (!seen_ihdr) {
            if (type_name != "IHDR" || length != 13) throw fail("first chunk is not a 13-byte IHDR");
            info.width = detail::read_be32(data);
            info.height = detail::read_be32(data + 4);
            info.bit_depth = data[8];
            info.color_type = data[9];
            info.interlaced = data[12] != 0;
            if (info.width == 0 || info.height == 0)
                throw fail("IHDR gives a zero dimension (" + std::to_string(info.width) + "x" + std::to_string(info.height) + ")");
            if (info.width > 0x7fffffffu || info.height > 0x7fffffffu) throw fail("IHDR dimension exceeds 2^31-1");
            seen_ihdr = true;
        } else if (type_name == "IDAT") {
            seen_idat = true;
        } else if (type_name == "IEND") {
            if (!seen_idat) throw fail("no IDAT chunk before IEND");
            return info;
        }
        pos += std::size_t(length) + 12;
    }
}

}  // namespace fusionlm
