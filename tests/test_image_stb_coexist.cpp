// A program with its own stb_image next to fusionlm's: this translation unit compiles the default,
// full stb_image (extern symbols, every format), test_image.cpp compiles fusionlm's private copy
// (FUSIONLM_IMPLEMENT_STB_IMAGE). The binary links, and each copy keeps its own configuration.
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>

#include <fusionlm/image/image.hpp>

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

TEST(ImageStbCoexistence, OwnStbImageAndFusionlmLinkTogether) {
    const std::filesystem::path file = std::filesystem::path(FUSIONLM_TEST_DATA) / "images" / "chelsea_tiny_24x16.png";
    std::ifstream in(file, std::ios::binary);
    const std::vector<std::uint8_t> png{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    int w = 0, h = 0, c = 0;
    stbi_uc* own = stbi_load_from_memory(png.data(), int(png.size()), &w, &h, &c, 3);
    ASSERT_NE(own, nullptr);
    const fusionlm::Image ours = fusionlm::decode_image(png, file.string());
    ASSERT_EQ(ours.pixels.size(), std::size_t(w * h * 3));
    EXPECT_TRUE(std::equal(ours.pixels.begin(), ours.pixels.end(), own));
    stbi_image_free(own);

    // A 1x1 24-bit BMP: the app's stb reads it, fusionlm's copy has only JPEG and PNG.
    const std::vector<std::uint8_t> bmp = {'B', 'M', 58, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0,
                                           1, 0, 24, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                           10, 20, 30, 0};
    stbi_uc* px = stbi_load_from_memory(bmp.data(), int(bmp.size()), &w, &h, &c, 3);
    ASSERT_NE(px, nullptr) << stbi_failure_reason();
    EXPECT_EQ(px[0], 30);  // BMP stores BGR
    stbi_image_free(px);
    EXPECT_THROW(fusionlm::decode_image(bmp, "pixel.bmp"), fusionlm::InputError);
}
