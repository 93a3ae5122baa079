// Image input: safe decoding of real and hostile files, Pillow-exact resampling, and the golden
// preprocessing case (MllamaImageProcessor, CLIPImageProcessor) reproduced value for value.
//
// The test binary's one copy of stb_image is compiled here.
#define FUSIONLM_IMPLEMENT_STB_IMAGE
#include <fusionlm/image/image.hpp>
#include <fusionlm/image/processor.hpp>
#include <fusionlm/image/resize.hpp>
#include <fusionlm/io/safetensors.hpp>

#include "../examples/preprocess_case.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace fusionlm;

namespace {

const fs::path kData = FUSIONLM_TEST_DATA;
const fs::path kCase = kData / "golden" / "preprocess";

std::uint64_t fnv1a(const std::vector<std::uint8_t>& bytes) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (std::uint8_t b : bytes) h = (h ^ b) * 0x100000001b3ull;
    return h;
}

std::vector<std::uint8_t> read_bytes(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The InputError message of decoding `path`, or "" when it decodes.
std::string decode_error(const fs::path& path, const ImageLimits& limits = {}) {
    try {
        load_image(path, limits);
    } catch (const InputError& e) {
        return e.what();
    }
    return "";
}

struct AbsDiff {
    int max = 0;
    double mean = 0;
};
AbsDiff abs_diff(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
    AbsDiff d;
    double sum = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const int v = std::abs(int(a[i]) - int(b[i]));
        d.max = std::max(d.max, v);
        sum += v;
    }
    d.mean = a.empty() ? 0 : sum / double(a.size());
    return d;
}

// The golden U8 tensor `image.{i}` as an Image ((H, W) grayscale or (H, W, C)).
Image stored_image(const SafetensorsFile& inputs, int i) {
    const TensorView* t = inputs.find("image." + std::to_string(i));
    if (!t) return {};
    Image im{int(t->dim(1)), int(t->dim(0)), t->shape.size() == 3 ? int(t->dim(2)) : 1, {}};
    im.pixels.assign(t->as<std::uint8_t>(), t->as<std::uint8_t>() + t->numel());
    return im;
}

std::vector<Image> golden_images() {
    const auto inputs = SafetensorsFile::open(kCase / "inputs.safetensors");
    const char* files[] = {"img0_640x480_rgb.jpg", "img1_300x900_rgb.png", "img2_1024x256_rgb.jpg",
                           "img3_200x150_rgba.png", "img4_1200x580_rgb.png"};
    std::vector<Image> images;
    for (int i = 0; i < 5; ++i) {
        Image stored = stored_image(inputs, i);
        images.push_back(stored.pixels.empty() ? load_image(kCase / "images" / files[i]) : std::move(stored));
    }
    return images;
}

// Every k-th row and column of the last two dimensions, k = full / stored side.
std::vector<float> subsample(const std::vector<float>& full, std::int64_t side, std::int64_t k) {
    const std::int64_t planes = std::int64_t(full.size()) / (side * side), s = side / k;
    std::vector<float> out;
    out.reserve(std::size_t(planes * s * s));
    for (std::int64_t p = 0; p < planes; ++p)
        for (std::int64_t y = 0; y < side; y += k)
            for (std::int64_t x = 0; x < side; x += k) out.push_back(full[std::size_t((p * side + y) * side + x)]);
    return out;
}

void expect_pixels_identical(const std::vector<float>& full, std::int64_t side, const TensorView& expected) {
    const std::int64_t k = side / expected.shape.back();
    const std::vector<float> got = k == 1 ? full : subsample(full, side, k);
    ASSERT_EQ(got.size(), std::size_t(expected.numel())) << expected.name;
    float max_diff = 0;
    for (std::size_t i = 0; i < got.size(); ++i) max_diff = std::max(max_diff, std::abs(got[i] - expected.as<float>()[i]));
    EXPECT_EQ(max_diff, 0.0f) << expected.name;
}

