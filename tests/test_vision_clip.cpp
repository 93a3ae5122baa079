// ClipViT (LLaVA's vision tower): against the reference's dumps (golden llava_tiny), and on a
// held-out shape (other patch size, erf GELU, bf16 weights) against a scalar transcription.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include "fusionlm/io/checkpoint.hpp"
#include "fusionlm/io/config.hpp"
#include "fusionlm/io/safetensors.hpp"
#include "fusionlm/io/weights.hpp"
#include "fusionlm/vision/clip_vit.hpp"

namespace fs = std::filesystem;
using namespace fusionlm;

namespace vision_clip_test {

const fs::path kGolden = fs::path(FUSIONLM_TEST_DATA) / "golden" / "llava_tiny";
const std::string kPrefix = "vision_tower.vision_model.";

double rel_error(const Eigen::Ref<const RowMatrix>& out, const Eigen::Ref<const RowMatrix>& expected) {
    EXPECT_EQ(out.rows(), expected.rows());
    EXPECT_EQ(out.cols(), expected.cols());
    if (out.rows() != expected.rows() || out.cols() != expected.cols()) return 1e30;
    const double scale = expected.cwiseAbs().maxCoeff();
    return (out - expected).cwiseAbs().maxCoeff() / (scale > 0 ? scale : 1.0);
}

TEST(VisionClip, GoldenCaseMatchesReference) {
    const auto cfg = load_config(kGolden / "config.json");
    const LlavaConfig& llava = std::get<LlavaConfig>(cfg.family);
    WeightBinder w(Checkpoint::open(kGolden));
    const ClipViT vit = ClipViT::bind(w, llava.vision_config, kPrefix);
    w.ignore_prefix("language_model.");
    w.ignore_prefix("multi_modal_projector.");
    ASSERT_NO_THROW(w.finish());
    ASSERT_EQ(vit.num_layers(), 3);
    ASSERT_EQ(vit.tokens(), 17);

    const SafetensorsFile inputs = SafetensorsFile::open(kGolden / "inputs.safetensors");
    const SafetensorsFile expected = SafetensorsFile::open(kGolden / "expected.safetensors");
    const std::vector<float> pixels = inputs.get("pixel_values").to_f32();
    ThreadPool pool(2);

    std::map<std::int64_t, RowMatrix> states;
    const auto observe = [&](std::string_view stack, std::int64_t index, const Eigen::Ref<const RowMatrix>& h) {
        EXPECT_EQ(stack, "encoder");
        states[index] = h;
    };
    const RowMatrix last = vit.hidden_state(pool, pixels, -1, observe);
    ASSERT_EQ(states.size(), 4u);
    for (std::int64_t i = 0; i <= 3; ++i) {
        SCOPED_TRACE("hidden state " + std::to_string(i));
        EXPECT_LE(rel_error(states[i], to_row_matrix(expected.get("vision_hidden_states." + std::to_string(i)))), 1e-4);
    }
    EXPECT_EQ(rel_error(last, states[3]), 0.0);

    // LLaVA's selection: hidden_states[-2] without the class token; only 2 of the 3 layers run.
    states.clear();
    const RowMatrix selected = vit.hidden_state(pool, pixels, llava.vision_feature_layer, observe);
    EXPECT_EQ(states.size(), 3u);
    EXPECT_LE(rel_error(selected.bottomRows(16), to_row_matrix(expected.get("image_features_selected"))), 1e-4);
}

TEST(VisionClip, LayerIndexAndInputChecks) {
    const auto cfg = load_config(kGolden / "config.json");
    WeightBinder w(Checkpoint::open(kGolden));
    const ClipViT vit = ClipViT::bind(w, std::get<LlavaConfig>(cfg.family).vision_config, kPrefix);
    EXPECT_EQ(vit.resolve_layer(-1), 3);
    EXPECT_EQ(vit.resolve_layer(-2), 2);
    EXPECT_EQ(vit.resolve_layer(-4), 0);
    EXPECT_EQ(vit.resolve_layer(3), 3);
    EXPECT_THROW(vit.resolve_layer(4), InputError);
    EXPECT_THROW(vit.resolve_layer(-5), InputError);
    ThreadPool pool(1);
    const std::vector<float> pixels(3 * 56 * 56 - 1, 0.0f);
    EXPECT_THROW(vit.hidden_state(pool, pixels, -2), InputError);
}

// ---- held-out shape against a scalar reference ----------------------------------------------

struct Params {
    std::map<std::string, std::vector<float>> values;
    std::map<std::string, Shape> shapes;
};

ClipVisionConfig small_config() {
    ClipVisionConfig c;
    c.hidden_size = 20;
    c.intermediate_size = 36;
    c.num_attention_heads = 5;
    c.num_hidden_layers = 3;
    c.image_size = 33;  // patch 6: a 5 x 5 grid, the 3 px remainder dropped as the conv does
    c.patch_size = 6;
    c.num_channels = 3;
    c.hidden_act = "gelu";
    c.layer_norm_eps = 1e-6;
    return c;
}

Params random_params(const ClipVisionConfig& c, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Params p;
    const std::int64_t H = c.hidden_size, I = c.intermediate_size, g = c.image_size / c.patch_size;
    const auto add = [&](const std::string& name, Shape shape, float scale, float offset = 0.0f) {
        std::vector<float> v(std::size_t(numel(shape)));
        for (float& x : v) x = bf16_to_f32(f32_to_bf16(offset + scale * normal(rng)));  // stored as bf16
        p.values[name] = std::move(v);
        p.shapes[name] = std::move(shape);
    };
    const std::string e = kPrefix + "embeddings.";
    add(e + "patch_embedding.weight", {H, c.num_channels, c.patch_size, c.patch_size}, 0.1f);
    add(e + "class_embedding", {H}, 1.0f);
    add(e + "position_embedding.weight", {g * g + 1, H}, 1.0f);
    for (const char* n : {"pre_layrnorm.", "post_layernorm."}) {
        add(kPrefix + n + "weight", {H}, 0.1f, 1.0f);
        add(kPrefix + n + "bias", {H}, 0.1f);
    }
    for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) {
        const std::string l = kPrefix + "encoder.layers." + std::to_string(i) + ".";
        for (const char* n : {"layer_norm1.", "layer_norm2."}) {
            add(l + n + "weight", {H}, 0.1f, 1.0f);
            add(l + n + "bias", {H}, 0.1f);
        }
        for (const char* n : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
            add(l + "self_attn." + n + ".weight", {H, H}, 1.0f / std::sqrt(float(H)));
            add(l + "self_attn." + n + ".bias", {H}, 0.1f);
        }
        add(l + "mlp.fc1.weight", {I, H}, 1.0f / std::sqrt(float(H)));
        add(l + "mlp.fc1.bias", {I}, 0.1f);
        add(l + "mlp.fc2.weight", {H, I}, 1.0f / std::sqrt(float(I)));
        add(l + "mlp.fc2.bias", {H}, 0.1f);
    }
    return p;
}

