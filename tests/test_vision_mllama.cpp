// TiledViT (Mllama vision encoder): against the reference's dumps (golden mllama_tiny), and on
// held-out shapes against a literal scalar transcription of the reference forward pass (dense
// lowest-float mask, direct convolution, double accumulation).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <unistd.h>
#include <string>
#include <vector>

#include "fusionlm/io/checkpoint.hpp"
#include "fusionlm/io/config.hpp"
#include "fusionlm/io/safetensors.hpp"
#include "fusionlm/io/weights.hpp"
#include "fusionlm/vision/tiled_vit.hpp"

namespace fs = std::filesystem;
using namespace fusionlm;

namespace vision_mllama_test {

const fs::path kGolden = fs::path(FUSIONLM_TEST_DATA) / "golden" / "mllama_tiny";

double rel_error(const Eigen::Ref<const RowMatrix>& out, const Eigen::Ref<const RowMatrix>& expected) {
    EXPECT_EQ(out.rows(), expected.rows());
    EXPECT_EQ(out.cols(), expected.cols());
    if (out.rows() != expected.rows() || out.cols() != expected.cols()) return 1e30;
    const double scale = expected.cwiseAbs().maxCoeff();
    return (out - expected).cwiseAbs().maxCoeff() / (scale > 0 ? scale : 1.0);
}

// Encodes every image slot of a reference case and compares vision_output and whichever
// vision_{local,global}_hidden_states.{i} the case holds.
void check_case(const fs::path& dir, std::int64_t expected_states) {
    const auto cfg = load_config(dir / "config.json");
    const MllamaVisionConfig& vc = std::get<MllamaConfig>(cfg.family).vision_config;
    WeightBinder w(Checkpoint::open(dir));
    const TiledViT vit = TiledViT::bind(w, vc, "vision_model.");
    w.ignore_prefix("language_model.");
    w.ignore_prefix("multi_modal_projector.");
    ASSERT_NO_THROW(w.finish());

    const SafetensorsFile inputs = SafetensorsFile::open(dir / "inputs.safetensors");
    const SafetensorsFile expected = SafetensorsFile::open(dir / "expected.safetensors");
    const std::vector<float> pixels = inputs.get("pixel_values").to_f32();
    const std::vector<std::int64_t> ids = to_i64(inputs.get("aspect_ratio_ids"));
    const std::vector<std::int64_t> masks = to_i64(inputs.get("aspect_ratio_mask"));
    const RowMatrix want_output = to_row_matrix(expected.get("vision_output"));  // [images*T*P, D]

    const std::int64_t images = std::int64_t(ids.size()), T = vit.max_tiles(), S = vit.image_size();
    const std::int64_t per_image = T * vit.channels() * S * S;
    const std::int64_t rows_out = T * vit.tokens_per_tile(), rows_padded = T * vit.padded_tokens_per_tile();
    ASSERT_EQ(std::int64_t(pixels.size()), images * per_image);
    std::map<std::string, RowMatrix> states;  // "local.{i}" -> [images * T * padded, hidden]
    ThreadPool pool(2);
    RowMatrix got_output(images * rows_out, vit.output_dim());
    for (std::int64_t img = 0; img < images; ++img) {
        const auto observe = [&](std::string_view stack, std::int64_t index, const Eigen::Ref<const RowMatrix>& h) {
            RowMatrix& all = states[std::string(stack) + "." + std::to_string(index)];
            if (all.size() == 0) all.setZero(images * rows_padded, h.cols());
            ASSERT_EQ(h.rows(), rows_padded);
            all.middleRows(img * rows_padded, rows_padded) = h;
        };
        got_output.middleRows(img * rows_out, rows_out) =
            vit.encode(pool, std::span(pixels).subspan(std::size_t(img * per_image), std::size_t(per_image)),
                       ids[std::size_t(img)], std::span(masks).subspan(std::size_t(img * T), std::size_t(T)), observe);
    }
    EXPECT_LE(rel_error(got_output, want_output), 1e-4);
    EXPECT_EQ(states.size(), std::size_t(vc.num_hidden_layers + 1 + vc.num_global_layers + 1));
    std::int64_t compared = 0;
    for (const auto& [key, got] : states) {
        const std::string stack = key.substr(0, key.find('.'));
        const TensorView* want = expected.find("vision_" + stack + "_hidden_states" + key.substr(key.find('.')));
        if (!want) continue;
        SCOPED_TRACE(key);
        EXPECT_LE(rel_error(got, to_row_matrix(*want)), 1e-4);
        ++compared;
    }
    EXPECT_EQ(compared, expected_states);
}

TEST(VisionMllama, GoldenCaseMatchesReference) {
    check_case(kGolden, 4 + 3);
}

// An independent PyTorch transcription (tests/data/heldout/README.md): 42 px tiles with 14 px patches
// (10 tokens padded to 16), 3 tiles, intermediate layer 0, bf16 weights.
TEST(VisionMllama, HeldOutBf16CaseMatches) {
    check_case(fs::path(FUSIONLM_TEST_DATA) / "heldout" / "mllama_bf16", 0);
}

// ---- held-out shapes: random weights, compared with a literal scalar reference ----------------

struct Params {
    std::map<std::string, std::vector<float>> values;
    std::map<std::string, Shape> shapes;
};

// Random parameters for `c`, rounded to bf16 when the checkpoint will store bf16, so the reference
// sees exactly the values the encoder widens.
Params random_params(const MllamaVisionConfig& c, bool bf16, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Params p;
    const std::int64_t H = c.hidden_size, I = c.intermediate_size, T = c.max_num_tiles;
    const std::int64_t grid = c.image_size / c.patch_size, P = grid * grid + 1;
    const std::int64_t A = std::int64_t(c.supported_aspect_ratios.size()) + 1;
    const auto add = [&](const std::string& name, Shape shape, float scale, float offset = 0.0f) {
        std::vector<float> v(std::size_t(numel(shape)));
        for (float& x : v) {
            x = offset + scale * normal(rng);
            if (bf16) x = bf16_to_f32(f32_to_bf16(x));
        }
        p.values[name] = std::move(v);
        p.shapes[name] = std::move(shape);
    };
    const std::string m = "vision_model.";
    add(m + "patch_embedding.weight", {H, c.num_channels, c.patch_size, c.patch_size}, 0.1f);
    add(m + "class_embedding", {H}, 1.0f);
    add(m + "gated_positional_embedding.embedding", {P, H}, 1.0f);
    add(m + "gated_positional_embedding.gate", {1}, 0.5f, 0.3f);
    add(m + "gated_positional_embedding.tile_embedding.weight", {A, T * P * H}, 1.0f);
    for (const char* e : {"pre_tile_positional_embedding.", "post_tile_positional_embedding."}) {
        add(m + e + "embedding.weight", {A, T * H}, 1.0f);
        add(m + e + "gate", {1}, 0.5f, 0.4f);
    }
    for (const char* n : {"layernorm_pre.", "layernorm_post."}) {
        add(m + n + "weight", {H}, 0.1f, 1.0f);
        add(m + n + "bias", {H}, 0.1f);
    }
    const auto layer = [&](const std::string& l, bool gated) {
        for (const char* n : {"input_layernorm.", "post_attention_layernorm."}) {
            add(l + n + "weight", {H}, 0.1f, 1.0f);
            add(l + n + "bias", {H}, 0.1f);
        }
        for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"})
            add(l + "self_attn." + n + ".weight", {H, H}, 1.0f / std::sqrt(float(H)));
        add(l + "mlp.fc1.weight", {I, H}, 1.0f / std::sqrt(float(H)));
        add(l + "mlp.fc1.bias", {I}, 0.1f);
        add(l + "mlp.fc2.weight", {H, I}, 1.0f / std::sqrt(float(I)));
        add(l + "mlp.fc2.bias", {H}, 0.1f);
        if (gated) {
            add(l + "gate_attn", {1}, 0.3f, 0.6f);
            add(l + "gate_ffn", {1}, 0.3f, -0.5f);
        }
    };
    for (std::int64_t i = 0; i < c.num_hidden_layers; ++i) layer(m + "transformer.layers." + std::to_string(i) + ".", false);
    for (std::int64_t i = 0; i < c.num_global_layers; ++i)
        layer(m + "global_transformer.layers." + std::to_string(i) + ".", true);
    return p;
}

void write_checkpoint(const fs::path& dir, const Params& p, bool bf16) {
    fs::create_directories(dir);
    std::vector<OwnedTensor> tensors;
    for (const auto& [name, v] : p.values) {
        if (bf16) {
            std::vector<std::uint16_t> h(v.size());
            f32_to_bf16(v.data(), h.data(), v.size());
            tensors.push_back(OwnedTensor::from(name, DType::BF16, p.shapes.at(name), std::span<const std::uint16_t>(h)));
        } else {
            tensors.push_back(OwnedTensor::f32(name, p.shapes.at(name), v));
        }
    }
    write_safetensors(dir / "model.safetensors", tensors);
}

// The reference forward pass, transcribed literally (no reordering, dense additive mask).
class ReferenceViT {
public:
    ReferenceViT(const MllamaVisionConfig& c, const Params& p) : c_(c), p_(p) {}