void expect_plane_sums(const std::vector<float>& full, std::int64_t plane, const TensorView& expected) {
    ASSERT_EQ(full.size() / std::size_t(plane), std::size_t(expected.numel())) << expected.name;
    for (std::int64_t p = 0; p < expected.numel(); ++p) {
        double sum = 0;
        for (std::int64_t j = 0; j < plane; ++j) sum += full[std::size_t(p * plane + j)];
        const double want = expected.as<double>()[p];
        EXPECT_NEAR(sum, want, 1e-3 * std::max(1.0, std::abs(want))) << expected.name << " plane " << p;
    }
}

void expect_i64(const std::vector<std::int64_t>& got, const TensorView* expected, const std::string& name) {
    ASSERT_NE(expected, nullptr) << name;
    ASSERT_EQ(got.size(), std::size_t(expected->numel())) << name;
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], expected->as<std::int64_t>()[i]) << name << "[" << i << "]";
}

}  // namespace

// ---- decoding -------------------------------------------------------------------------------

// Lossless files: (width, height, channels, FNV-1a of the pixels as Pillow 9.4 decodes them; palette
// expanded to RGB, 16-bit samples reduced to the high byte).
TEST(ImageDecode, LosslessFilesMatchPillowPixels) {
    struct Case { const char* file; int w, h, c; std::uint64_t hash; };
    const Case cases[] = {
        {"images/camera.png", 512, 512, 1, 0x15fd86556e657c04ull},
        {"images/camera_16bit_gray.png", 256, 256, 1, 0xb2819aa9457f9df5ull},
        {"images/chelsea.png", 451, 300, 3, 0xb2179687966157a8ull},
        {"images/chelsea_1x1.png", 1, 1, 3, 0x95adfb1b1aabb949ull},
        {"images/chelsea_gray_alpha.png", 226, 150, 2, 0x513275d0f4af1d4bull},
        {"images/chelsea_palette.png", 226, 150, 3, 0xe7e99084fa2fee05ull},
        {"images/chelsea_rgba.png", 451, 300, 4, 0xc1fc77904927b04cull},
        {"images/chelsea_tiny_24x16.png", 24, 16, 3, 0x5d5c7d91809a684full},
        {"images/coffee_wide_strip.png", 600, 96, 3, 0x93a460d53afc5768ull},
        {"images/microaneurysms.png", 102, 102, 1, 0x0f7e6aff253a7a0dull},
        {"images/rocket_portrait.png", 240, 427, 3, 0x2494f2c12e665a69ull},
        {"images/rocket_portrait_interlaced.png", 240, 427, 3, 0x2494f2c12e665a69ull},
        {"images/rocket_tall_strip.png", 70, 420, 3, 0x1fa9193f0fa54987ull},
        {"golden/preprocess/images/img1_300x900_rgb.png", 300, 900, 3, 0x478700883e6d1e86ull},
        {"golden/preprocess/images/img3_200x150_rgba.png", 200, 150, 4, 0x59948ebdf08d9d10ull},
        {"golden/preprocess/images/img4_1200x580_rgb.png", 1200, 580, 3, 0xd75f016b230277a5ull},
        {"images/hostile/trailing_garbage.png", 24, 16, 3, 0x5d5c7d91809a684full},
    };
    for (const Case& c : cases) {
        const Image im = load_image(kData / c.file);
        EXPECT_EQ(im.width, c.w) << c.file;
        EXPECT_EQ(im.height, c.h) << c.file;
        EXPECT_EQ(im.channels, c.c) << c.file;
        EXPECT_EQ(fnv1a(im.pixels), c.hash) << c.file;
    }
}

TEST(ImageDecode, EveryJpegPhotoDecodes) {
    struct Case { const char* file; int w, h, c; };
    const Case cases[] = {
        {"rocket.jpg", 640, 427, 3},         {"retina.jpg", 1411, 1411, 3},
        {"coffee.jpg", 600, 400, 3},         {"astronaut_progressive.jpg", 512, 512, 3},
        {"rocket_portrait.jpg", 240, 427, 3}, {"coffee_wide_strip.jpg", 600, 96, 3},
        {"chelsea_tiny_24x16.jpg", 24, 16, 3}, {"camera_gray.jpg", 512, 512, 1},
        {"coffee_cmyk.jpg", 300, 200, 3},    {"rocket_exif_orientation6.jpg", 640, 427, 3},
    };
    for (const Case& c : cases) {
        const Image im = load_image(kData / "images" / c.file);
        EXPECT_EQ(im.width, c.w) << c.file;
        EXPECT_EQ(im.height, c.h) << c.file;
        EXPECT_EQ(im.channels, c.c) << c.file;
        EXPECT_EQ(im.pixels.size(), im.size_bytes()) << c.file;
    }
}

