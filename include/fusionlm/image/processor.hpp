#pragma once
// Image processors as a checkpoint's preprocessor_config.json configures them, reproducing the
// Hugging Face reference (transformers 4.45, Pillow resampling) value for value:
//   MllamaImageProcessor: white alpha compositing, tile canvas choice, resize to fit (Pillow filter on
//     uint8), zero padding right/bottom, rescale, normalise, split into tiles.
//   ClipImageProcessor (LLaVA): alpha dropped, shortest-edge resize, center crop, rescale, normalise.
// Rescale is f32(u8 * factor) with the product in double; normalisation (x - mean) / std in float,
// as numpy does it; padding pixels are 0 before rescaling, so they become -mean/std.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../io/json.hpp"
#include "convert.hpp"
#include "image.hpp"
#include "resize.hpp"

namespace fusionlm {

// Rescale and normalise settings shared by the processors.
struct PixelNormalization {
    bool do_rescale = true;
    double rescale_factor = 1.0 / 255.0;
    bool do_normalize = true;
    std::array<float, 3> image_mean{0.5f, 0.5f, 0.5f};
    std::array<float, 3> image_std{0.5f, 0.5f, 0.5f};

    // Output value of every uint8 input, per channel: the whole pipeline after resizing is a lookup.
    std::array<std::array<float, 256>, 3> table() const {
        std::array<std::array<float, 256>, 3> t{};
        for (int c = 0; c < 3; ++c)
            for (int v = 0; v < 256; ++v) {
                float x = do_rescale ? float(double(v) * rescale_factor) : float(v);
                if (do_normalize) x = (x - image_mean[std::size_t(c)]) / image_std[std::size_t(c)];
                t[std::size_t(c)][std::size_t(v)] = x;
            }
        return t;
    }
};

namespace detail {

inline std::array<float, 3> read_channel_triple(const JsonFields& f, std::string_view key, std::array<float, 3> def,
                                                bool nonzero) {
    if (!f.has(key)) return def;
    const Json& v = f.json().at(key);
    std::array<float, 3> out{};
    if (v.is_number()) {
        out.fill(float(v.get<double>()));
    } else if (v.is_array() && v.size() == 3 && std::all_of(v.begin(), v.end(), [](const Json& e) { return e.is_number(); })) {
        for (std::size_t i = 0; i < 3; ++i) out[i] = float(v[i].get<double>());
    } else {
        f.fail(key, "expected a number or a list of 3 numbers, got " + json_excerpt(v));
    }
    for (float x : out)
        if (!std::isfinite(x) || (nonzero && x == 0.0f)) f.fail(key, "expected finite" + std::string(nonzero ? " non-zero" : "") + " values, got " + json_excerpt(v));
    return out;
}

inline PixelNormalization read_normalization(const JsonFields& f, std::array<float, 3> mean, std::array<float, 3> stddev) {
    PixelNormalization n;
    n.do_rescale = f.boolean("do_rescale", true);
    n.rescale_factor = f.number("rescale_factor", 1.0 / 255.0);
    n.do_normalize = f.boolean("do_normalize", true);
    n.image_mean = read_channel_triple(f, "image_mean", mean, false);
    n.image_std = read_channel_triple(f, "image_std", stddev, true);
    return n;
}

inline Resample read_resample(const JsonFields& f, Resample def) {
    const std::int64_t r = f.integer("resample", std::int64_t(def));
    if (r < 1 || r > 5) f.fail("resample", "unsupported PIL filter " + std::to_string(r) + " (supported: 1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING)");
    return Resample(int(r));
}

// A pixel size read from a config: positive and small enough that a canvas of it stays allocatable.
inline int read_pixels(const JsonFields& f, std::string_view key, std::int64_t def) {
    const std::int64_t v = f.positive(key, def);
    if (v > 8192) f.fail(key, "expected at most 8192 pixels, got " + std::to_string(v));
    return int(v);
}

// Python's floor division, for the center-crop offsets of images smaller than the crop.
inline int floor_div(int a, int b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

inline Image rgb_for(const Image& image, bool do_convert_rgb, bool composite_white, std::size_t index) {
    const std::string name = "image " + std::to_string(index);
    if (do_convert_rgb) return composite_white ? to_rgb_over_white(image, name) : to_rgb_drop_alpha(image, name);
    check_image(image, name);
    if (image.channels != 3)
        throw InputError(name + ": has " + std::to_string(image.channels) + " channels and do_convert_rgb is false");
    return image;
}

}  // namespace detail

// Output of MllamaImageProcessor for the images of one prompt.
struct MllamaImageBatch {
    std::int64_t num_images = 0, max_image_tiles = 0, tile_size = 0;
    std::vector<float> pixel_values;               // [num_images, max_image_tiles, 3, tile_size, tile_size]
    std::vector<std::int64_t> aspect_ratio_ids;    // [num_images], 1-based index into supported_aspect_ratios
    std::vector<std::int64_t> aspect_ratio_mask;   // [num_images, max_image_tiles]
    std::vector<std::int64_t> num_tiles;           // [num_images]
    std::vector<std::array<std::int64_t, 2>> canvas_hw;   // per image (height, width) of the tiled canvas
    std::vector<std::array<std::int64_t, 2>> resized_hw;  // per image (height, width) before padding

