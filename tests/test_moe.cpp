// MoeMlp against a plain scalar reference: random weights of awkward sizes, f32 and bf16 weights,
// 1 and 2 threads, k = 1..3, with and without renormalisation and the shared expert.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <numeric>
#include <random>
#include <vector>

#include "fusionlm/text_model/moe.hpp"

namespace moe_test {

using namespace fusionlm;

// Owns the bytes behind the TensorViews of randomly initialised Linears.
class WeightStore {
public:
    WeightStore(DType dtype, unsigned seed) : dtype_(dtype), rng_(seed) {}

    Linear make(const std::string& name, std::int64_t out, std::int64_t in, float scale) {
        std::uniform_real_distribution<float> u(-scale, scale);
        // f32 words keep every dtype aligned; a deque keeps the addresses stable.
        auto& words = storage_.emplace_back(std::size_t(out * in * std::int64_t(dtype_size(dtype_)) + 3) / 4);
        auto* bytes = reinterpret_cast<std::byte*>(words.data());
        for (std::int64_t i = 0; i < out * in; ++i) {
            const float v = u(rng_);
            if (dtype_ == DType::F32) {
                std::memcpy(bytes + i * 4, &v, 4);
            } else {
                const std::uint16_t h = f32_to_bf16(v);
                std::memcpy(bytes + i * 2, &h, 2);
            }
        }
        Linear l;
        l.weight = TensorView{name, dtype_, {out, in}, bytes};
        return l;
    }

private:
    DType dtype_;
    std::mt19937 rng_;
    std::deque<std::vector<float>> storage_;
};

// W as doubles, row-major [out, in], whatever the stored dtype.
std::vector<double> widen(const Linear& l) {
    const std::vector<float> f = l.weight.to_f32();
    return {f.begin(), f.end()};
}

std::vector<double> matvec(const Linear& l, const std::vector<double>& x) {
    const auto w = widen(l);
    const std::size_t out = std::size_t(l.out_features()), in = std::size_t(l.in_features());
    std::vector<double> y(out, 0.0);
    for (std::size_t o = 0; o < out; ++o)
        for (std::size_t i = 0; i < in; ++i) y[o] += w[o * in + i] * x[i];
    return y;
}

struct SwiGluWeights {
    Linear gate_proj, up_proj, down_proj;
    DenseMlp mlp() const { return DenseMlp(gate_proj, up_proj, down_proj); }
};

std::vector<double> swiglu_ref(const SwiGluWeights& e, const std::vector<double>& x) {
    auto g = matvec(e.gate_proj, x);
    const auto u = matvec(e.up_proj, x);
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
    return matvec(e.down_proj, g);
}

// The weights the reference reads, kept beside the MoeMlp built from them.
struct MoeWeights {
    Linear router;
    std::vector<SwiGluWeights> experts;
    std::optional<SwiGluWeights> shared;
    Linear shared_gate;
};

struct Reference {
    RowMatrix y, logits;
    std::vector<std::vector<int>> chosen;
};

Reference moe_ref(const MoeWeights& m, int k, bool renormalise, const RowMatrix& x) {
    const int E = int(m.experts.size());
    const Linear& router = m.router;
    Reference r;
    r.y = RowMatrix::Zero(x.rows(), x.cols());
    r.logits.resize(x.rows(), E);
    for (Eigen::Index t = 0; t < x.rows(); ++t) {
        std::vector<double> xt(x.row(t).data(), x.row(t).data() + x.cols());
        const auto logits = matvec(router, xt);
        double mx = logits[0];
        for (double v : logits) mx = std::max(mx, v);
        std::vector<double> p(static_cast<std::size_t>(E));
        double sum = 0;
        for (int e = 0; e < E; ++e) sum += p[std::size_t(e)] = std::exp(logits[std::size_t(e)] - mx);
        for (auto& v : p) v /= sum;
        std::vector<int> idx(static_cast<std::size_t>(E));
        std::iota(idx.begin(), idx.end(), 0);
        std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return p[std::size_t(a)] > p[std::size_t(b)]; });
        idx.resize(std::size_t(k));
        double ksum = 0;
        for (int e : idx) ksum += p[std::size_t(e)];
        std::vector<double> acc(std::size_t(x.cols()), 0.0);
        for (int e : idx) {
            const double w = renormalise ? p[std::size_t(e)] / ksum : p[std::size_t(e)];
            const auto o = swiglu_ref(m.experts[std::size_t(e)], xt);
            for (std::size_t i = 0; i < acc.size(); ++i) acc[i] += w * o[i];
        }
        if (m.shared) {
            const auto o = swiglu_ref(*m.shared, xt);
            const double g = 1.0 / (1.0 + std::exp(-matvec(m.shared_gate, xt)[0]));
            for (std::size_t i = 0; i < acc.size(); ++i) acc[i] += g * o[i];
        }
        for (Eigen::Index i = 0; i < x.cols(); ++i) r.y(t, i) = float(acc[std::size_t(i)]);
        for (int e = 0; e < E; ++e) r.logits(t, e) = float(logits[std::size_t(e)]);
        r.chosen.push_back(idx);
    }
    return r;
}