TEST(ImageDecode, ExifOrientationIsIgnored) {
    const Image plain = load_image(kData / "images" / "rocket.jpg");
    const Image tagged = load_image(kData / "images" / "rocket_exif_orientation6.jpg");
    EXPECT_EQ(tagged.width, 640);
    EXPECT_EQ(tagged.height, 427);
    EXPECT_EQ(tagged.pixels, plain.pixels);
}

// Pillow reads Adobe (inverted) CMYK and converts with exactly rounded 8-bit products; stb_image's
// conversion is the same arithmetic (measured against Pillow 9.4: max 1 level, mean 0.006). Here the
// CMYK file is checked against the RGB JPEG of the same photo at twice the size.
TEST(ImageDecode, CmykJpegIsConvertedToRgb) {
    const Image cmyk = load_image(kData / "images" / "coffee_cmyk.jpg");
    const Image rgb = load_image(kData / "images" / "coffee.jpg");
    ASSERT_EQ(cmyk.channels, 3);
    // Same photo at half size: average 2x2 blocks of coffee.jpg and compare loosely (lossy both ways).
    double sum = 0;
    for (int y = 0; y < cmyk.height; ++y)
        for (int x = 0; x < cmyk.width; ++x)
            for (int c = 0; c < 3; ++c) {
                int avg = 0;
                for (int dy = 0; dy < 2; ++dy)
                    for (int dx = 0; dx < 2; ++dx)
                        avg += rgb.pixels[(std::size_t(2 * y + dy) * 600 + std::size_t(2 * x + dx)) * 3 + std::size_t(c)];
                sum += std::abs(avg / 4.0 - cmyk.pixels[(std::size_t(y) * 300 + std::size_t(x)) * 3 + std::size_t(c)]);
            }
    EXPECT_LT(sum / (300.0 * 200 * 3), 6.0);  // a wrong CMYK conversion (e.g. not inverted) is off by ~100
}

// stb_image against libjpeg (the stored decodes of the golden JPEGs).
TEST(ImageDecode, StbJpegIsCloseToLibjpeg) {
    const auto inputs = SafetensorsFile::open(kCase / "inputs.safetensors");
    for (const auto& [i, file] : {std::pair{0, "img0_640x480_rgb.jpg"}, std::pair{2, "img2_1024x256_rgb.jpg"}}) {
        const Image ours = load_image(kCase / "images" / file);
        const Image ref = stored_image(inputs, i);
        ASSERT_EQ(ours.pixels.size(), ref.pixels.size()) << file;
        const AbsDiff d = abs_diff(ours.pixels, ref.pixels);
        // Measured: max 3 levels, mean 0.06 / 0.03 (stb_image 2.27 vs libjpeg-turbo 2.1.5).
        EXPECT_LE(d.max, 3) << file;
        EXPECT_LT(d.mean, 0.1) << file;
    }
    const Image png = load_image(kCase / "images" / "img3_200x150_rgba.png");
    EXPECT_EQ(png.pixels, stored_image(inputs, 3).pixels);
}