    Shape pixel_values_shape() const { return {num_images, max_image_tiles, 3, tile_size, tile_size}; }
};

struct MllamaImageProcessorConfig {
    int tile_size = 224;
    int max_image_tiles = 4;
    Resample resample = Resample::Bilinear;
    bool do_convert_rgb = true;
    PixelNormalization normalization;
};

class MllamaImageProcessor {
public:
    // Bounds max_image_tiles * tile_size^2 (4 * 560^2 = 1.25 M for Llama 3.2 Vision): an absurd config
    // fails before a multi-gigabyte pixel_values allocation.
    static constexpr std::int64_t kMaxCanvasPixels = std::int64_t(1) << 25;

    explicit MllamaImageProcessor(MllamaImageProcessorConfig config) : config_(config), table_(config.normalization.table()) {
        if (config_.tile_size <= 0 || config_.max_image_tiles <= 0 ||
            std::int64_t(config_.max_image_tiles) * config_.tile_size * config_.tile_size > kMaxCanvasPixels)
            throw ConfigError("MllamaImageProcessor: tile_size " + std::to_string(config_.tile_size) + " and max_image_tiles " +
                              std::to_string(config_.max_image_tiles) + " must be positive, with at most " +
                              std::to_string(kMaxCanvasPixels) + " canvas pixels");
        detail::filter_support(config_.resample);
    }

    static MllamaImageProcessor from_file(const std::filesystem::path& path) {
        const Json j = read_json_file(path);
        return from_json(j, path.string());
    }

    // `source` names the config in error messages.
    static MllamaImageProcessor from_json(const Json& j, const std::string& source = "preprocessor_config.json") {
        const JsonFields f(j, source);
        MllamaImageProcessorConfig c;
        if (!f.boolean("do_resize", true)) f.fail("do_resize", "MllamaImageProcessor requires do_resize = true");
        if (!f.boolean("do_pad", true)) f.fail("do_pad", "MllamaImageProcessor requires do_pad = true");
        if (const auto size = f.object("size")) {
            const int h = detail::read_pixels(*size, "height", 224), w = detail::read_pixels(*size, "width", 224);
            if (h != w) f.fail("size", "height and width must be equal, got " + std::to_string(h) + " and " + std::to_string(w));
            c.tile_size = h;
        }
        const std::int64_t tiles = f.positive("max_image_tiles", 4);
        if (tiles > 64) f.fail("max_image_tiles", "expected at most 64, got " + std::to_string(tiles));
        c.max_image_tiles = int(tiles);
        if (tiles * c.tile_size * c.tile_size > kMaxCanvasPixels)
            f.fail("max_image_tiles", std::to_string(tiles) + " tiles of " + std::to_string(c.tile_size) + " px exceed " +
                                          std::to_string(kMaxCanvasPixels) + " canvas pixels");
        c.resample = detail::read_resample(f, Resample::Bilinear);
        c.do_convert_rgb = f.boolean("do_convert_rgb", true);
        // IMAGENET_STANDARD_MEAN / STD are the class defaults.
        c.normalization = detail::read_normalization(f, {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f});
        return MllamaImageProcessor(c);
    }