    std::vector<double> encode(const std::vector<float>& pixels, std::int64_t id, const std::vector<std::int64_t>& mask) const {
        const std::int64_t H = c_.hidden_size, T = c_.max_num_tiles, S = c_.image_size, ps = c_.patch_size;
        const std::int64_t C = c_.num_channels, g = S / ps, np = g * g, P = np + 1, Lp = (P + 7) / 8 * 8, N = T * Lp;
        const std::string m = "vision_model.";
        const auto& w = p_.values;
        const float pos_gate = std::tanh(w.at(m + "gated_positional_embedding.gate")[0]);
        const float pre_gate = std::tanh(w.at(m + "pre_tile_positional_embedding.gate")[0]);
        const float post_gate = std::tanh(w.at(m + "post_tile_positional_embedding.gate")[0]);
        const auto& conv = w.at(m + "patch_embedding.weight");
        const auto& pre = w.at(m + "pre_tile_positional_embedding.embedding.weight");
        const auto& post = w.at(m + "post_tile_positional_embedding.embedding.weight");
        const auto& pos = w.at(m + "gated_positional_embedding.embedding");
        const auto& tile_pos = w.at(m + "gated_positional_embedding.tile_embedding.weight");
        const auto& cls = w.at(m + "class_embedding");

        std::vector<float> h(std::size_t(N * H), 0.0f);
        for (std::int64_t t = 0; t < T; ++t)
            for (std::int64_t j = 0; j < P; ++j)
                for (std::int64_t o = 0; o < H; ++o) {
                    float x;
                    if (j == 0) {
                        x = cls[std::size_t(o)];
                    } else {
                        const std::int64_t py = (j - 1) / g, px = (j - 1) % g;
                        double acc = 0;
                        for (std::int64_t ch = 0; ch < C; ++ch)
                            for (std::int64_t ky = 0; ky < ps; ++ky)
                                for (std::int64_t kx = 0; kx < ps; ++kx)
                                    acc += double(conv[std::size_t(((o * C + ch) * ps + ky) * ps + kx)]) *
                                           pixels[std::size_t(((t * C + ch) * S + py * ps + ky) * S + px * ps + kx)];
                        x = float(acc) + pre[std::size_t(id * T * H + t * H + o)] * pre_gate;
                    }
                    x += (1.0f - pos_gate) * pos[std::size_t(j * H + o)];
                    x += pos_gate * tile_pos[std::size_t(((id * T + t) * P + j) * H + o)];
                    h[std::size_t((t * Lp + j) * H + o)] = x;
                }
        for (std::int64_t t = 0; t < T; ++t)
            for (std::int64_t j = 0; j < P; ++j) norm(&h[std::size_t((t * Lp + j) * H)], m + "layernorm_pre", 1e-5);

        // 1 where a token is padding (a masked tile, or the alignment tokens); a pair is masked when
        // both are padding, with the lowest float added to the score.
        std::vector<float> additive(std::size_t(N * N));
        for (std::int64_t a = 0; a < N; ++a)
            for (std::int64_t b = 0; b < N; ++b) {
                const bool pa = !mask[std::size_t(a / Lp)] || a % Lp >= P, pb = !mask[std::size_t(b / Lp)] || b % Lp >= P;
                additive[std::size_t(a * N + b)] = (pa && pb) ? std::numeric_limits<float>::lowest() : 0.0f;
            }

        std::vector<std::vector<float>> states{h};
        for (std::int64_t l = 0; l < c_.num_hidden_layers; ++l) {
            layer(h, N, m + "transformer.layers." + std::to_string(l) + ".", false, additive);
            states.push_back(h);
        }
        for (std::int64_t i = 0; i < N; ++i) norm(&h[std::size_t(i * H)], m + "layernorm_post", 1e-5);
        for (std::int64_t i = 0; i < N; ++i)
            for (std::int64_t o = 0; o < H; ++o)
                h[std::size_t(i * H + o)] += post[std::size_t(id * T * H + (i / Lp) * H + o)] * post_gate;
        for (std::int64_t l = 0; l < c_.num_global_layers; ++l)
            layer(h, N, m + "global_transformer.layers." + std::to_string(l) + ".", true, additive);

        std::vector<std::int64_t> selected;
        for (std::int64_t idx = 0; idx <= c_.num_hidden_layers; ++idx)
            for (std::int64_t s : c_.intermediate_layers_indices)
                if (s == idx) { selected.push_back(idx); break; }
        const std::int64_t K = std::int64_t(selected.size()), D = H * (1 + K);
        std::vector<double> out(std::size_t(T * P * D));
        for (std::int64_t t = 0; t < T; ++t)
            for (std::int64_t j = 0; j < P; ++j)
                for (std::int64_t o = 0; o < H; ++o) {
                    const std::size_t src = std::size_t((t * Lp + j) * H + o), dst = std::size_t((t * P + j) * D);
                    out[dst + std::size_t(o)] = h[src];
                    for (std::int64_t k = 0; k < K; ++k)
                        out[dst + std::size_t(H + o * K + k)] = states[std::size_t(selected[std::size_t(k)])][src];
                }
        return out;
    }

private:
    void norm(float* x, const std::string& name, double eps) const {
        const std::int64_t H = c_.hidden_size;
        const auto& w = p_.values.at(name + ".weight");
        const auto& b = p_.values.at(name + ".bias");
        double mean = 0, var = 0;
        for (std::int64_t o = 0; o < H; ++o) mean += x[o];
        mean /= double(H);
        for (std::int64_t o = 0; o < H; ++o) var += (x[o] - mean) * (x[o] - mean);
        var /= double(H);
        for (std::int64_t o = 0; o < H; ++o)
            x[o] = float((x[o] - mean) / std::sqrt(var + eps) * w[std::size_t(o)] + b[std::size_t(o)]);
    }