TEST(ImageDecode, HostileFilesFailCleanly) {
    const fs::path dir = kData / "images" / "hostile";
    const char* rejected[] = {"bad_crc_ihdr.png",        "bad_crc_idat.png",         "truncated.png",
                              "huge_dims_100000x100000.png", "zero_dims.png",         "png_signature_only.png",
                              "truncated_half.jpg",      "truncated_in_header.jpg",  "truncated_skimage.jpg",
                              "huge_dims_65500x65500.jpg", "jpeg_soi_eoi_only.jpg",  "empty.png",
                              "empty.jpg",               "not_an_image.png"};
    for (const char* f : rejected) {
        const std::string err = decode_error(dir / f);
        EXPECT_NE(err.find(f), std::string::npos) << f << ": '" << err << "'";
    }
    EXPECT_NE(decode_error(dir / "bad_crc_ihdr.png").find("CRC"), std::string::npos);
    EXPECT_NE(decode_error(dir / "bad_crc_idat.png").find("CRC"), std::string::npos);
    EXPECT_NE(decode_error(dir / "huge_dims_100000x100000.png").find("exceeds the limits"), std::string::npos);
    EXPECT_NE(decode_error(dir / "huge_dims_65500x65500.jpg").find("exceeds the limits"), std::string::npos);

    const Image garbage = load_image(dir / "trailing_garbage.png");
    EXPECT_EQ(garbage.width, 24);
    const Image sniffed = load_image(dir / "jpeg_named_png.png");
    EXPECT_EQ(sniffed.pixels, load_image(kData / "images" / "chelsea_tiny_24x16.jpg").pixels);
}

TEST(ImageDecode, LimitsAreConfigurable) {
    const fs::path photo = kData / "images" / "chelsea.png";  // 451x300
    EXPECT_NE(decode_error(photo, {.max_side = 450}).find("exceeds the limits"), std::string::npos);
    EXPECT_NE(decode_error(photo, {.max_pixels = 451 * 300 - 1}).find("exceeds the limits"), std::string::npos);
    EXPECT_NE(decode_error(photo, {.max_file_bytes = 1000}).find("exceeds the limit"), std::string::npos);
    EXPECT_EQ(decode_error(photo, {.max_side = 451, .max_pixels = 451 * 300}), "");
    EXPECT_NE(decode_error(kData / "images" / "no_such_file.png").find("no_such_file.png"), std::string::npos);
}

// Every single-byte truncation and a spread of byte flips of small files: an error or an image,
// never a crash (the sanitizer build checks the memory side).
TEST(ImageDecode, DamagedBytesNeverCrash) {
    for (const char* f : {"images/chelsea_tiny_24x16.png", "images/chelsea_tiny_24x16.jpg"}) {
        const std::vector<std::uint8_t> good = read_bytes(kData / f);
        for (std::size_t n = 0; n < good.size(); n += 7) {
            try {
                decode_image(std::span(good.data(), n), f);
            } catch (const InputError&) {
            }
        }
        for (std::size_t i = 0; i < good.size(); i += 3) {
            std::vector<std::uint8_t> bad = good;
            bad[i] ^= 0x5a;
            try {
                const Image im = decode_image(bad, f);
                EXPECT_EQ(im.pixels.size(), im.size_bytes());
            } catch (const InputError&) {
            }
        }
    }
}

// A 1x1 PNG (valid CRCs) whose zlib stream inflates to 64 MiB of zeros: stb_image would grow its
// buffer to hold it all; the allocation budget stops it with a clean error.
TEST(ImageDecode, DecompressionBombIsStoppedByTheBudget) {
    struct Bits {
        std::vector<std::uint8_t> out;
        int used = 8;
        void put(std::uint32_t v, int n, bool msb_first) {
            for (int i = 0; i < n; ++i) {
                if (used == 8) { out.push_back(0); used = 0; }
                const std::uint32_t bit = msb_first ? (v >> (n - 1 - i)) & 1u : (v >> i) & 1u;
                out.back() = std::uint8_t(out.back() | (bit << used++));
            }
        }
    } z;
    const std::uint32_t total = 64u << 20;
    z.put(1, 1, false);            // BFINAL
    z.put(1, 2, false);            // fixed Huffman
    z.put(0x30, 8, true);          // literal 0
    for (std::uint32_t n = 1; n + 258 <= total; n += 258) {
        z.put(0xc5, 8, true);      // length 258
        z.put(0, 5, true);         // distance 1
    }
    z.put(0, 7, true);             // end of block
    std::vector<std::uint8_t> idat = {0x78, 0x01};
    idat.insert(idat.end(), z.out.begin(), z.out.end());
    idat.insert(idat.end(), {0, 0, 0, 1});  // Adler-32 (not checked by the decoder)
    std::vector<std::uint8_t> png(detail::kPngSignature.begin(), detail::kPngSignature.end());
    const auto chunk = [&](const char* type, const std::vector<std::uint8_t>& data) {
        const std::uint32_t n = std::uint32_t(data.size());
        png.insert(png.end(), {std::uint8_t(n >> 24), std::uint8_t(n >> 16), std::uint8_t(n >> 8), std::uint8_t(n)});
        std::vector<std::uint8_t> body(type, type + 4);
        body.insert(body.end(), data.begin(), data.end());
        const std::uint32_t crc = detail::png_crc32(body);
        png.insert(png.end(), body.begin(), body.end());
        png.insert(png.end(), {std::uint8_t(crc >> 24), std::uint8_t(crc >> 16), std::uint8_t(crc >> 8), std::uint8_t(crc)});
    };
    chunk("IHDR", {0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0});
    chunk("IDAT", idat);
    chunk("IEND", {});
    ASSERT_LT(png.size(), std::size_t(1) << 20);
    try {
        decode_image(png, "bomb.png");
        ADD_FAILURE() << "decompression bomb decoded";
    } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("bomb.png"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("outofmem"), std::string::npos) << e.what();
    }
}