    const MllamaImageProcessorConfig& config() const { return config_; }

    // (tiles_high, tiles_wide) arrangements with at most max_tiles tiles; aspect_ratio_id = index + 1.
    static std::vector<std::pair<int, int>> supported_aspect_ratios(int max_tiles) {
        std::vector<std::pair<int, int>> r;
        for (int a = 1; a <= max_tiles; ++a)
            for (int b = 1; b <= max_tiles; ++b)
                if (a * b <= max_tiles) r.emplace_back(a, b);
        return r;
    }

    // The tile grid (tiles_high, tiles_wide): the smallest upscale >= 1 if any grid allows one, else
    // the largest downscale; ties go to the smallest canvas area.
    static std::pair<int, int> optimal_tiles(int height, int width, int max_tiles, int tile) {
        const auto grids = supported_aspect_ratios(max_tiles);
        std::vector<double> scales;
        for (const auto& [th, tw] : grids) {
            const double sh = double(th * tile) / height, sw = double(tw * tile) / width;
            scales.push_back(sw > sh ? sh : sw);
        }
        double selected = -1;
        bool any_up = false;
        for (double s : scales)
            if (s >= 1 && (!any_up || s < selected)) { selected = s; any_up = true; }
        if (!any_up)
            for (double s : scales) selected = std::max(selected, s);
        std::size_t best = grids.size();
        for (std::size_t i = 0; i < grids.size(); ++i) {
            if (scales[i] != selected) continue;
            if (best == grids.size() || grids[i].first * grids[i].second < grids[best].first * grids[best].second) best = i;
        }
        return grids[best];
    }

    // (height, width) the image is resized to: between the tile size and the canvas, aspect kept.
    static std::pair<int, int> fit_to_canvas(int height, int width, int canvas_h, int canvas_w, int tile) {
        const int target_w = std::clamp(width, tile, canvas_w), target_h = std::clamp(height, tile, canvas_h);
        const double scale_h = double(target_h) / height, scale_w = double(target_w) / width;
        if (scale_w < scale_h) return {std::min(int(std::floor(height * scale_w)), target_h), target_w};
        return {target_h, std::min(int(std::floor(width * scale_h)), target_w)};
    }

    MllamaImageBatch process(std::span<const Image> images) const {
        if (images.empty()) throw InputError("MllamaImageProcessor: no images");
        const int tile = config_.tile_size, max_tiles = config_.max_image_tiles;
        const auto grids = supported_aspect_ratios(max_tiles);
        MllamaImageBatch b;
        b.num_images = std::int64_t(images.size());
        b.max_image_tiles = max_tiles;
        b.tile_size = tile;
        const std::size_t plane = std::size_t(tile) * std::size_t(tile);
        const std::size_t per_image = std::size_t(max_tiles) * 3 * plane;
        b.pixel_values.assign(images.size() * per_image, 0.0f);
        b.aspect_ratio_mask.assign(images.size() * std::size_t(max_tiles), 0);
        for (std::size_t i = 0; i < images.size(); ++i) {
            const Image rgb = detail::rgb_for(images[i], config_.do_convert_rgb, true, i);
            const auto [tiles_h, tiles_w] = optimal_tiles(rgb.height, rgb.width, max_tiles, tile);
            const int canvas_h = tiles_h * tile, canvas_w = tiles_w * tile;
            const auto [new_h, new_w] = fit_to_canvas(rgb.height, rgb.width, canvas_h, canvas_w, tile);
            const Image resized = resize(rgb, new_w, new_h, config_.resample);
            write_tiles(resized, tiles_h, tiles_w, &b.pixel_values[i * per_image]);
            const int n = tiles_h * tiles_w;
            const auto id = std::find(grids.begin(), grids.end(), std::pair<int, int>(tiles_h, tiles_w)) - grids.begin();
            b.aspect_ratio_ids.push_back(std::int64_t(id) + 1);
            b.num_tiles.push_back(n);
            std::fill_n(&b.aspect_ratio_mask[i * std::size_t(max_tiles)], n, 1);
            b.canvas_hw.push_back({canvas_h, canvas_w});
            b.resized_hw.push_back({new_h, new_w});
        }
        return b;
    }

private:
    // Pads `resized` with zeros to the canvas, maps every value through the table and writes tile
    // (r, c) of the grid at out[(r * tiles_w + c) * 3 * tile^2], channels first.
    void write_tiles(const Image& resized, int tiles_h, int tiles_w, float* out) const {
        const int tile = config_.tile_size;
        const std::size_t plane = std::size_t(tile) * std::size_t(tile);
        for (int ty = 0; ty < tiles_h; ++ty)
            for (int tx = 0; tx < tiles_w; ++tx) {
                float* dst = out + std::size_t(ty * tiles_w + tx) * 3 * plane;
                const int x0 = tx * tile, x_end = std::clamp(resized.width - x0, 0, tile);
                for (int c = 0; c < 3; ++c) {
                    const auto& lut = table_[std::size_t(c)];
                    for (int r = 0; r < tile; ++r) {
                        float* row = dst + std::size_t(c) * plane + std::size_t(r) * std::size_t(tile);
                        const int y = ty * tile + r;
                        int s = 0;
                        if (y < resized.height) {
                            const std::uint8_t* src = &resized.pixels[(std::size_t(y) * std::size_t(resized.width) + std::size_t(x0)) * 3 + std::size_t(c)];
                            for (; s < x_end; ++s) row[s] = lut[src[std::size_t(s) * 3]];
                        }
                        std::fill(row + s, row + tile, lut[0]);
                    }
                }
            }
    }

