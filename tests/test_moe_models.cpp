// The MoE families (Mixtral, Qwen2-MoE, OLMoE) against the golden reference cases through the library:
// router logits, hidden states, logits, greedy tokens and the top-k expert sets on real tokens; a
// Qwen2-MoE checkpoint that mixes dense and sparse layers; cached decoding against a longer prefill;
// checkpoint faults; held-out MoE cases through the parity runner; and fusionlm-parity on the MoE cases.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../examples/parity_case.hpp"
#include "../examples/parity_moe.hpp"
#include "fusionlm/generate.hpp"
#include "fusionlm/io/config.hpp"
#include "fusionlm/io/safetensors.hpp"
#include "fusionlm/models/mixtral.hpp"
#include "fusionlm/models/olmoe.hpp"
#include "fusionlm/models/qwen2_moe.hpp"
#include "fusionlm/text_model/moe.hpp"

namespace moe_models_test {

using namespace fusionlm;
namespace fs = std::filesystem;

const fs::path kGolden = fs::path(FUSIONLM_TEST_DATA) / "golden";

class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "fusionlm-moe-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

struct Inputs {
    std::int64_t batch = 0, seq = 0;
    std::vector<std::int64_t> ids, mask, positions;
    TokenBatch view() const { return {batch, seq, ids, mask, positions}; }
    bool real(Eigen::Index row) const { return mask[std::size_t(row)] != 0; }
};

Inputs read_inputs(const fs::path& dir) {
    const SafetensorsFile f = SafetensorsFile::open(dir / "inputs.safetensors");
    Inputs in;
    const TensorView* ids = f.find("input_ids");
    in.batch = ids->shape[0];
    in.seq = ids->shape[1];
    in.ids = to_i64(*ids);
    in.mask = to_i64(*f.find("attention_mask"));
    in.positions = to_i64(*f.find("position_ids"));
    return in;
}

// rel = max|out - exp| / max|exp| over the rows of real tokens (row r of [B*S, ...] is token r).
double rel_err_real(const RowMatrix& out, const RowMatrix& exp, const Inputs& in, double* max_abs = nullptr) {
    EXPECT_EQ(out.rows(), exp.rows());
    EXPECT_EQ(out.cols(), exp.cols());
    double diff = 0, scale = 0;
    for (Eigen::Index r = 0; r < exp.rows() && r < out.rows(); ++r) {
        if (!in.real(r)) continue;
        diff = std::max(diff, double((out.row(r) - exp.row(r)).cwiseAbs().maxCoeff()));
        scale = std::max(scale, double(exp.row(r).cwiseAbs().maxCoeff()));
    }
    if (max_abs) *max_abs = diff;
    return diff / scale;
}

// A [B, S, X] (or [B*S, X]) reference tensor as [B*S, X].
RowMatrix expected_rows(const SafetensorsFile& f, const std::string& name) {
    const TensorView* t = f.find(name);
    if (!t) throw std::runtime_error("expected tensor missing: " + name);
    const std::vector<float> v = t->to_f32();
    const Eigen::Index cols = Eigen::Index(t->shape.back());
    return ConstRowMap(v.data(), Eigen::Index(v.size()) / cols, cols);
}

template <class Model>
void check_golden_case(const std::string& name, const Model& model, std::int64_t layers, int top_k, int threads) {
    SCOPED_TRACE(name + " threads " + std::to_string(threads));
    const fs::path dir = kGolden / name;
    const Inputs in = read_inputs(dir);
    const SafetensorsFile expected = SafetensorsFile::open(dir / "expected.safetensors");
    ThreadPool pool(threads);
    auto session = model.new_session(in.batch);
    DecoderTrace trace;
    const RowMatrix logits = model.forward(pool, session, in.view(), Logits::All, &trace);

    double abs = 0;
    EXPECT_LE(rel_err_real(logits, expected_rows(expected, "logits"), in, &abs), 1e-4);
    EXPECT_LE(abs, 1e-3);
    ASSERT_EQ(std::int64_t(trace.hidden_states.size()), layers + 1);
    for (std::int64_t i = 0; i <= layers; ++i)
        EXPECT_LE(rel_err_real(trace.hidden_states[std::size_t(i)],
                               expected_rows(expected, "hidden_states." + std::to_string(i)), in),
                  1e-4)
            << "hidden_states." << i;
    EXPECT_LE(rel_err_real(trace.last_layer_output,
                           expected_rows(expected, "layer_output." + std::to_string(layers - 1)), in),
              1e-4);

    ASSERT_EQ(std::int64_t(trace.router_logits.size()), layers);
    for (const auto& [layer, ours] : trace.router_logits) {
        const RowMatrix ref = expected_rows(expected, "router_logits." + std::to_string(layer));
        EXPECT_LE(rel_err_real(ours, ref, in), 1e-4) << "router_logits." << layer;
        // The chosen expert sets must agree exactly on real tokens.
        const MoeRouting a = route_top_k(ours, top_k, false), b = route_top_k(ref, top_k, false);
        for (Eigen::Index t = 0; t < ref.rows(); ++t) {
            if (!in.real(t)) continue;
            const auto at = a.experts.begin() + t * top_k, bt = b.experts.begin() + t * top_k;
            EXPECT_EQ(std::set<int>(at, at + top_k), std::set<int>(bt, bt + top_k))
                << "layer " << layer << " token " << t;
        }
    }

    // Greedy decoding with the KV cache continues from the prefill logits.
    const TensorView* greedy = expected.find("greedy_tokens");
    ASSERT_NE(greedy, nullptr);
    const std::vector<std::int64_t> want = to_i64(*greedy);
    const std::int64_t steps = greedy->shape[1];
    const RowMatrix scores_ref = expected_rows(expected, "greedy_scores");  // [B * steps, V]
    auto decode_session = model.new_session(in.batch);
    GenerateOptions opt;
    opt.max_new_tokens = steps;
    opt.keep_scores = true;
    const GenerateResult got = generate(pool, model, decode_session, in.view(), opt);
    for (std::int64_t b = 0; b < in.batch; ++b) {
        const std::vector<std::int64_t> expect_b(want.begin() + b * steps, want.begin() + (b + 1) * steps);
        EXPECT_EQ(got.tokens[std::size_t(b)], expect_b) << "item " << b;
        for (std::int64_t s = 0; s < steps && s < std::int64_t(got.scores.size()); ++s) {
            const auto ours = got.scores[std::size_t(s)].row(Eigen::Index(b));
            const auto ref = scores_ref.row(Eigen::Index(b * steps + s));
            EXPECT_LE((ours - ref).cwiseAbs().maxCoeff(), 1e-3f) << "item " << b << " step " << s;
        }
    }
}

TEST(MoeGolden, Mixtral) {
    const MixtralModel model = load_mixtral(kGolden / "mixtral_tiny");
    for (int threads : {1, 2}) check_golden_case("mixtral_tiny", model, 3, 2, threads);
}

TEST(MoeGolden, Qwen2Moe) {
    const Qwen2MoeModel model = load_qwen2_moe(kGolden / "qwen2_moe_tiny");
    for (int threads : {1, 2}) check_golden_case("qwen2_moe_tiny", model, 3, 3, threads);
}

TEST(MoeGolden, OlmoeBf16) {
    const OlmoeModel model = load_olmoe(kGolden / "olmoe_tiny_bf16");
    for (int threads : {1, 2}) check_golden_case("olmoe_tiny_bf16", model, 3, 2, threads);
}

// The last logits after decoding one token through the cache equal a prefill of the longer prompt.
template <class Model>
void check_cached_decode(const Model& model, const Inputs& in, std::int64_t next_token) {
    ThreadPool pool(2);
    auto cached = model.new_session(in.batch);
    model.forward(pool, cached, in.view(), Logits::Last);
    std::vector<std::int64_t> next(std::size_t(in.batch), next_token);
    const RowMatrix step = model.forward(pool, cached, TokenBatch{in.batch, 1, next, {}, {}}, Logits::Last);

    Inputs longer;
    longer.batch = in.batch;
    longer.seq = in.seq + 1;
    for (std::int64_t b = 0; b < in.batch; ++b) {
        const auto row = [&](const std::vector<std::int64_t>& v) { return v.begin() + b * in.seq; };
        longer.ids.insert(longer.ids.end(), row(in.ids), row(in.ids) + in.seq);
        longer.ids.push_back(next_token);
        longer.mask.insert(longer.mask.end(), row(in.mask), row(in.mask) + in.seq);
        longer.mask.push_back(1);
        longer.positions.insert(longer.positions.end(), row(in.positions), row(in.positions) + in.seq);
        longer.positions.push_back(*std::max_element(row(in.positions), row(in.positions) + in.seq) + 1);
    }
    auto fresh = model.new_session(in.batch);
    const RowMatrix full = model.forward(pool, fresh, longer.view(), Logits::Last);
    EXPECT_LE((step - full).cwiseAbs().maxCoeff() / full.cwiseAbs().maxCoeff(), 1e-5);
}

TEST(MoeGolden, CachedDecodeMatchesLongerPrefill) {
    const Inputs mix = read_inputs(kGolden / "mixtral_tiny");
    check_cached_decode(load_mixtral(kGolden / "mixtral_tiny"), mix, 17);
    const Inputs olmoe = read_inputs(kGolden / "olmoe_tiny_bf16");
    check_cached_decode(load_olmoe(kGolden / "olmoe_tiny_bf16"), olmoe, 300);
}

// Copies a golden case's checkpoint with edits: `drop` removes tensors by name prefix, `add` appends.
void write_checkpoint(const fs::path& from, const fs::path& to, const std::vector<std::string>& drop,
                      const std::vector<OwnedTensor>& add, const std::string& config) {
    fs::create_directories(to);
    const SafetensorsFile src = SafetensorsFile::open(from / "model.safetensors");
    std::vector<OwnedTensor> out = add;
    for (const TensorView& t : src.tensors())
        if (std::none_of(drop.begin(), drop.end(), [&](const std::string& p) { return t.name.starts_with(p); }))
            out.push_back(OwnedTensor::copy_of(t));
    write_safetensors(to / "model.safetensors", out);
    std::ofstream(to / "config.json") << config;
}

std::string edited_config(const fs::path& from, const std::string& key, const std::string& value) {
    std::ifstream in(from / "config.json");
    Json j = Json::parse(in);
    j[key] = Json::parse(value);
    return j.dump(2);
}

OwnedTensor random_tensor(const std::string& name, Shape shape, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.f, 0.05f);
    std::vector<float> v(std::size_t(numel(shape)));
    for (float& x : v) x = nd(rng);
    return OwnedTensor::f32(name, std::move(shape), v);
}