// ---- resampling -------------------------------------------------------------------------------

// A synthetic image with sharp edges (so bicubic overshoot exercises the clipping).
Image synthetic(int w, int h, int c) {
    Image im{w, h, c, std::vector<std::uint8_t>(std::size_t(w) * std::size_t(h) * std::size_t(c))};
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            for (int k = 0; k < c; ++k)
                im.pixels[(std::size_t(y) * std::size_t(w) + std::size_t(x)) * std::size_t(c) + std::size_t(k)] =
                    std::uint8_t(((x * 37 + y * 91 + k * 53) ^ (x * y * 3)) & 255);
    return im;
}

// FNV-1a of Pillow 9.4's Image.resize output on the same synthetic input.
TEST(ImageResize, MatchesPillowExactly) {
    struct Case { int w, h, c, ow, oh; Resample f; std::uint64_t hash; };
    const Case cases[] = {
        {13, 11, 3, 5, 7, Resample::Bilinear, 0xaf775dc415799221ull},
        {13, 11, 3, 29, 17, Resample::Bilinear, 0x2558420028ad10c5ull},
        {13, 11, 3, 5, 7, Resample::Bicubic, 0xe19367b6be66c145ull},
        {13, 11, 3, 29, 17, Resample::Bicubic, 0x7e22ac093f46b849ull},
        {64, 48, 1, 17, 61, Resample::Bicubic, 0x5c9988351bd723c7ull},
        {64, 48, 3, 64, 20, Resample::Bilinear, 0xe9232c4176169d03ull},
        {64, 48, 3, 20, 48, Resample::Bicubic, 0x7c1aeac4d69b8d07ull},
        {640, 480, 3, 223, 97, Resample::Bilinear, 0x98bbb46395ee2df0ull},
        {97, 61, 3, 560, 355, Resample::Bicubic, 0x10913ce6ba507705ull},
        {64, 48, 3, 31, 23, Resample::Lanczos, 0xc0b85e0bc1770b97ull},
        {64, 48, 3, 31, 23, Resample::Box, 0xc48c17314635560eull},
        {64, 48, 3, 31, 23, Resample::Hamming, 0x52fe2e401d30f7e3ull},
    };
    for (const Case& c : cases) {
        const Image out = resize(synthetic(c.w, c.h, c.c), c.ow, c.oh, c.f);
        EXPECT_EQ(out.width, c.ow);
        EXPECT_EQ(out.height, c.oh);
        EXPECT_EQ(fnv1a(out.pixels), c.hash) << c.w << "x" << c.h << "x" << c.c << " -> " << c.ow << "x" << c.oh
                                             << " filter " << int(c.f);
    }
}