    MllamaImageProcessorConfig config_;
    std::array<std::array<float, 256>, 3> table_;
};

// Output of ClipImageProcessor.
struct ClipImageBatch {
    std::int64_t num_images = 0, height = 0, width = 0;
    std::vector<float> pixel_values;  // [num_images, 3, height, width]

    Shape pixel_values_shape() const { return {num_images, 3, height, width}; }
};

struct ClipImageProcessorConfig {
    bool do_resize = true;
    int shortest_edge = 224;         // used when resize_height/width are 0
    int resize_height = 0, resize_width = 0;  // size {"height", "width"}: an exact target
    Resample resample = Resample::Bicubic;
    bool do_center_crop = true;
    int crop_height = 224, crop_width = 224;
    bool do_convert_rgb = true;
    PixelNormalization normalization{true, 1.0 / 255.0, true, {0.48145466f, 0.4578275f, 0.40821073f},
                                     {0.26862954f, 0.26130258f, 0.27577711f}};
};

class ClipImageProcessor {
public:
    explicit ClipImageProcessor(ClipImageProcessorConfig config) : config_(config), table_(config.normalization.table()) {
        detail::filter_support(config_.resample);
    }

    static ClipImageProcessor from_file(const std::filesystem::path& path) {
        const Json j = read_json_file(path);
        return from_json(j, path.string());
    }

    static ClipImageProcessor from_json(const Json& j, const std::string& source = "preprocessor_config.json") {
        const JsonFields f(j, source);
        ClipImageProcessorConfig c;
        c.do_resize = f.boolean("do_resize", true);
        if (f.has("size")) {
            const Json& s = j.at("size");
            if (s.is_number_integer()) {
                c.shortest_edge = detail::read_pixels(f, "size", 224);
            } else {
                const JsonFields size(s, source, "size");
                if (size.has("shortest_edge")) {
                    c.shortest_edge = detail::read_pixels(size, "shortest_edge", 224);
                } else if (size.has("height") && size.has("width")) {
                    c.resize_height = detail::read_pixels(size, "height", 224);
                    c.resize_width = detail::read_pixels(size, "width", 224);
                } else {
                    f.fail("size", "expected shortest_edge or height and width");
                }
            }
        }
        c.resample = detail::read_resample(f, Resample::Bicubic);
        c.do_center_crop = f.boolean("do_center_crop", true);
        if (f.has("crop_size")) {
            const Json& s = j.at("crop_size");
            if (s.is_number_integer()) {
                c.crop_height = c.crop_width = detail::read_pixels(f, "crop_size", 224);
            } else {
                const JsonFields crop(s, source, "crop_size");
                c.crop_height = detail::read_pixels(crop, "height", 224);
                c.crop_width = detail::read_pixels(crop, "width", 224);
            }
        }
        c.do_convert_rgb = f.boolean("do_convert_rgb", true);
        // OPENAI_CLIP_MEAN / STD are the class defaults.
        c.normalization = detail::read_normalization(f, c.normalization.image_mean, c.normalization.image_std);
        return ClipImageProcessor(c);
    }