double rel_err(const RowMatrix& out, const RowMatrix& exp) {
    return double((out - exp).cwiseAbs().maxCoeff()) / double(exp.cwiseAbs().maxCoeff());
}

struct Case {
    DType dtype;
    int threads;
    int top_k;
    bool renormalise;
    bool shared;
    Eigen::Index tokens;
};

class MoeMlpTest : public ::testing::TestWithParam<Case> {};

TEST_P(MoeMlpTest, MatchesScalarReference) {
    const Case c = GetParam();
    const std::int64_t hidden = 37, inter = 29, shared_inter = 43;
    const int E = 7;
    WeightStore store(c.dtype, 1234u + unsigned(c.top_k));
    MoeWeights w;
    w.router = store.make("mlp.gate.weight", E, hidden, 0.6f);
    std::vector<DenseMlp> experts;
    for (int e = 0; e < E; ++e) {
        const std::string p = "mlp.experts." + std::to_string(e) + ".";
        w.experts.push_back({store.make(p + "gate_proj.weight", inter, hidden, 0.3f),
                             store.make(p + "up_proj.weight", inter, hidden, 0.3f),
                             store.make(p + "down_proj.weight", hidden, inter, 0.3f)});
        experts.push_back(w.experts.back().mlp());
    }
    std::optional<MoeMlp::SharedExpert> shared;
    if (c.shared) {
        w.shared = SwiGluWeights{store.make("mlp.shared_expert.gate_proj.weight", shared_inter, hidden, 0.3f),
                                 store.make("mlp.shared_expert.up_proj.weight", shared_inter, hidden, 0.3f),
                                 store.make("mlp.shared_expert.down_proj.weight", hidden, shared_inter, 0.3f)};
        w.shared_gate = store.make("mlp.shared_expert_gate.weight", 1, hidden, 0.5f);
        shared = MoeMlp::SharedExpert{w.shared->mlp(), w.shared_gate};
    }
    const MoeMlp moe(w.router, experts, c.top_k, c.renormalise, shared);

    std::mt19937 rng(99);
    std::normal_distribution<float> nd(0.f, 1.f);
    RowMatrix x(c.tokens, hidden);
    for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = nd(rng);

    ThreadPool pool(c.threads);
    RowMatrix y(c.tokens, hidden), logits;
    moe.forward(pool, x, y, &logits);
    const Reference ref = moe_ref(w, c.top_k, c.renormalise, x);

    EXPECT_LE(rel_err(logits, ref.logits), 1e-5);
    EXPECT_LE(rel_err(y, ref.y), 1e-5);
    const MoeRouting routing = route_top_k(logits, c.top_k, c.renormalise);
    for (Eigen::Index t = 0; t < c.tokens; ++t)
        for (int j = 0; j < c.top_k; ++j)
            EXPECT_EQ(routing.experts[std::size_t(t * c.top_k + j)], ref.chosen[std::size_t(t)][std::size_t(j)])
                << "token " << t << " slot " << j;
}

std::vector<Case> cases() {
    std::vector<Case> all;
    for (DType d : {DType::F32, DType::BF16})
        for (int threads : {1, 2})
            for (int k : {1, 2, 3})
                for (bool renorm : {false, true})
                    for (bool shared : {false, true})
                        for (Eigen::Index tokens : {Eigen::Index(1), Eigen::Index(19)})
                            all.push_back({d, threads, k, renorm, shared, tokens});
    return all;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
    const Case& c = info.param;
    return std::string(dtype_name(c.dtype)) + "_t" + std::to_string(c.threads) + "_k" + std::to_string(c.top_k) +
           (c.renormalise ? "_renorm" : "_raw") + (c.shared ? "_shared" : "") + "_n" + std::to_string(c.tokens);
}

INSTANTIATE_TEST_SUITE_P(Routing, MoeMlpTest, ::testing::ValuesIn(cases()), case_name);

TEST(MoeRouting, TopKTiesPickLowerIndexAndRenormalise) {
    RowMatrix logits(1, 4);
    logits << 1.f, 2.f, 2.f, 0.f;
    const MoeRouting r = route_top_k(logits, 2, true);
    EXPECT_EQ(r.experts[0], 1);
    EXPECT_EQ(r.experts[1], 2);
    EXPECT_NEAR(r.weights[0], 0.5f, 1e-6f);
    EXPECT_NEAR(r.weights[1], 0.5f, 1e-6f);
    const MoeRouting raw = route_top_k(logits, 1, false);
    const double p = std::exp(2.0) / (std::exp(1.0) + 2 * std::exp(2.0) + 1.0);
    EXPECT_NEAR(raw.weights[0], p, 1e-6);
}