    // y [N, out] = x [N, in] W^T (+ b)
    std::vector<float> dense(const std::vector<float>& x, std::int64_t N, const std::string& name, bool bias) const {
        const auto& W = p_.values.at(name + ".weight");
        const Shape& s = p_.shapes.at(name + ".weight");
        const std::int64_t out = s[0], in = s[1];
        std::vector<float> y(std::size_t(N * out));
        for (std::int64_t i = 0; i < N; ++i)
            for (std::int64_t o = 0; o < out; ++o) {
                double acc = bias ? p_.values.at(name + ".bias")[std::size_t(o)] : 0.0;
                for (std::int64_t k = 0; k < in; ++k) acc += double(x[std::size_t(i * in + k)]) * W[std::size_t(o * in + k)];
                y[std::size_t(i * out + o)] = float(acc);
            }
        return y;
    }

    void layer(std::vector<float>& h, std::int64_t N, const std::string& l, bool gated,
               const std::vector<float>& additive) const {
        const std::int64_t H = c_.hidden_size, heads = c_.attention_heads, d = H / heads;
        const float ga = gated ? std::tanh(p_.values.at(l + "gate_attn")[0]) : 1.0f;
        const float gf = gated ? std::tanh(p_.values.at(l + "gate_ffn")[0]) : 1.0f;
        std::vector<float> x = h;
        for (std::int64_t i = 0; i < N; ++i) norm(&x[std::size_t(i * H)], l + "input_layernorm", c_.norm_eps);
        const auto q = dense(x, N, l + "self_attn.q_proj", false), k = dense(x, N, l + "self_attn.k_proj", false),
                   v = dense(x, N, l + "self_attn.v_proj", false);
        std::vector<float> a(std::size_t(N * H));
        std::vector<double> p(static_cast<std::size_t>(N));
        for (std::int64_t hd = 0; hd < heads; ++hd)
            for (std::int64_t i = 0; i < N; ++i) {
                double mx = -std::numeric_limits<double>::infinity();
                for (std::int64_t j = 0; j < N; ++j) {
                    double dot = 0;
                    for (std::int64_t e = 0; e < d; ++e)
                        dot += double(q[std::size_t(i * H + hd * d + e)]) * k[std::size_t(j * H + hd * d + e)];
                    // In f32, as the reference adds the mask: lowest + score rounds to lowest.
                    const float s = float(dot / std::sqrt(double(d))) + additive[std::size_t(i * N + j)];
                    p[std::size_t(j)] = s;
                    mx = std::max(mx, double(s));
                }
                double sum = 0;
                for (std::int64_t j = 0; j < N; ++j) sum += (p[std::size_t(j)] = std::exp(p[std::size_t(j)] - mx));
                for (std::int64_t e = 0; e < d; ++e) {
                    double acc = 0;
                    for (std::int64_t j = 0; j < N; ++j) acc += p[std::size_t(j)] * v[std::size_t(j * H + hd * d + e)];
                    a[std::size_t(i * H + hd * d + e)] = float(acc / sum);
                }
            }
        const auto o = dense(a, N, l + "self_attn.o_proj", false);
        for (std::size_t i = 0; i < h.size(); ++i) h[i] += ga * o[i];
        x = h;
        for (std::int64_t i = 0; i < N; ++i) norm(&x[std::size_t(i * H)], l + "post_attention_layernorm", c_.norm_eps);
        auto f = dense(x, N, l + "mlp.fc1", true);
        for (float& z : f) z = float(0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0))));
        const auto y = dense(f, N, l + "mlp.fc2", true);
        for (std::size_t i = 0; i < h.size(); ++i) h[i] += gf * y[i];
    }

    const MllamaVisionConfig& c_;
    const Params& p_;
};

