// The optional libjpeg decode path (image/libjpeg.hpp): pixels identical to Pillow's, so the golden
// preprocessing case is reproduced exactly from the image files alone. Built only when the test
// binary links libjpeg and defines FUSIONLM_WITH_LIBJPEG.
#ifdef FUSIONLM_WITH_LIBJPEG
#include <fusionlm/image/libjpeg.hpp>
#include <fusionlm/image/processor.hpp>
#include <fusionlm/io/safetensors.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace fusionlm;

namespace {
const fs::path kData = FUSIONLM_TEST_DATA;
const fs::path kCase = kData / "golden" / "preprocess";
}  // namespace

TEST(ImageLibjpeg, GoldenJpegsDecodeToThePillowPixels) {
    const auto inputs = SafetensorsFile::open(kCase / "inputs.safetensors");
    for (const auto& [i, file] : {std::pair{0, "img0_640x480_rgb.jpg"}, std::pair{2, "img2_1024x256_rgb.jpg"}}) {
        const Image im = load_image_libjpeg(kCase / "images" / file);
        const TensorView& ref = inputs.get("image." + std::to_string(i));
        ASSERT_EQ(im.pixels.size(), std::size_t(ref.numel())) << file;
        EXPECT_TRUE(std::equal(im.pixels.begin(), im.pixels.end(), ref.as<std::uint8_t>())) << file;
    }
}

TEST(ImageLibjpeg, EveryJpegDecodesAndHostileFilesFail) {
    for (const char* f : {"rocket.jpg", "retina.jpg", "coffee.jpg", "astronaut_progressive.jpg", "camera_gray.jpg",
                          "coffee_cmyk.jpg", "chelsea_tiny_24x16.jpg", "rocket_exif_orientation6.jpg"}) {
        const Image im = load_image_libjpeg(kData / "images" / f);
        EXPECT_EQ(im.pixels.size(), im.size_bytes()) << f;
        EXPECT_EQ(im.channels, std::string(f) == "camera_gray.jpg" ? 1 : 3) << f;
    }
    // stb_image and libjpeg agree within 1 level on the CMYK file (same conversion arithmetic).
    const Image a = load_image_libjpeg(kData / "images" / "coffee_cmyk.jpg"), b = load_image(kData / "images" / "coffee_cmyk.jpg");
    int max_diff = 0;
    for (std::size_t i = 0; i < a.pixels.size(); ++i) max_diff = std::max(max_diff, std::abs(int(a.pixels[i]) - int(b.pixels[i])));
    EXPECT_LE(max_diff, 1);
    for (const char* f : {"truncated_half.jpg", "truncated_in_header.jpg", "truncated_skimage.jpg", "huge_dims_65500x65500.jpg",
                          "jpeg_soi_eoi_only.jpg", "empty.jpg", "bad_crc_idat.png"}) {
        try {
            load_image_libjpeg(kData / "images" / "hostile" / f);
            ADD_FAILURE() << f << " decoded";
        } catch (const InputError& e) {
            EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
        }
    }
}

TEST(ImageLibjpeg, GoldenCaseFromFilesIsExact) {
    std::vector<Image> images;
    for (const char* f : {"img0_640x480_rgb.jpg", "img1_300x900_rgb.png", "img2_1024x256_rgb.jpg", "img3_200x150_rgba.png",
                          "img4_1200x580_rgb.png"})
        images.push_back(load_image_libjpeg(kCase / "images" / f));
    const auto expected = SafetensorsFile::open(kCase / "expected.safetensors");
    const auto mllama = MllamaImageProcessor::from_file(kCase / "preprocessor_config_mllama_small.json").process(images);
    const auto clip = ClipImageProcessor::from_file(kCase / "preprocessor_config_clip_small.json").process(images);
    for (const auto& [values, name] : {std::pair{&mllama.pixel_values, "mllama_small.batch.pixel_values"},
                                       std::pair{&clip.pixel_values, "clip_small.pixel_values"}}) {
        const TensorView& want = expected.get(name);
        ASSERT_EQ(values->size(), std::size_t(want.numel()));
        float max_diff = 0;
        for (std::size_t i = 0; i < values->size(); ++i) max_diff = std::max(max_diff, std::abs((*values)[i] - want.as<float>()[i]));
        EXPECT_EQ(max_diff, 0.0f) << name;
    }
}
#endif