TEST(MoeMlp, RejectsInconsistentShapes) {
    WeightStore store(DType::F32, 7);
    Linear router = store.make("layers.0.mlp.gate.weight", 3, 16, 0.1f);
    std::vector<DenseMlp> experts;
    for (int e = 0; e < 3; ++e)
        experts.emplace_back(store.make("gate", 8, e == 2 ? 15 : 16, 0.1f), store.make("up", 8, e == 2 ? 15 : 16, 0.1f),
                             store.make("down", e == 2 ? 15 : 16, 8, 0.1f));
    try {
        MoeMlp bad(router, experts, 2, true);
        FAIL() << "expected ShapeError";
    } catch (const ShapeError& err) {
        EXPECT_NE(std::string(err.what()).find("layers.0.mlp.gate.weight"), std::string::npos);
        EXPECT_NE(std::string(err.what()).find("expert 2"), std::string::npos);
    }
    experts.pop_back();
    EXPECT_THROW(MoeMlp(router, experts, 2, true), ShapeError);  // 3 router rows, 2 experts
    experts.push_back(experts.back());
    EXPECT_THROW(MoeMlp(router, experts, 4, true), ConfigError);
    MoeMlp ok(router, experts, 2, true);
    ThreadPool pool(1);
    RowMatrix x(2, 15), y(2, 16);
    EXPECT_THROW(ok.forward(pool, x, y, nullptr), ShapeError);
}

// Decode must read only the chosen experts: the others have no data, so touching them would throw.
TEST(MoeMlp, DecodeTouchesOnlyChosenExperts) {
    WeightStore store(DType::BF16, 11);
    const std::int64_t hidden = 24, inter = 10;
    Linear router = store.make("mlp.gate.weight", 6, hidden, 0.1f);
    std::vector<DenseMlp> experts;
    for (int e = 0; e < 6; ++e) {
        Linear g = store.make("gate", inter, hidden, 0.2f), u = store.make("up", inter, hidden, 0.2f),
               d = store.make("down", hidden, inter, 0.2f);
        if (e != 1 && e != 4) g.weight.data = u.weight.data = d.weight.data = nullptr;
        experts.emplace_back(g, u, d);
    }
    RowMatrix x = RowMatrix::Zero(1, hidden);
    x(0, 0) = 1.f;
    // Make experts 1 and 4 the clear top-2 for this token.
    std::vector<std::uint16_t> bias_rows(std::size_t(6 * hidden), f32_to_bf16(0.f));
    bias_rows[std::size_t(1 * hidden)] = f32_to_bf16(5.f);
    bias_rows[std::size_t(4 * hidden)] = f32_to_bf16(4.f);
    router.weight.data = reinterpret_cast<const std::byte*>(bias_rows.data());
    const MoeMlp moe(router, experts, 2, true);
    ThreadPool pool(2);
    RowMatrix y(1, hidden), logits;
    EXPECT_NO_THROW(moe.forward(pool, x, y, &logits));
    EXPECT_FLOAT_EQ(logits(0, 1), 5.f);
    RowMatrix x2 = RowMatrix::Zero(1, hidden);
    x2(0, 1) = 1.f;  // all logits 0: ties pick experts 0 and 1, and expert 0 has no data
    EXPECT_THROW(moe.forward(pool, x2, y, nullptr), ShapeError);
}

// Qwen2-MoE mixes layers: the dense alternative produces no router logits.
TEST(DenseOrMoeMlp, DispatchesToEitherBlock) {
    WeightStore store(DType::F32, 5);
    const std::int64_t hidden = 12, inter = 7;
    const Linear g = store.make("gate", inter, hidden, 0.3f), u = store.make("up", inter, hidden, 0.3f),
                 d = store.make("down", hidden, inter, 0.3f);
    const DenseOrMoeMlp dense(DenseMlp(g, u, d));
    const DenseOrMoeMlp sparse(MoeMlp(store.make("router", 2, hidden, 0.3f), {DenseMlp(g, u, d), DenseMlp(g, u, d)}, 1,
                                      false));
    EXPECT_FALSE(dense.is_moe());
    EXPECT_TRUE(sparse.is_moe());
    ThreadPool pool(1);
    RowMatrix x = RowMatrix::Random(3, hidden), yd(3, hidden), ys(3, hidden), expect(3, hidden), logits;
    dense.forward(pool, x, yd, &logits);
    EXPECT_EQ(logits.size(), 0);
    DenseMlp(g, u, d).forward(pool, x, expect);
    EXPECT_LE((yd - expect).cwiseAbs().maxCoeff(), 1e-6f);
    sparse.forward(pool, x, ys, &logits);
    EXPECT_EQ(logits.rows(), 3);
    EXPECT_EQ(logits.cols(), 2);
    // Both experts are the same MLP and k = 1 without renormalisation: y = p_max * mlp(x).
    RowMatrix p = logits;
    softmax_rows(p);
    for (Eigen::Index t = 0; t < 3; ++t)
        EXPECT_LE((ys.row(t) - p.row(t).maxCoeff() * expect.row(t)).cwiseAbs().maxCoeff(), 1e-5f);
}

}  // namespace moe_test