MllamaVisionConfig small_config(std::int64_t image, std::int64_t patch, std::int64_t tiles) {
    MllamaVisionConfig c;
    c.hidden_size = 24;
    c.intermediate_size = 40;
    c.attention_heads = 3;
    c.num_hidden_layers = 3;
    c.num_global_layers = 2;
    c.image_size = image;
    c.patch_size = patch;
    c.num_channels = 3;
    c.max_num_tiles = tiles;
    c.intermediate_layers_indices = {3, 0};
    c.vision_output_dim = 24 * 3;
    c.hidden_act = "gelu";
    c.norm_eps = 1e-5;
    c.supported_aspect_ratios = {{1, 1}, {1, 2}, {2, 1}};
    return c;
}

struct HeldOut {
    const char* name;
    std::int64_t image, patch, tiles;
    bool bf16;
    std::vector<std::vector<std::int64_t>> masks;  // one image per mask
};

class VisionMllamaHeldOut : public ::testing::TestWithParam<HeldOut> {};

TEST_P(VisionMllamaHeldOut, MatchesScalarReference) {
    const HeldOut& tc = GetParam();
    const MllamaVisionConfig c = small_config(tc.image, tc.patch, tc.tiles);
    const Params params = random_params(c, tc.bf16, 7);
    const fs::path dir = fs::temp_directory_path() / ("fusionlm_vision_" + std::string(tc.name) + "_" +
                                                      std::to_string(::getpid()));
    write_checkpoint(dir, params, tc.bf16);
    WeightBinder w(Checkpoint::open(dir));
    const TiledViT vit = TiledViT::bind(w, c, "vision_model.");
    ASSERT_NO_THROW(w.finish());
    const ReferenceViT ref(c, params);

    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    ThreadPool pool(2);
    std::int64_t id = 0;
    for (const auto& mask : tc.masks) {
        std::vector<float> pixels(std::size_t(c.max_num_tiles * 3 * c.image_size * c.image_size));
        for (float& x : pixels) x = normal(rng);
        const RowMatrix got = vit.encode(pool, pixels, id, mask);
        const std::vector<double> want = ref.encode(pixels, id, mask);
        ASSERT_EQ(got.size(), std::int64_t(want.size()));
        const RowMatrix want_m = Eigen::Map<const Eigen::Matrix<double, -1, -1, Eigen::RowMajor>>(
                                     want.data(), got.rows(), got.cols())
                                     .cast<float>();
        EXPECT_LE(rel_error(got, want_m), 1e-4) << "mask #" << id;
        id = (id + 1) % 4;
    }
    fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, VisionMllamaHeldOut,
    ::testing::Values(
        // 42 px / 7 px patches: 37 tokens padded to 40; 3 tiles.
        HeldOut{"p7", 42, 7, 3, false, {{1, 1, 0}, {1, 0, 0}, {1, 1, 1}, {0, 0, 0}}},
        // 44 px / 8 px patches: the 4 px remainder is dropped as the conv does; 26 tokens padded to 32.
        HeldOut{"p8_remainder", 44, 8, 2, false, {{1, 0}, {1, 1}}},
        // bf16 weights widened to f32; 1 tile, 17 tokens padded to 24.
        HeldOut{"bf16", 28, 7, 1, true, {{1}, {0}}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(VisionMllama, RejectsBadInputsAndConfigs) {
    MllamaVisionConfig c = small_config(28, 7, 2);
    const Params params = random_params(c, false, 3);
    const fs::path dir = fs::temp_directory_path() / ("fusionlm_vision_bad_" + std::to_string(::getpid()));
    write_checkpoint(dir, params, false);
    {
        WeightBinder w(Checkpoint::open(dir));
        const TiledViT vit = TiledViT::bind(w, c, "vision_model.");
        w.finish();
        ThreadPool pool(1);
        const std::vector<float> pixels(std::size_t(2 * 3 * 28 * 28), 0.5f);
        const std::vector<std::int64_t> mask{1, 0};
        EXPECT_THROW(vit.encode(pool, std::span(pixels).first(100), 0, mask), InputError);
        EXPECT_THROW(vit.encode(pool, pixels, 4, mask), InputError);   // 3 supported ratios -> ids 0..3
        EXPECT_THROW(vit.encode(pool, pixels, -1, mask), InputError);
        EXPECT_THROW(vit.encode(pool, pixels, 1, std::vector<std::int64_t>{1}), InputError);
        EXPECT_THROW(vit.encode(pool, pixels, 1, std::vector<std::int64_t>{1, 2}), InputError);
        EXPECT_NO_THROW(vit.encode(pool, pixels, 3, mask));
    }
    {
        MllamaVisionConfig bad = c;
        bad.vision_output_dim = 24 * 4;
        WeightBinder w(Checkpoint::open(dir));
        EXPECT_THROW(TiledViT::bind(w, bad, "vision_model."), ConfigError);
    }
    {
        MllamaVisionConfig bad = c;
        bad.intermediate_layers_indices = {4};
        bad.vision_output_dim = 48;
        WeightBinder w(Checkpoint::open(dir));
        EXPECT_THROW(TiledViT::bind(w, bad, "vision_model."), ConfigError);
    }
    {
        MllamaVisionConfig bad = c;
        bad.attention_heads = 5;  // 24 is not a multiple of 5
        WeightBinder w(Checkpoint::open(dir));
        EXPECT_THROW(TiledViT::bind(w, bad, "vision_model."), ConfigError);
    }
    {
        // A checkpoint made for 2 tiles does not fit a 3-tile config: named in one ShapeError.
        MllamaVisionConfig other = c;
        other.max_num_tiles = 3;
        WeightBinder w(Checkpoint::open(dir));
        (void)TiledViT::bind(w, other, "vision_model.");
        try {
            w.finish();
            ADD_FAILURE() << "finish() accepted mis-shaped tile embeddings";
        } catch (const ShapeError& e) {
            EXPECT_NE(std::string(e.what()).find("pre_tile_positional_embedding.embedding.weight"), std::string::npos);
        }
    }
    fs::remove_all(dir);
}

}  // namespace vision_mllama_test