TEST(ImageResize, SameSizeIsACopyAndBadArgumentsThrow) {
    const Image im = synthetic(9, 7, 3);
    EXPECT_EQ(resize(im, 9, 7, Resample::Bicubic).pixels, im.pixels);
    EXPECT_THROW(resize(im, 0, 7, Resample::Bilinear), InputError);
    EXPECT_THROW(resize(im, 5, 5, Resample::Nearest), UnsupportedError);
    Image broken = im;
    broken.pixels.pop_back();
    EXPECT_THROW(resize(broken, 5, 5, Resample::Bilinear), InputError);
}

TEST(ImageConvert, CompositeOverWhiteMatchesPillow) {
    // Spot values of Image.alpha_composite(white, RGBA).convert("RGB") from Pillow 9.4.
    EXPECT_EQ(composite_over_white(0, 0), 255);
    EXPECT_EQ(composite_over_white(200, 255), 200);
    EXPECT_EQ(composite_over_white(0, 128), 127);
    EXPECT_EQ(composite_over_white(100, 1), 254);
    for (int v = 0; v < 256; ++v) EXPECT_EQ(composite_over_white(std::uint8_t(v), 255), v);
}

// ---- processors ------------------------------------------------------------------------------

TEST(MllamaProcessor, CanvasChoice) {
    using P = MllamaImageProcessor;
    const auto ratios = P::supported_aspect_ratios(4);
    const std::vector<std::pair<int, int>> want = {{1, 1}, {1, 2}, {1, 3}, {1, 4}, {2, 1}, {2, 2}, {3, 1}, {4, 1}};
    EXPECT_EQ(ratios, want);
    // From the golden README (mllama_tiny, 56 px tiles): 640x480 -> 2x2, 300x900 -> 3x1, 120x60 -> 1x2.
    EXPECT_EQ(P::optimal_tiles(480, 640, 4, 56), std::make_pair(2, 2));
    EXPECT_EQ(P::optimal_tiles(900, 300, 4, 56), std::make_pair(3, 1));
    EXPECT_EQ(P::optimal_tiles(60, 120, 4, 56), std::make_pair(1, 2));
    // 640x480 at 560 px lies between tile and canvas: only padded.
    EXPECT_EQ(P::fit_to_canvas(480, 640, 1120, 1120, 560), std::make_pair(480, 640));
}

TEST(MllamaProcessor, ConfigErrorsNameFileAndField) {
    const Json good = read_json_file(kCase / "preprocessor_config_mllama_small.json");
    const auto expect_config_error = [&](Json j, const std::string& field) {
        try {
            MllamaImageProcessor::from_json(j, "cfg.json");
            ADD_FAILURE() << "accepted " << j.dump();
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find("cfg.json: " + field), std::string::npos) << e.what();
        }
    };
    Json j = good; j["size"] = {{"height", 56}, {"width", 60}};
    expect_config_error(j, "size");
    j = good; j["max_image_tiles"] = 0;
    expect_config_error(j, "max_image_tiles");
    j = good; j["max_image_tiles"] = 100000;
    expect_config_error(j, "max_image_tiles");
    j = good; j["image_std"] = {0.5, 0.0, 0.5};
    expect_config_error(j, "image_std");
    j = good; j["image_mean"] = "x";
    expect_config_error(j, "image_mean");
    j = good; j["resample"] = 0;
    expect_config_error(j, "resample");
    j = good; j["do_pad"] = false;
    expect_config_error(j, "do_pad");
    j = good; j["size"]["height"] = -5;
    expect_config_error(j, "size.height");
    EXPECT_THROW(MllamaImageProcessor::from_json(good).process({}), InputError);
}

TEST(ClipProcessor, ResizeTargetAndConfigErrors) {
    const auto clip = ClipImageProcessor::from_file(kCase / "preprocessor_config_clip_full.json");
    EXPECT_EQ(clip.resize_target(480, 640), std::make_pair(336, 448));
    EXPECT_EQ(clip.resize_target(900, 300), std::make_pair(1008, 336));
    Json j = read_json_file(kCase / "preprocessor_config_clip_small.json");
    j["crop_size"] = "big";
    EXPECT_THROW(ClipImageProcessor::from_json(j, "cfg.json"), ConfigError);
}

