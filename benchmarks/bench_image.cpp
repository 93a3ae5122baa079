// Image input: decode a 1024x768 JPEG and preprocess it for Llama 3.2 Vision (4 tiles of 560 px).
// The JPEG is made at start-up from a test photo (resized with our Pillow-exact bilinear, encoded
// with stb_image_write at quality 90), so the timing is of a real photo's entropy.
//
// The benchmark binary's one copy of stb_image is compiled here.
#define FUSIONLM_IMPLEMENT_STB_IMAGE
#include <fusionlm/image/image.hpp>
#include <fusionlm/image/processor.hpp>
#include <fusionlm/image/resize.hpp>

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <vector>

namespace {

using namespace fusionlm;

const std::vector<std::uint8_t>& jpeg_1024x768() {
    static const std::vector<std::uint8_t> bytes = [] {
        const auto photo_path = std::filesystem::path(__FILE__).parent_path().parent_path() / "tests" / "data" / "images" / "retina.jpg";
        const Image photo = resize(load_image(photo_path), 1024, 768, Resample::Bilinear);
        std::vector<std::uint8_t> out;
        stbi_write_jpg_to_func(
            [](void* ctx, void* data, int size) {
                auto* v = static_cast<std::vector<std::uint8_t>*>(ctx);
                const std::size_t old = v->size();
                v->resize(old + std::size_t(size));
                std::memcpy(v->data() + old, data, std::size_t(size));
            },
            &out, photo.width, photo.height, photo.channels, photo.pixels.data(), 90);
        return out;
    }();
    return bytes;
}

MllamaImageProcessor llama32_vision_processor() {
    MllamaImageProcessorConfig c;
    c.tile_size = 560;
    c.max_image_tiles = 4;
    c.normalization.image_mean = {0.48145466f, 0.4578275f, 0.40821073f};
    c.normalization.image_std = {0.26862954f, 0.26130258f, 0.27577711f};
    return MllamaImageProcessor(c);
}

void BM_DecodeJpeg1024x768(benchmark::State& state) {
    const auto& bytes = jpeg_1024x768();
    for (auto _ : state) benchmark::DoNotOptimize(decode_image(bytes, "bench.jpg"));
    state.counters["jpeg_bytes"] = double(bytes.size());
}
BENCHMARK(BM_DecodeJpeg1024x768)->Unit(benchmark::kMillisecond);

void BM_DecodeAndMllamaPreprocess1024x768(benchmark::State& state) {
    const auto& bytes = jpeg_1024x768();
    const MllamaImageProcessor proc = llama32_vision_processor();
    for (auto _ : state) {
        const Image im = decode_image(bytes, "bench.jpg");
        const MllamaImageBatch b = proc.process(std::span(&im, 1));
        if (b.num_tiles[0] != 4) state.SkipWithError("expected 4 tiles");
        benchmark::DoNotOptimize(b.pixel_values.data());
    }
}
BENCHMARK(BM_DecodeAndMllamaPreprocess1024x768)->Unit(benchmark::kMillisecond);

// A photo that needs resampling: 1411x1411 -> canvas 1120x1120 (bilinear, antialiased downscale).
void BM_MllamaPreprocessResize1411(benchmark::State& state) {
    const auto photo_path = std::filesystem::path(__FILE__).parent_path().parent_path() / "tests" / "data" / "images" / "retina.jpg";
    const Image im = load_image(photo_path);
    const MllamaImageProcessor proc = llama32_vision_processor();
    for (auto _ : state) benchmark::DoNotOptimize(proc.process(std::span(&im, 1)).pixel_values.data());
}
BENCHMARK(BM_MllamaPreprocessResize1411)->Unit(benchmark::kMillisecond);

}  // namespace
