// fusionlm-compare as a user runs it, at --tiny size: every configuration of the sweep is in the JSON
// with positive finite times; the cache accounting shows what distinguishes the two strategies (early
// fusion's KV cache holds every image token, cross-attention's holds one marker per image and keeps the
// image K/V apart); the SVG plot is written with its legend; bad flags exit 2 with one line.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <tuple>

#include "test_io_util.hpp"

using namespace fusionlm::io_test;
namespace fs = std::filesystem;

namespace {

const fs::path kCompare = fs::path(FUSIONLM_BIN_DIR) / "fusionlm-compare";

}  // namespace

class CompareCli : public ::testing::Test {
protected:
    void SetUp() override {
        if (!fs::exists(kCompare)) GTEST_SKIP() << kCompare << " not built";
    }
    CliResult run(const std::string& args) { return run_cli(kCompare, args, tmp); }
    TempDir tmp;
};

TEST_F(CompareCli, TinySweepReportsEveryConfiguration) {
    const fs::path svg = tmp / "plot.svg";
    const CliResult r = run("--tiny -t 2 --repeats 1 --json --svg " + quote(svg.string()));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(r.err.empty()) << r.err;
    const auto doc = nlohmann::json::parse(r.out);  // exactly one JSON document on stdout
    const auto& configs = doc.at("configurations");

    // 2 strategies x 2 MLPs x 2 image sizes x 3 image counts x 2 prompt lengths x 2 generated counts.
    EXPECT_EQ(configs.size(), 2u * 2 * 2 * 3 * 2 * 2);
    std::set<std::tuple<std::string, std::string, int, int, int, int>> seen;
    for (const auto& c : configs) {
        SCOPED_TRACE(c.dump());
        seen.emplace(c.at("strategy").get<std::string>(), c.at("mlp").get<std::string>(), c.at("image_size").get<int>(),
                     c.at("images").get<int>(), c.at("prompt_tokens").get<int>(), c.at("generated").get<int>());
        for (const char* key : {"vision_s", "attach_s", "prefill_s", "total_s", "prefill_flops",
                                "prefill_gflops_per_s", "vision_gflops_per_s"}) {
            const double v = c.at(key).get<double>();
            EXPECT_TRUE(std::isfinite(v) && v > 0) << key << " = " << v;
        }
        if (c.at("generated").get<int>() > 1) {
            const double tps = c.at("decode_tokens_per_s").get<double>();
            EXPECT_TRUE(std::isfinite(tps) && tps > 0) << tps;
        } else {
            EXPECT_TRUE(c.at("decode_tokens_per_s").is_null());
        }
        EXPECT_EQ(c.at("cache_bytes").get<std::int64_t>(),
                  c.at("kv_cache_bytes").get<std::int64_t>() + c.at("cross_kv_bytes").get<std::int64_t>());
    }
    EXPECT_EQ(seen.size(), configs.size());
    for (const char* strategy : {"cross_attention", "early_fusion"})
        for (const char* mlp : {"dense", "moe"})
            for (int px : {28, 56})
                for (int images : {1, 2, 4})
                    for (int prompt : {8, 16})
                        for (int gen : {1, 4}) EXPECT_TRUE(seen.count({strategy, mlp, px, images, prompt, gen}))
                            << strategy << " " << mlp << " " << px << " " << images << " " << prompt << " " << gen;

    // Cache growth from 1 to 4 images at 56 px, 8 text tokens, 4 generated, dense MLP. One token's
    // self-attention K/V: layers x 2 x kv_dim x 4 bytes.
    const auto& dec = doc.at("decoder");
    const std::int64_t kv_dim = dec.at("num_key_value_heads").get<std::int64_t>() *
                                (dec.at("hidden_size").get<std::int64_t>() / dec.at("num_attention_heads").get<std::int64_t>());
    const std::int64_t per_token = dec.at("self_attention_layers").get<std::int64_t>() * 2 * kv_dim * 4;
    const std::int64_t cross_layers = std::int64_t(dec.at("cross_attention_slots").size());
    ASSERT_GE(cross_layers, 1);
    const auto find = [&](const std::string& strategy, int images) {
        for (const auto& c : configs)
            if (c.at("strategy") == strategy && c.at("mlp") == "dense" && c.at("image_size") == 56 &&
                c.at("images") == images && c.at("prompt_tokens") == 8 && c.at("generated") == 4)
                return c;
        ADD_FAILURE() << "no " << strategy << " point with " << images << " images";
        return nlohmann::json::object();
    };
    const auto e1 = find("early_fusion", 1), e4 = find("early_fusion", 4);
    const auto c1 = find("cross_attention", 1), c4 = find("cross_attention", 4);
    const std::int64_t image_tokens = e1.at("image_tokens_per_image").get<std::int64_t>();
    EXPECT_EQ(image_tokens, 16);  // a 4 x 4 patch grid, class token dropped
    // Early fusion: every image token sits in the KV cache.
    EXPECT_EQ(e4.at("kv_cache_bytes").get<std::int64_t>() - e1.at("kv_cache_bytes").get<std::int64_t>(),
              3 * image_tokens * per_token);
    EXPECT_EQ(e4.at("cross_kv_bytes").get<std::int64_t>(), 0);
    EXPECT_GT(e4.at("cache_bytes").get<std::int64_t>(), e1.at("cache_bytes").get<std::int64_t>());
    // Cross-attention: the text part grows by one marker token per image only; the image K/V live in
    // the cross-attention layers, vision tokens (class token included) x kv_dim x K and V per layer.
    EXPECT_EQ(c4.at("kv_cache_bytes").get<std::int64_t>() - c1.at("kv_cache_bytes").get<std::int64_t>(),
              3 * per_token);
    const std::int64_t vision_tokens = c1.at("vision_tokens_per_image").get<std::int64_t>();
    EXPECT_EQ(vision_tokens, 17);
    EXPECT_EQ(c1.at("cross_kv_bytes").get<std::int64_t>(), cross_layers * vision_tokens * 2 * kv_dim * 4);
    EXPECT_EQ(c4.at("cross_kv_bytes").get<std::int64_t>(), 4 * c1.at("cross_kv_bytes").get<std::int64_t>());
    // The prefill sequence: early fusion feeds the image tokens, cross-attention one marker per image.
    EXPECT_EQ(e4.at("sequence_tokens").get<std::int64_t>(), 8 + 4 * image_tokens);
    EXPECT_EQ(c4.at("sequence_tokens").get<std::int64_t>(), 8 + 4);

    const std::string plot = read_bytes(svg);
    ASSERT_FALSE(plot.empty());
    EXPECT_EQ(plot.rfind("<svg", 0), 0u) << plot.substr(0, 80);
    EXPECT_NE(plot.find("</svg>"), std::string::npos);
    for (const char* legend : {"cross-attention (dense)", "cross-attention (MoE)", "early fusion (dense)",
                               "early fusion (MoE)", "images per prompt", "tokens / s"})
        EXPECT_NE(plot.find(legend), std::string::npos) << legend;
    EXPECT_EQ(plot.find("nan"), std::string::npos);
}

TEST_F(CompareCli, TableByDefault) {
    const fs::path svg = tmp / "t.svg";
    const CliResult r = run("--tiny --images 2 --sizes 28 --prompts 8 --gen 3 --svg " + quote(svg.string()));
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("early_fusion"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("cross_attention"), std::string::npos) << r.out;
    EXPECT_TRUE(fs::exists(svg));
}

TEST_F(CompareCli, BadFlagsExitTwoWithOneLine) {
    expect_one_line_failure(run("--bogus"), "--bogus");
    expect_one_line_failure(run("--tiny --repeats 0"), "--repeats");
    expect_one_line_failure(run("--tiny --images 1,x"), "--images");
    expect_one_line_failure(run("--tiny --sizes 30"), "--sizes");
    expect_one_line_failure(run("--tiny --gen"), "--gen");
    expect_one_line_failure(run("--tiny --images 1 --sizes 28 --prompts 8 --gen 1 --svg " +
                                quote((tmp / "no" / "such" / "dir" / "p.svg").string())),
                            "p.svg");
}