// A tiny image is upscaled to shortest edge, an image smaller than the crop is zero-padded around.
TEST(ClipProcessor, CropPadsSmallImages) {
    ClipImageProcessorConfig c;
    c.do_resize = false;
    c.crop_height = 5;
    c.crop_width = 4;
    const ClipImageProcessor clip(c);
    const Image im = synthetic(2, 3, 3);
    const ClipImageBatch b = clip.process(std::span(&im, 1));
    ASSERT_EQ(b.pixel_values.size(), std::size_t(3 * 5 * 4));
    const auto table = c.normalization.table();
    // transformers: pad top ceil((5-3)/2)=1, left ceil((4-2)/2)=1.
    EXPECT_EQ(b.pixel_values[0], table[0][0]);
    EXPECT_EQ(b.pixel_values[1 * 4 + 1], table[0][im.pixels[0]]);
    EXPECT_EQ(b.pixel_values[3 * 4 + 2], table[0][im.pixels[(2 * 2 + 1) * 3]]);
}

// The processors' API on the golden case at the tiny models' sizes (the full sizes are covered through
// the case runner below): identical pixel_values, ids, masks, tile counts and sizes.
TEST(GoldenPreprocess, SmallProcessorsMatchReference) {
    const std::vector<Image> images = golden_images();
    const auto expected = SafetensorsFile::open(kCase / "expected.safetensors");
    for (const std::string tag : {"mllama_small"}) {
        SCOPED_TRACE(tag);
        const auto proc = MllamaImageProcessor::from_file(kCase / ("preprocessor_config_" + tag + ".json"));
        const MllamaImageBatch b = proc.process(images);
        const TensorView& pv = expected.get(tag + ".batch.pixel_values");
        expect_pixels_identical(b.pixel_values, b.tile_size, pv);
        expect_plane_sums(b.pixel_values, b.tile_size * b.tile_size, expected.get(tag + ".batch.pixel_values_plane_sums"));
        expect_i64(b.aspect_ratio_ids, expected.find(tag + ".batch.aspect_ratio_ids"), "aspect_ratio_ids");
        expect_i64(b.aspect_ratio_mask, expected.find(tag + ".batch.aspect_ratio_mask"), "aspect_ratio_mask");
        expect_i64(b.num_tiles, expected.find(tag + ".batch.num_tiles"), "num_tiles");
        for (std::size_t i = 0; i < images.size(); ++i) {
            const std::string s = std::to_string(i);
            expect_i64({b.canvas_hw[i][0], b.canvas_hw[i][1]}, expected.find(tag + ".canvas_hw." + s), "canvas_hw." + s);
            expect_i64({b.resized_hw[i][0], b.resized_hw[i][1]}, expected.find(tag + ".resized_hw." + s), "resized_hw." + s);
        }
    }
    for (const std::string tag : {"clip_small"}) {
        SCOPED_TRACE(tag);
        const auto proc = ClipImageProcessor::from_file(kCase / ("preprocessor_config_" + tag + ".json"));
        const ClipImageBatch b = proc.process(images);
        expect_pixels_identical(b.pixel_values, b.height, expected.get(tag + ".pixel_values"));
        expect_plane_sums(b.pixel_values, b.height * b.width, expected.get(tag + ".pixel_values_plane_sums"));
    }
}

// The acceptance test, through the parity tool's mapping: every tensor of expected.safetensors (all
// four processor configurations) under the same name and dtype, pixel tensors at full size and
// identical after subsampling, integer tensors equal, plane sums within 1e-3.
// Every tensor of the case's expected.safetensors, by name, dtype and value (pixel tensors at full size,
// compared on the reference's subsampling grid).
void expect_every_expected_tensor(const std::vector<TensorView>& outputs) {
    const auto expected = SafetensorsFile::open(kCase / "expected.safetensors");
    EXPECT_EQ(outputs.size(), expected.tensors().size());
    for (const TensorView& want : expected.tensors()) {
        SCOPED_TRACE(want.name);
        const auto it = std::find_if(outputs.begin(), outputs.end(), [&](const TensorView& t) { return t.name == want.name; });
        ASSERT_NE(it, outputs.end());
        const TensorView& got = *it;
        ASSERT_EQ(got.dtype, want.dtype);
        ASSERT_EQ(got.shape.size(), want.shape.size());
        if (got.dtype == DType::F32) {
            const std::int64_t side = got.shape.back();
            ASSERT_EQ(side % want.shape.back(), 0);
            expect_pixels_identical(std::vector<float>(got.as<float>(), got.as<float>() + got.numel()), side, want);
        } else if (got.dtype == DType::F64) {
            ASSERT_EQ(got.shape, want.shape);
            for (std::int64_t i = 0; i < got.numel(); ++i)
                EXPECT_NEAR(got.as<double>()[i], want.as<double>()[i], 1e-3 * std::max(1.0, std::abs(want.as<double>()[i])));
        } else {
            ASSERT_EQ(got.shape, want.shape);
            for (std::int64_t i = 0; i < got.numel(); ++i) EXPECT_EQ(got.as<std::int64_t>()[i], want.as<std::int64_t>()[i]);
        }
    }
}

