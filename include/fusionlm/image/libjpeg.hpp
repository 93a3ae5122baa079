#pragma once
// Optional JPEG decoding through libjpeg(-turbo), the decoder Pillow uses, for pixels identical to the
// reference's (stb_image differs by up to 3 levels on photos). Opt-in: include this header only when
// the program links libjpeg (Debian: libjpeg62-turbo-dev; CMake: find_package(JPEG), JPEG::JPEG).
// Settings are Pillow's defaults: accurate integer IDCT, fancy upsampling, Adobe CMYK inverted and
// converted to RGB with Pillow's arithmetic. PNG input goes through decode_image unchanged.
#include <algorithm>
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <jpeglib.h>

#include "../core/error.hpp"
#include "image.hpp"
#include "jpeg_check.hpp"

namespace fusionlm {

namespace detail {

struct LibjpegErrors {
    jpeg_error_mgr mgr;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

[[noreturn]] inline void libjpeg_error_exit(j_common_ptr cinfo) {
    auto* e = reinterpret_cast<LibjpegErrors*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, e->message);
    std::longjmp(e->jump, 1);
}
// Warnings (e.g. extraneous bytes) are tolerated as Pillow tolerates them; nothing goes to stderr.
inline void libjpeg_silent(j_common_ptr) {}

// Pillow's MULDIV255: round(a * b / 255) for 8-bit a, b.
inline int muldiv255(int a, int b) {
    const int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

// Decodes into `out` (sized by the caller from the checked header). Only trivially destructible
// objects live between setjmp and longjmp. Returns false with `message` filled on a libjpeg error.
inline bool libjpeg_decode_into(std::span<const std::uint8_t> bytes, std::vector<std::uint8_t>& out, int& width,
                                int& height, int& channels, bool& inverted_cmyk, LibjpegErrors& errors) {
    jpeg_decompress_struct cinfo;
    cinfo.err = jpeg_std_error(&errors.mgr);
    errors.mgr.error_exit = libjpeg_error_exit;
    errors.mgr.output_message = libjpeg_silent;
    errors.message[0] = '\0';
    if (setjmp(errors.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, bytes.data(), static_cast<unsigned long>(bytes.size()));
    jpeg_read_header(&cinfo, TRUE);
    switch (cinfo.jpeg_color_space) {
        case JCS_GRAYSCALE: cinfo.out_color_space = JCS_GRAYSCALE; break;
        case JCS_CMYK: case JCS_YCCK: cinfo.out_color_space = JCS_CMYK; break;
        default: cinfo.out_color_space = JCS_RGB; break;
    }
    inverted_cmyk = cinfo.saw_Adobe_marker;
    jpeg_start_decompress(&cinfo);
    width = int(cinfo.output_width);
    height = int(cinfo.output_height);
    channels = cinfo.output_components;
    if (out.size() != std::size_t(width) * std::size_t(height) * std::size_t(channels)) {
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out.data() + std::size_t(cinfo.output_scanline) * std::size_t(width) * std::size_t(channels);
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return true;
}

}  // namespace detail

// decode_image, with JPEG files decoded by libjpeg.
inline Image decode_image_libjpeg(std::span<const std::uint8_t> bytes, std::string_view name, const ImageLimits& limits = {}) {
    if (!is_jpeg(bytes)) return decode_image(bytes, name, limits);
    const std::string who = "image '" + std::string(name) + "': ";
    const JpegInfo info = check_jpeg(bytes, name);
    detail::check_limits(info.width, info.height, limits, name);
    if (info.components != 1 && info.components != 3 && info.components != 4)
        throw InputError(who + "JPEG with " + std::to_string(info.components) + " components is not supported");
    std::vector<std::uint8_t> raw(std::size_t(info.width) * std::size_t(info.height) * std::size_t(info.components));
    int width = 0, height = 0, channels = 0;
    bool inverted_cmyk = false;
    detail::LibjpegErrors errors;
    if (!detail::libjpeg_decode_into(bytes, raw, width, height, channels, inverted_cmyk, errors))
        throw InputError(who + "cannot decode (" + (errors.message[0] ? errors.message : "unexpected output size") + ")");
    if (channels != 4) return Image{width, height, channels, std::move(raw)};
    // Pillow: rawmode "CMYK;I" (inverted) when an Adobe marker is present, then cmyk2rgb.
    Image rgb{width, height, 3, std::vector<std::uint8_t>(std::size_t(width) * std::size_t(height) * 3)};
    for (std::size_t i = 0; i < std::size_t(width) * std::size_t(height); ++i) {
        const auto ink = [&](int c) { return inverted_cmyk ? 255 - raw[4 * i + std::size_t(c)] : int(raw[4 * i + std::size_t(c)]); };
        const int nk = 255 - ink(3);
        for (int c = 0; c < 3; ++c) rgb.pixels[3 * i + std::size_t(c)] = std::uint8_t(std::clamp(nk - detail::muldiv255(ink(c), nk), 0, 255));
    }
    return rgb;
}

inline Image load_image_libjpeg(const std::filesystem::path& path, const ImageLimits& limits = {}) {
    return decode_image_libjpeg(read_image_file(path, limits), path.string(), limits);
}

}  // namespace fusionlm