// CLIP's forward pass transcribed literally, in double; returns hidden_states[0..L].
std::vector<std::vector<double>> reference_states(const ClipVisionConfig& c, const Params& p,
                                                  const std::vector<float>& pixels) {
    const std::int64_t H = c.hidden_size, S = c.image_size, ps = c.patch_size, C = c.num_channels;
    const std::int64_t g = S / ps, N = g * g + 1, heads = c.num_attention_heads, d = H / heads;
    const auto& P = p.values;
    const auto W = [&](const std::string& n) -> const std::vector<float>& { return P.at(n); };
    const auto norm = [&](std::vector<double>& x, const std::string& n) {
        for (std::int64_t i = 0; i < N; ++i) {
            double mean = 0, var = 0;
            for (std::int64_t o = 0; o < H; ++o) mean += x[std::size_t(i * H + o)];
            mean /= double(H);
            for (std::int64_t o = 0; o < H; ++o) var += std::pow(x[std::size_t(i * H + o)] - mean, 2);
            var /= double(H);
            for (std::int64_t o = 0; o < H; ++o)
                x[std::size_t(i * H + o)] = (x[std::size_t(i * H + o)] - mean) / std::sqrt(var + c.layer_norm_eps) *
                                                W(n + ".weight")[std::size_t(o)] +
                                            W(n + ".bias")[std::size_t(o)];
        }
    };
    const auto dense = [&](const std::vector<double>& x, const std::string& n) {
        const Shape& s = p.shapes.at(n + ".weight");
        const std::int64_t out = s[0], in = s[1];
        std::vector<double> y(std::size_t(N * out));
        for (std::int64_t i = 0; i < N; ++i)
            for (std::int64_t o = 0; o < out; ++o) {
                double acc = W(n + ".bias")[std::size_t(o)];
                for (std::int64_t k = 0; k < in; ++k) acc += x[std::size_t(i * in + k)] * W(n + ".weight")[std::size_t(o * in + k)];
                y[std::size_t(i * out + o)] = acc;
            }
        return y;
    };

    const std::string e = kPrefix + "embeddings.";
    std::vector<double> h(std::size_t(N * H));
    for (std::int64_t j = 0; j < N; ++j)
        for (std::int64_t o = 0; o < H; ++o) {
            double x = W(e + "class_embedding")[std::size_t(o)];
            if (j > 0) {
                const std::int64_t py = (j - 1) / g, px = (j - 1) % g;
                x = 0;
                for (std::int64_t ch = 0; ch < C; ++ch)
                    for (std::int64_t ky = 0; ky < ps; ++ky)
                        for (std::int64_t kx = 0; kx < ps; ++kx)
                            x += double(W(e + "patch_embedding.weight")[std::size_t(((o * C + ch) * ps + ky) * ps + kx)]) *
                                 pixels[std::size_t((ch * S + py * ps + ky) * S + px * ps + kx)];
            }
            h[std::size_t(j * H + o)] = x + W(e + "position_embedding.weight")[std::size_t(j * H + o)];
        }
    norm(h, kPrefix + "pre_layrnorm");
    std::vector<std::vector<double>> states{h};
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
        const std::string L = kPrefix + "encoder.layers." + std::to_string(l) + ".";
        std::vector<double> x = h;
        norm(x, L + "layer_norm1");
        const auto q = dense(x, L + "self_attn.q_proj"), k = dense(x, L + "self_attn.k_proj"),
                   v = dense(x, L + "self_attn.v_proj");
        std::vector<double> a(static_cast<std::size_t>(N * H)), s(static_cast<std::size_t>(N));
        for (std::int64_t hd = 0; hd < heads; ++hd)
            for (std::int64_t i = 0; i < N; ++i) {
                double mx = -1e300, sum = 0;
                for (std::int64_t j = 0; j < N; ++j) {
                    double dot = 0;
                    for (std::int64_t t = 0; t < d; ++t) dot += q[std::size_t(i * H + hd * d + t)] * k[std::size_t(j * H + hd * d + t)];
                    s[std::size_t(j)] = dot / std::sqrt(double(d));
                    mx = std::max(mx, s[std::size_t(j)]);
                }
                for (double& z : s) sum += (z = std::exp(z - mx));
                for (std::int64_t t = 0; t < d; ++t) {
                    double acc = 0;
                    for (std::int64_t j = 0; j < N; ++j) acc += s[std::size_t(j)] * v[std::size_t(j * H + hd * d + t)];
                    a[std::size_t(i * H + hd * d + t)] = acc / sum;
                }
            }
        const auto o = dense(a, L + "self_attn.out_proj");
        for (std::size_t i = 0; i < h.size(); ++i) h[i] += o[i];
        x = h;
        norm(x, L + "layer_norm2");
        auto f = dense(x, L + "mlp.fc1");
        for (double& z : f) z = 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0)));
        const auto y = dense(f, L + "mlp.fc2");
        for (std::size_t i = 0; i < h.size(); ++i) h[i] += y[i];
        states.push_back(h);
    }
    return states;
}

