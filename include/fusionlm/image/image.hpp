#pragma once
// A decoded 8-bit image and its safe decoding from JPEG or PNG bytes.
//
// The format is sniffed from the content, never from the file name. Before stb_image sees the bytes,
// the container is checked (PNG chunk CRCs, JPEG segment framing and EOI) and the dimensions are held
// against ImageLimits, so damaged files fail with an InputError naming the file and huge ones are
// rejected before any pixel memory is allocated. EXIF orientation is ignored (the coded pixels are
// returned), as the Hugging Face image processors do; ICC profiles are ignored too.
// Requires FUSIONLM_IMPLEMENT_STB_IMAGE in one .cpp of the program (see stb_backend.hpp).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "jpeg_check.hpp"
#include "png_check.hpp"
#include "stb_backend.hpp"

namespace fusionlm {

// Interleaved 8-bit pixels, row-major, no row padding.
struct Image {
    int width = 0, height = 0;
    int channels = 0;  // 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
    std::vector<std::uint8_t> pixels;

    std::size_t size_bytes() const { return std::size_t(width) * std::size_t(height) * std::size_t(channels); }
};

// Throws InputError naming `name` unless `image` is a consistent, non-empty image.
inline void check_image(const Image& image, std::string_view name) {
    if (image.width <= 0 || image.height <= 0 || image.channels < 1 || image.channels > 4 ||
        image.pixels.size() != image.size_bytes())
        throw InputError("image '" + std::string(name) + "': inconsistent image (" + std::to_string(image.width) + "x" +
                         std::to_string(image.height) + ", " + std::to_string(image.channels) + " channels, " +
                         std::to_string(image.pixels.size()) + " bytes)");
}

struct ImageLimits {
    int max_side = 32768;                    // per dimension, pixels
    std::int64_t max_pixels = 89'478'485;    // width * height; Pillow's MAX_IMAGE_PIXELS
    std::size_t max_file_bytes = 256u << 20; // load_image only
};

namespace detail {

inline void check_limits(std::int64_t width, std::int64_t height, const ImageLimits& limits, std::string_view name) {
    if (width > limits.max_side || height > limits.max_side || width * height > limits.max_pixels)
        throw InputError("image '" + std::string(name) + "': " + std::to_string(width) + "x" + std::to_string(height) +
                         " exceeds the limits (" + std::to_string(limits.max_side) + " px per side, " +
                         std::to_string(limits.max_pixels) + " pixels)");
}

}  // namespace detail

inline Image decode_image(std::span<const std::uint8_t> bytes, std::string_view name, const ImageLimits& limits = {}) {
    const std::string who = "image '" + std::string(name) + "': ";
    if (bytes.empty()) throw InputError(who + "empty file");
    if (bytes.size() > std::size_t(0x7fffffff)) throw InputError(who + "file larger than 2 GiB");
    std::int64_t width = 0, height = 0;
    if (is_png(bytes)) {
        const PngInfo png = check_png(bytes, name);
        width = png.width;
        height = png.height;
    } else if (is_jpeg(bytes)) {
        const JpegInfo jpeg = check_jpeg(bytes, name);
        width = jpeg.width;
        height = jpeg.height;
    } else {
        throw InputError(who + "not a JPEG or PNG image");
    }
    detail::check_limits(width, height, limits, name);

    const int len = int(bytes.size());
    int w = 0, h = 0, c = 0;
    if (!detail::stb_info(bytes.data(), len, &w, &h, &c)) throw InputError(who + "unreadable header");
    if (w != width || h != height || c < 1 || c > 4)
        throw InputError(who + "header disagrees with itself (" + std::to_string(w) + "x" + std::to_string(h) + ")");
    // Generous for every legitimate JPEG/PNG decode path (component planes, coefficient buffers,
    // zlib output, 16-bit intermediates), far below what a decompression bomb asks for.
    const std::size_t budget = 2 * bytes.size() + 32 * std::size_t(w) * std::size_t(h) + (std::size_t(4) << 20);
    const detail::StbDecoded d = detail::stb_decode(bytes.data(), len, budget);
    if (!d.pixels) throw InputError(who + "cannot decode (" + (d.failure ? d.failure : "unknown reason") + ")");
    const std::unique_ptr<unsigned char, void (*)(void*)> owned(d.pixels, detail::stb_free);
    if (d.width != w || d.height != h || d.channels < 1 || d.channels > 4)
        throw InputError(who + "decoder output disagrees with the header");
    Image image{d.width, d.height, d.channels, {}};
    image.pixels.assign(d.pixels, d.pixels + image.size_bytes());
    return image;
}

// The bytes of an image file, refused before reading when larger than limits.max_file_bytes.
inline std::vector<std::uint8_t> read_image_file(const std::filesystem::path& path, const ImageLimits& limits = {}) {
    const std::string name = path.string();
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) throw InputError("image '" + name + "': cannot open (" + ec.message() + ")");
    if (size > limits.max_file_bytes)
        throw InputError("image '" + name + "': file of " + std::to_string(size) + " bytes exceeds the limit of " +
                         std::to_string(limits.max_file_bytes));
    std::ifstream in(path, std::ios::binary);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
    if (!in || !in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size())))
        throw InputError("image '" + name + "': cannot read");
    return bytes;
}

inline Image load_image(const std::filesystem::path& path, const ImageLimits& limits = {}) {
    return decode_image(read_image_file(path, limits), path.string(), limits);
}

}  // namespace fusionlm