// Qwen2-MoE with mlp_only_layers = [1]: layer 1 is a dense MLP of intermediate_size and has no router
// logits; layer 0 is unchanged, so its outputs still match the reference.
TEST(MoeModels, Qwen2MoeMixesDenseAndSparseLayers) {
    const fs::path golden = kGolden / "qwen2_moe_tiny";
    const TempDir tmp;
    std::mt19937 rng(3);
    const std::int64_t H = 64, I = 128;
    write_checkpoint(golden, tmp.path(), {"model.layers.1.mlp."},
                     {random_tensor("model.layers.1.mlp.gate_proj.weight", {I, H}, rng),
                      random_tensor("model.layers.1.mlp.up_proj.weight", {I, H}, rng),
                      random_tensor("model.layers.1.mlp.down_proj.weight", {H, I}, rng)},
                     edited_config(golden, "mlp_only_layers", "[1]"));
    const Qwen2MoeModel model = load_qwen2_moe(tmp.path());
    EXPECT_TRUE(model.decoder().layer(0).mlp.is_moe());
    EXPECT_FALSE(model.decoder().layer(1).mlp.is_moe());
    EXPECT_TRUE(model.decoder().layer(2).mlp.is_moe());

    const Inputs in = read_inputs(golden);
    const SafetensorsFile expected = SafetensorsFile::open(golden / "expected.safetensors");
    ThreadPool pool(2);
    auto session = model.new_session(in.batch);
    DecoderTrace trace;
    model.forward(pool, session, in.view(), Logits::All, &trace);
    std::vector<std::int64_t> routed;
    for (const auto& [layer, logits] : trace.router_logits) routed.push_back(layer);
    EXPECT_EQ(routed, (std::vector<std::int64_t>{0, 2}));
    EXPECT_LE(rel_err_real(trace.router_logits.at(0), expected_rows(expected, "router_logits.0"), in), 1e-4);
    EXPECT_LE(rel_err_real(trace.hidden_states[1], expected_rows(expected, "hidden_states.1"), in), 1e-4);
    EXPECT_GT(rel_err_real(trace.hidden_states[2], expected_rows(expected, "hidden_states.2"), in), 1e-2);
    check_cached_decode(model, in, 42);
}

