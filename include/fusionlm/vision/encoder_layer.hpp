#pragma once
// One pre-norm transformer encoder layer, shared by the Mllama local (plain) and global (tanh-gated)
// layers and the CLIP layers (attention biases, QuickGELU):
//   h += g_attn * o_proj(attention(ln1(h)));  h += g_ffn * fc2(act(fc1(ln2(h))))
// with g = tanh(gate) for gated layers and 1 otherwise. What differs between families is data
// (names, biases, activation, eps, gates), so it is one class, not a template per family.
//
// The bind() functions of the vision modules take any Binder with WeightBinder's interface
// (require, require_f32, mark_used, ignore_prefix): a checkpoint's WeightBinder in models, random
// in-memory weights in the benchmarks.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../ops/activation.hpp"
#include "../ops/attention.hpp"
#include "../ops/linear.hpp"
#include "../ops/norm.hpp"

namespace fusionlm {

// A LayerNorm's parameters, widened to f32.
struct LayerNormParams {
    std::vector<float> weight, bias;
    float eps = 1e-5f;

    template <class Binder>
    static LayerNormParams bind(Binder& w, const std::string& name, std::int64_t dim, float eps) {
        LayerNormParams p;
        p.weight = w.require_f32(name + ".weight", {dim});
        p.bias = w.require_f32(name + ".bias", {dim});
        p.eps = eps;
        return p;
    }
    void apply(const Eigen::Ref<const RowMatrix>& x, Eigen::Ref<RowMatrix> y) const {
        layer_norm(x, weight.data(), bias.data(), eps, y);
    }
};

// Checkpoint names of one layer's parameters, relative to the layer's prefix.
struct EncoderLayerNames {
    std::string input_norm, q_proj, k_proj, v_proj, o_proj, post_attention_norm, fc1, fc2;
    std::string gate_attn, gate_ffn;  // empty: the layer is not gated
};

struct EncoderLayerDims {
    std::int64_t hidden = 0, intermediate = 0, heads = 0;
    bool attention_bias = false;  // q/k/v/o biases (CLIP); the MLP always has biases
    Activation activation = Activation::Gelu;
    float norm_eps = 1e-5f;
};

// Buffers one forward pass reuses across layers (sized on first use).
struct EncoderWorkspace {
    RowMatrix normed, q, k, v, attn, mlp;
};

class EncoderLayer {
public:
    template <class Binder>
    static EncoderLayer bind(Binder& w, const std::string& prefix, const EncoderLayerDims& d,
                             const EncoderLayerNames& n) {
        if (d.hidden <= 0 || d.heads <= 0 || d.hidden % d.heads != 0)
            throw ConfigError(prefix + ": hidden size " + std::to_string(d.hidden) +
                              " is not a positive multiple of the " + std::to_string(d.heads) + " attention heads");
        EncoderLayer l;
        l.heads_ = int(d.heads);
        l.activation_ = d.activation;
        l.input_norm_ = LayerNormParams::bind(w, prefix + n.input_norm, d.hidden, d.norm_eps);
        l.post_attention_norm_ = LayerNormParams::bind(w, prefix + n.post_attention_norm, d.hidden, d.norm_eps);
        const auto proj = [&](const std::string& name, std::int64_t out, std::int64_t in, bool bias) {
            Linear lin;
            lin.weight = w.require(prefix + name + ".weight", {out, in});
            if (bias) lin.bias = w.require_f32(prefix + name + ".bias", {out});
            return lin;
        };
        l.q_proj_ = proj(n.q_proj, d.hidden, d.hidden, d.attention_bias);
        l.k_proj_ = proj(n.k_proj, d.hidden, d.hidden, d.attention_bias);
        l.v_proj_ = proj(n.v_proj, d.hidden, d.hidden, d.attention_bias);
        l.o_proj_ = proj(n.o_proj, d.hidden, d.hidden, d.attention_bias);
        l.fc1_ = proj(n.fc1, d.intermediate, d.hidden, true);
        l.fc2_ = proj(n.fc2, d.hidden, d.intermediate, true);
        if (!n.gate_attn.empty()) {
            l.gate_attn_ = std::tanh(w.require_f32(prefix + n.gate_attn, {1}).at(0));
            l.gate_ffn_ = std::tanh(w.require_f32(prefix + n.gate_ffn, {1}).at(0));
        }
        return l;
    }

    // h: [tokens, hidden], updated in place. The first `real_rows` tokens are real and attend to every
    // token; the rest are padding and attend to the real tokens only. This is exactly what Mllama's
    // additive mask (lowest float where query AND key are padding) computes: lowest + score rounds to
    // lowest, whose exp underflows to 0 next to any finite score. With no real token at all, every
    // score is lowest and the softmax is uniform over all keys. CLIP passes real_rows = tokens.
    void forward(ThreadPool& pool, Eigen::Ref<RowMatrix> h, std::int64_t real_rows, EncoderWorkspace& ws) const {
        const Eigen::Index n = h.rows(), dim = h.cols(), r = Eigen::Index(real_rows);
        ws.normed.resize(n, dim);
        ws.q.resize(n, dim);
        ws.k.resize(n, dim);
        ws.v.resize(n, dim);
        ws.attn.resize(n, dim);
        ws.mlp.resize(n, fc1_.out_features());

        input_norm_.apply(h, ws.normed);
        linear(pool, ws.normed, q_proj_, ws.q);
        linear(pool, ws.normed, k_proj_, ws.k);
        linear(pool, ws.normed, v_proj_, ws.v);
        if (r == n) {
            attention(pool, ws.q, ws.k, ws.v, heads_, heads_, nullptr, ws.attn);
        } else if (r == 0) {
            ws.attn.rowwise() = ws.v.colwise().mean();
        } else {
            attention(pool, ws.q.topRows(r), ws.k, ws.v, heads_, heads_, nullptr, ws.attn.topRows(r));
            attention(pool, ws.q.bottomRows(n - r), ws.k.topRows(r), ws.v.topRows(r), heads_, heads_, nullptr,
                      ws.attn.bottomRows(n - r));
        }
        linear(pool, ws.attn, o_proj_, ws.normed);
        h.noalias() += gate_attn_ * ws.normed;

        post_attention_norm_.apply(h, ws.normed);
        linear(pool, ws.normed, fc1_, ws.mlp);
        apply_activation(activation_, ws.mlp);
        linear(pool, ws.mlp, fc2_, ws.normed);
        h.noalias() += gate_ffn_ * ws.normed;
    }

    // Multiply-adds of one forward pass over `tokens` tokens (projections, MLP, both attention products).
    double flops(std::int64_t tokens) const {
        const double t = double(tokens), hd = double(q_proj_.out_features()), in = double(fc1_.out_features());
        return 2.0 * t * (4.0 * hd * hd + 2.0 * hd * in) + 4.0 * t * t * hd;
    }

private:
    int heads_ = 1;
    Activation activation_ = Activation::Gelu;
    LayerNormParams input_norm_, post_attention_norm_;
    Linear q_proj_, k_proj_, v_proj_, o_proj_, fc1_, fc2_;
    float gate_attn_ = 1.0f, gate_ffn_ = 1.0f;
};

}  // namespace fusionlm
