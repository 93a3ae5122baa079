#pragma once
// Structural check of a JPEG file before decoding: marker segments inside the file, a frame header,
// and an EOI marker after the scans. stb_image pads a truncated stream with zeros and "succeeds";
// the reference (libjpeg through Pillow) rejects truncated files, and so do we.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "../core/error.hpp"

namespace fusionlm {

struct JpegInfo {
    int width = 0, height = 0, components = 0;
    bool progressive = false;
};

inline bool is_jpeg(std::span<const std::uint8_t> bytes) {
    return bytes.size() >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff;
}

inline JpegInfo check_jpeg(std::span<const std::uint8_t> bytes, std::string_view name) {
    const auto fail = [&](const std::string& why) -> InputError {
        return InputError("image '" + std::string(name) + "': broken JPEG: " + why);
    };
    if (bytes.size() < 2 || bytes[0] != 0xff || bytes[1] != 0xd8) throw fail("no SOI marker");
    const std::size_t n = bytes.size();
    JpegInfo info;
    bool seen_frame = false, seen_scan = false;
    std::size_t pos = 2;
    for (;;) {
        if (pos >= n || bytes[pos] != 0xff)
            throw fail(pos >= n ? "truncated (no EOI marker)" : "expected a marker at byte " + std::to_string(pos));
        while (pos < n && bytes[pos] == 0xff) ++pos;  // fill bytes
        if (pos >= n) throw fail("truncated (no EOI marker)");
        const std::uint8_t marker = bytes[pos++];
        if (marker == 0xd9) {  // EOI
            if (!seen_frame || !seen_scan) throw fail("no image data before EOI");
            return info;
        }
        if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue;  // TEM, RSTn: no payload
        if (marker == 0xd8 || marker == 0x00) throw fail("unexpected marker at byte " + std::to_string(pos - 1));
        if (n - pos < 2) throw fail("truncated inside a marker segment");
        const std::size_t length = std::size_t(bytes[pos]) << 8 | bytes[pos + 1];
        if (length < 2 || n - pos < length) throw fail("marker segment at byte " + std::to_string(pos - 2) + " runs past the end of the file (truncated)");
        const std::uint8_t* seg = &bytes[pos + 2];
        const bool is_frame = marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc;
        if (is_frame) {
            if (seen_frame) throw fail("more than one frame header");
            if (length < 8) throw fail("frame header too short");
            info.height = int(seg[1]) << 8 | seg[2];
            info.width = int(seg[3]) << 8 | seg[4];
            info.components = seg[5];
            info.progressive = marker == 0xc2 || marker == 0xc6 || marker == 0xca || marker == 0xce;
            if (info.width == 0 || info.height == 0)
                throw fail("frame header gives a zero dimension (" + std::to_string(info.width) + "x" + std::to_string(info.height) + ")");
            if (length < 8 + 3 * std::size_t(info.components)) throw fail("frame header too short for its components");
            seen_frame = true;
        }
        pos += length;
        if (marker == 0xda) {  // SOS: entropy-coded data follows, up to the next non-RST marker
            if (!seen_frame) throw fail("scan before the frame header");
            seen_scan = true;
            for (;;) {
                if (pos + 1 >= n) throw fail("truncated inside the scan data (no EOI marker)");
                if (bytes[pos] == 0xff && bytes[pos + 1] != 0x00 && bytes[pos + 1] != 0xff &&
                    !(bytes[pos + 1] >= 0xd0 && bytes[pos + 1] <= 0xd7))
                    break;
                ++pos;
            }
        }
    }
}

}  // namespace fusionlm