TEST(MoeModels, MissingAndMisshapedExpertsAreOneShapeError) {
    const fs::path golden = kGolden / "mixtral_tiny";
    const TempDir tmp;
    std::mt19937 rng(4);
    write_checkpoint(golden, tmp.path(),
                     {"model.layers.2.block_sparse_moe.experts.5.w3.", "model.layers.0.block_sparse_moe.gate."},
                     {random_tensor("model.layers.0.block_sparse_moe.gate.weight", {7, 64}, rng)},
                     edited_config(golden, "tie_word_embeddings", "false"));
    try {
        load_mixtral(tmp.path());
        FAIL() << "expected ShapeError";
    } catch (const ShapeError& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("model.layers.2.block_sparse_moe.experts.5.w3.weight"), std::string::npos) << msg;
        EXPECT_NE(msg.find("model.layers.0.block_sparse_moe.gate.weight"), std::string::npos) << msg;
    }
    // A config asking for more experts per token than exist is rejected before any weight is read.
    std::ofstream(tmp.path() / "config.json") << edited_config(golden, "num_experts_per_tok", "9");
    EXPECT_THROW(load_mixtral(tmp.path()), ConfigError);
    // The wrong family's loader names the model_type.
    EXPECT_THROW(load_olmoe(golden), UnsupportedError);
}