    const ClipImageProcessorConfig& config() const { return config_; }

    // (height, width) of the resize step: the short side becomes shortest_edge, the long side
    // int(shortest_edge * long / short), as transformers' get_resize_output_image_size.
    std::pair<int, int> resize_target(int height, int width) const {
        if (config_.resize_height > 0) return {config_.resize_height, config_.resize_width};
        const int s = config_.shortest_edge;
        const int short_side = std::min(width, height), long_side = std::max(width, height);
        const auto new_long = static_cast<std::int64_t>(double(std::int64_t(s) * long_side) / short_side);
        if (new_long > (1 << 24)) throw InputError("ClipImageProcessor: aspect ratio too extreme (" + std::to_string(width) + "x" + std::to_string(height) + ")");
        if (width <= height) return {int(new_long), s};
        return {s, int(new_long)};
    }

    ClipImageBatch process(std::span<const Image> images) const {
        if (images.empty()) throw InputError("ClipImageProcessor: no images");
        ClipImageBatch b;
        b.num_images = std::int64_t(images.size());
        for (std::size_t i = 0; i < images.size(); ++i) {
            Image rgb = detail::rgb_for(images[i], config_.do_convert_rgb, false, i);
            if (config_.do_resize) {
                const auto [h, w] = resize_target(rgb.height, rgb.width);
                rgb = resize(rgb, w, h, config_.resample);
            }
            const int out_h = config_.do_center_crop ? config_.crop_height : rgb.height;
            const int out_w = config_.do_center_crop ? config_.crop_width : rgb.width;
            if (i == 0) {
                b.height = out_h;
                b.width = out_w;
                b.pixel_values.resize(images.size() * 3 * std::size_t(out_h) * std::size_t(out_w));
            } else if (out_h != b.height || out_w != b.width) {
                throw InputError("ClipImageProcessor: image " + std::to_string(i) + " is " + std::to_string(out_w) + "x" +
                                 std::to_string(out_h) + " after resizing, image 0 is " + std::to_string(b.width) + "x" +
                                 std::to_string(b.height) + " (enable do_center_crop to batch them)");
            }
            write_planes(rgb, out_h, out_w, &b.pixel_values[i * 3 * std::size_t(out_h) * std::size_t(out_w)]);
        }
        return b;
    }

private:
    // Center-crops (zero-padding an image smaller than the crop, as transformers' center_crop) and
    // writes the three normalised planes.
    void write_planes(const Image& rgb, int out_h, int out_w, float* out) const {
        const auto offset = [](int size, int crop) {
            const int pad = (std::max(crop, size) - size + 1) / 2;
            return std::max(0, detail::floor_div(size - crop, 2) + pad) - pad;
        };
        const int oy = offset(rgb.height, out_h), ox = offset(rgb.width, out_w);
        const std::size_t plane = std::size_t(out_h) * std::size_t(out_w);
        for (int c = 0; c < 3; ++c) {
            const auto& lut = table_[std::size_t(c)];
            for (int r = 0; r < out_h; ++r) {
                float* row = out + std::size_t(c) * plane + std::size_t(r) * std::size_t(out_w);
                const int y = r + oy;
                for (int s = 0; s < out_w; ++s) {
                    const int x = s + ox;
                    const bool inside = y >= 0 && y < rgb.height && x >= 0 && x < rgb.width;
                    row[s] = lut[inside ? rgb.pixels[(std::size_t(y) * std::size_t(rgb.width) + std::size_t(x)) * 3 + std::size_t(c)] : 0];
                }
            }
        }
    }

    ClipImageProcessorConfig config_;
    std::array<std::array<float, 256>, 3> table_;
};

}  // namespace fusionlm