TEST(GoldenPreprocess, CaseRunnerProducesEveryExpectedTensor) {
    const std::vector<OwnedTensor> outputs = examples::run_preprocess_case(kCase);
    std::vector<TensorView> views;
    for (const auto& t : outputs) views.push_back(t.view());
    expect_every_expected_tensor(views);
}

// The same through fusionlm-parity, as a user checks a preprocessing case folder.
TEST(GoldenPreprocess, ParityToolWritesEveryExpectedTensor) {
    const std::filesystem::path tool = std::filesystem::path(FUSIONLM_BIN_DIR) / "fusionlm-parity";
    if (!std::filesystem::exists(tool)) GTEST_SKIP() << tool << " not built";
    const auto out =
        std::filesystem::temp_directory_path() / ("fusionlm_preprocess_" + std::to_string(::getpid()) + ".safetensors");
    const std::string cmd = "'" + tool.string() + "' '" + kCase.string() + "' --out '" + out.string() + "' > /dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    {
        const auto written = SafetensorsFile::open(out);
        expect_every_expected_tensor(written.tensors());
    }
    std::filesystem::remove(out);
}

// Decoding the golden JPEGs with stb_image instead of using libjpeg's stored pixels: pixel_values stay
// within the JPEG decoders' difference (3 levels = 3 / 255 / std) and agree on average to a small
// fraction of one level (measured: max 0.0150 = one uint8 step, mean 0.0002; libjpeg.hpp is exact).
TEST(GoldenPreprocess, FromFilesWithStbWithinJpegTolerance) {
    const char* files[] = {"img0_640x480_rgb.jpg", "img1_300x900_rgb.png", "img2_1024x256_rgb.jpg",
                           "img3_200x150_rgba.png", "img4_1200x580_rgb.png"};
    std::vector<Image> images;
    for (const char* f : files) images.push_back(load_image(kCase / "images" / f));
    const auto expected = SafetensorsFile::open(kCase / "expected.safetensors");
    const auto mllama = MllamaImageProcessor::from_file(kCase / "preprocessor_config_mllama_small.json").process(images);
    const auto clip = ClipImageProcessor::from_file(kCase / "preprocessor_config_clip_small.json").process(images);
    const float bound = 3.0f / 255.0f / 0.26130258f + 1e-6f;
    for (const auto& [values, name] : {std::pair{&mllama.pixel_values, "mllama_small.batch.pixel_values"},
                                       std::pair{&clip.pixel_values, "clip_small.pixel_values"}}) {
        const TensorView& want = expected.get(name);
        ASSERT_EQ(values->size(), std::size_t(want.numel()));
        float max_diff = 0;
        double sum_diff = 0;
        for (std::size_t i = 0; i < values->size(); ++i) {
            const float d = std::abs((*values)[i] - want.as<float>()[i]);
            max_diff = std::max(max_diff, d);
            sum_diff += d;
        }
        const double mean_diff = sum_diff / double(values->size());
        EXPECT_LE(max_diff, bound) << name;
        EXPECT_LE(mean_diff, 0.2 / 255.0 / 0.26130258) << name;
        std::cout << name << ": stb decode vs reference max abs diff " << max_diff << ", mean " << mean_diff << "\n";
    }
}