TEST(VisionClip, HeldOutShapeBf16MatchesScalarReference) {
    const ClipVisionConfig c = small_config();
    const Params params = random_params(c, 5);
    const fs::path dir = fs::temp_directory_path() / ("fusionlm_vision_clip_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    std::vector<OwnedTensor> tensors;
    for (const auto& [name, v] : params.values) {
        std::vector<std::uint16_t> h(v.size());
        f32_to_bf16(v.data(), h.data(), v.size());
        tensors.push_back(OwnedTensor::from(name, DType::BF16, params.shapes.at(name), std::span<const std::uint16_t>(h)));
    }
    write_safetensors(dir / "model.safetensors", tensors);

    WeightBinder w(Checkpoint::open(dir));
    const ClipViT vit = ClipViT::bind(w, c, kPrefix);
    ASSERT_NO_THROW(w.finish());
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> pixels(std::size_t(3 * 33 * 33));
    for (float& x : pixels) x = normal(rng);

    const auto want = reference_states(c, params, pixels);
    ThreadPool pool(2);
    std::map<std::int64_t, RowMatrix> got;
    vit.hidden_state(pool, pixels, -1, [&](std::string_view, std::int64_t i, const Eigen::Ref<const RowMatrix>& h) { got[i] = h; });
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
        const RowMatrix wm = Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(want[i].data(), 26, 20).cast<float>();
        EXPECT_LE(rel_error(got[std::int64_t(i)], wm), 1e-4) << "hidden state " << i;
    }
    fs::remove_all(dir);
}

}  // namespace vision_clip_test
