#pragma once
// Runs a preprocessing parity case folder (tests/data/golden/preprocess layout) through the image
// processors and returns every output under the name expected.safetensors uses, pixel tensors at full
// size. For the parity tool: write the result with write_safetensors.
//
// Case folder: meta.json ("images": [{"file": "images/...", ...}]), inputs.safetensors (optional;
// "image.{i}" U8 (H, W, C) or (H, W): decoded pixels to use instead of decoding the file, given where
// JPEG decoders differ), preprocessor_config_<tag>.json (one per processor configuration; the
// processor class comes from its "image_processor_type").
//
// Names, per tag:
//   MllamaImageProcessor (all images as one prompt's images, batch of 1):
//     <tag>.batch.pixel_values F32 (1, n, max_tiles, 3, s, s)   <tag>.batch.aspect_ratio_ids I64 (1, n)
//     <tag>.batch.aspect_ratio_mask I64 (1, n, max_tiles)      <tag>.batch.num_tiles I64 (1, n)
//     <tag>.batch.pixel_values_plane_sums F64 (1, n, max_tiles, 3)
//     <tag>.canvas_hw.{i} I64 (2,)   <tag>.resized_hw.{i} I64 (2,)   (height, width)
//   CLIPImageProcessor:
//     <tag>.pixel_values F32 (n, 3, h, w)   <tag>.pixel_values_plane_sums F64 (n, 3)
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <fusionlm/core/error.hpp>
#include <fusionlm/image/image.hpp>
#include <fusionlm/image/processor.hpp>
#include <fusionlm/io/json.hpp>
#include <fusionlm/io/safetensors.hpp>

namespace fusionlm::examples {

// Sum of each contiguous plane of `plane` values, in double.
inline std::vector<double> plane_sums(const std::vector<float>& values, std::size_t plane) {
    std::vector<double> sums(values.size() / plane, 0.0);
    for (std::size_t p = 0; p < sums.size(); ++p)
        for (std::size_t j = 0; j < plane; ++j) sums[p] += values[p * plane + j];
    return sums;
}

// The case's images: stored decoded pixels where inputs.safetensors has them, else the decoded file.
inline std::vector<Image> load_case_images(const std::filesystem::path& case_dir) {
    const std::filesystem::path meta_path = case_dir / "meta.json";
    const Json meta = read_json_file(meta_path);
    if (!meta.is_object() || !meta.contains("images") || !meta.at("images").is_array())
        throw FormatError(meta_path.string() + ": expected an object with an \"images\" list");
    std::optional<SafetensorsFile> inputs;
    if (std::filesystem::exists(case_dir / "inputs.safetensors")) inputs = SafetensorsFile::open(case_dir / "inputs.safetensors");
    std::vector<Image> images;
    const Json& list = meta.at("images");
    for (std::size_t i = 0; i < list.size(); ++i) {
        const std::string where = meta_path.string() + ": images[" + std::to_string(i) + "]";
        const TensorView* stored = inputs ? inputs->find("image." + std::to_string(i)) : nullptr;
        if (stored) {
            const bool gray = stored->shape.size() == 2;
            if (stored->dtype != DType::U8 || (!gray && (stored->shape.size() != 3 || stored->dim(2) < 1 || stored->dim(2) > 4)))
                throw ShapeError(inputs->path().string() + ": tensor '" + stored->name + "': expected U8 (H, W) or (H, W, C), got " +
                                 std::string(dtype_name(stored->dtype)) + " " + shape_str(stored->shape));
            Image im{int(stored->dim(1)), int(stored->dim(0)), gray ? 1 : int(stored->dim(2)), {}};
            im.pixels.assign(stored->as<std::uint8_t>(), stored->as<std::uint8_t>() + stored->numel());
            images.push_back(std::move(im));
            continue;
        }
        const Json& entry = list[i];
        if (!entry.is_object() || !entry.contains("file") || !entry.at("file").is_string())
            throw FormatError(where + ": expected an object with a \"file\" string");
        const std::filesystem::path file = entry.at("file").get<std::string>();
        const auto escapes = std::any_of(file.begin(), file.end(), [](const std::filesystem::path& p) { return p == ".."; });
        if (file.is_absolute() || escapes) throw FormatError(where + ": file '" + file.string() + "' is outside the case folder");
        images.push_back(load_image(case_dir / file));
    }
    if (images.empty()) throw FormatError(meta_path.string() + ": no images");
    return images;
}

inline std::vector<OwnedTensor> run_preprocess_case(const std::filesystem::path& case_dir) {
    const std::vector<Image> images = load_case_images(case_dir);
    const auto n = std::int64_t(images.size());
    std::vector<std::filesystem::path> configs;
    for (const auto& e : std::filesystem::directory_iterator(case_dir)) {
        const std::string name = e.path().filename().string();
        if (name.starts_with("preprocessor_config_") && name.ends_with(".json")) configs.push_back(e.path());
    }
    std::sort(configs.begin(), configs.end());
    if (configs.empty()) throw FormatError(case_dir.string() + ": no preprocessor_config_<tag>.json");

    std::vector<OwnedTensor> out;
    const auto i64 = [&](const std::string& name, Shape shape, const std::vector<std::int64_t>& v) {
        out.push_back(OwnedTensor::i64(name, std::move(shape), v));
    };
    const auto f64 = [&](const std::string& name, Shape shape, const std::vector<double>& v) {
        out.push_back(OwnedTensor::from(name, DType::F64, std::move(shape), std::span<const double>(v)));
    };
    for (const auto& path : configs) {
        const std::string stem = path.stem().string();
        const std::string tag = stem.substr(std::string("preprocessor_config_").size());
        const Json j = read_json_file(path);
        const std::string type = JsonFields(j, path.string()).string("image_processor_type", "");
        if (type == "MllamaImageProcessor") {
            const MllamaImageBatch b = MllamaImageProcessor::from_json(j, path.string()).process(images);
            const std::int64_t t = b.max_image_tiles, s = b.tile_size;
            out.push_back(OwnedTensor::f32(tag + ".batch.pixel_values", {1, n, t, 3, s, s}, b.pixel_values));
            f64(tag + ".batch.pixel_values_plane_sums", {1, n, t, 3}, plane_sums(b.pixel_values, std::size_t(s * s)));
            i64(tag + ".batch.aspect_ratio_ids", {1, n}, b.aspect_ratio_ids);
            i64(tag + ".batch.aspect_ratio_mask", {1, n, t}, b.aspect_ratio_mask);
            i64(tag + ".batch.num_tiles", {1, n}, b.num_tiles);
            for (std::size_t i = 0; i < images.size(); ++i) {
                i64(tag + ".canvas_hw." + std::to_string(i), {2}, {b.canvas_hw[i][0], b.canvas_hw[i][1]});
                i64(tag + ".resized_hw." + std::to_string(i), {2}, {b.resized_hw[i][0], b.resized_hw[i][1]});
            }
        } else if (type == "CLIPImageProcessor") {
            const ClipImageBatch b = ClipImageProcessor::from_json(j, path.string()).process(images);
            out.push_back(OwnedTensor::f32(tag + ".pixel_values", b.pixel_values_shape(), b.pixel_values));
            f64(tag + ".pixel_values_plane_sums", {n, 3}, plane_sums(b.pixel_values, std::size_t(b.height * b.width)));
        } else {
            throw UnsupportedError(path.string() + ": image_processor_type '" + type +
                                   "' is not supported (MllamaImageProcessor, CLIPImageProcessor)");
        }
    }
    return out;
}

}  // namespace fusionlm::examples