TEST(MoeModels, ParityToolPassesOnMoeCases) {
    const fs::path tool = fs::path(FUSIONLM_BIN_DIR) / "fusionlm-parity";
    if (!fs::exists(tool)) GTEST_SKIP() << "fusionlm-parity not built";
    const TempDir tmp;
    for (const char* name : {"mixtral_tiny", "qwen2_moe_tiny", "olmoe_tiny_bf16"}) {
        const std::string cmd = tool.string() + " " + (kGolden / name).string() + " --threads 2 --out " +
                                (tmp.path() / (std::string(name) + ".safetensors")).string() + " > " +
                                (tmp.path() / "log.txt").string() + " 2>&1";
        EXPECT_EQ(std::system(cmd.c_str()), 0) << name;
        const SafetensorsFile out = SafetensorsFile::open(tmp.path() / (std::string(name) + ".safetensors"));
        EXPECT_NE(out.find("router_logits.2"), nullptr) << name;
    }
}

// Every reference tensor of a case within tolerance, through the parity runner (library, not CLI).
class MoeCase : public ::testing::TestWithParam<const char*> {};

TEST_P(MoeCase, EveryReferenceTensorWithinTolerance) {
    const parity::Case c(fs::path(FUSIONLM_TEST_DATA) / GetParam());
    const ModelConfig config = load_config(c.dir() / "config.json");
    ThreadPool pool(2);
    parity::CaseOutputs out;
    parity::TokenMask mask;
    if (const auto* m = std::get_if<MixtralConfig>(&config.family)) mask = parity::run_mixtral_case(c, *m, pool, out);
    if (const auto* m = std::get_if<Qwen2MoeConfig>(&config.family)) mask = parity::run_qwen2_moe_case(c, *m, pool, out);
    if (const auto* m = std::get_if<OlmoeConfig>(&config.family)) mask = parity::run_olmoe_case(c, *m, pool, out);
    const auto results = parity::compare_all(*c.expected(), out, mask);
    EXPECT_EQ(results.size(), c.expected()->size());
    for (const auto& r : results) {
        EXPECT_TRUE(r.problem.empty()) << r.name << ": " << r.problem;
        EXPECT_TRUE(r.ok) << r.name << " max_abs " << r.max_abs << " rel " << r.rel;
    }
    // No router logits beyond the reference's (dense layers have none).
    for (const auto& [name, t] : out.all()) {
        if (name.starts_with("router_logits.")) {
            EXPECT_NE(c.expected()->find(name), nullptr) << name;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Cases, MoeCase,
                         ::testing::Values("golden/mixtral_tiny", "golden/qwen2_moe_tiny", "golden/olmoe_tiny_bf16",
                                           "heldout/qwen2_moe_mixed_bf16", "heldout/olmoe_clip",
                                           "heldout/mixtral_top1"),
                         [](const auto& info) {
                             std::string n = info.param;
                             for (char& ch : n)
                                 if (ch == '/') ch = '_';
                             return n;
                         });

}  // namespace moe_models_test
