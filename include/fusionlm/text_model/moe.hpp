#pragma once
// Mixture-of-Experts MLP block (Mixtral, Qwen2-MoE, OLMoE): a router picks top-k SwiGLU experts
// (DenseMlp) per token; an optional shared expert, gated by sigmoid(shared_expert_gate(x)), sees every
// token. Prefill groups the tokens of each expert into one matrix product; decode reads only the
// weights of the k chosen experts.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../ops/linear.hpp"
#include "../ops/softmax.hpp"
#include "mlp.hpp"

namespace fusionlm {

// The routing of a batch of tokens: for token t, experts[t*k + j] with weight weights[t*k + j],
// j = 0..k-1 in descending probability (ties: lower expert index first, as torch.topk does).
struct MoeRouting {
    int top_k = 0;
    std::vector<int> experts;
    std::vector<float> weights;
};

// Softmax over all experts in f32, then top-k, then (optionally) renormalise the k weights to sum 1.
inline MoeRouting route_top_k(const Eigen::Ref<const RowMatrix>& router_logits, int top_k, bool norm_topk_prob) {
    const Eigen::Index n = router_logits.rows(), num_experts = router_logits.cols();
    if (top_k < 1 || top_k > num_experts)
        throw ConfigError("num_experts_per_tok: " + std::to_string(top_k) + " is not in [1, " +
                          std::to_string(num_experts) + "]");
    MoeRouting r;
    r.top_k = top_k;
    r.experts.resize(std::size_t(n * top_k));
    r.weights.resize(std::size_t(n * top_k));
    RowMatrix probs = router_logits;
    softmax_rows(probs);
    std::vector<int> order(static_cast<std::size_t>(num_experts));
    for (Eigen::Index t = 0; t < n; ++t) {
        const float* p = probs.data() + t * num_experts;
        for (int e = 0; e < int(num_experts); ++e) order[std::size_t(e)] = e;
        // NaN ranks last so the comparison stays a strict weak order.
        auto key = [p](int e) { return std::isnan(p[e]) ? -std::numeric_limits<float>::infinity() : p[e]; };
        std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&key](int a, int b) {
            const float ka = key(a), kb = key(b);
            return ka > kb || (ka == kb && a < b);
        });
        float sum = 0.f;
        for (int j = 0; j < top_k; ++j) sum += p[order[std::size_t(j)]];
        for (int j = 0; j < top_k; ++j) {
            const std::size_t slot = std::size_t(t * top_k + j);
            r.experts[slot] = order[std::size_t(j)];
            r.weights[slot] = norm_topk_prob ? p[order[std::size_t(j)]] / sum : p[order[std::size_t(j)]];
        }
    }
    return r;
}

class MoeMlp {
public:
    struct SharedExpert {
        DenseMlp mlp;
        Linear gate;  // shared_expert_gate: [1, hidden], sigmoid of it scales the shared output
    };

    // router: [num_experts, hidden], no bias. Throws ShapeError naming the tensor when shapes disagree.
    MoeMlp(Linear router, std::vector<DenseMlp> experts, int top_k, bool norm_topk_prob,
           std::optional<SharedExpert> shared = std::nullopt)
        : router_(std::move(router)), experts_(std::move(experts)), top_k_(top_k),
          norm_topk_prob_(norm_topk_prob), shared_(std::move(shared)) {
        const auto hidden = router_.in_features();
        if (experts_.empty() || router_.out_features() != std::int64_t(experts_.size()))
            throw ShapeError("tensor '" + router_.weight.name + "': shape " + shape_str(router_.weight.shape) +
                             " does not match " + std::to_string(experts_.size()) + " experts");
        if (top_k_ < 1 || top_k_ > int(experts_.size()))
            throw ConfigError("num_experts_per_tok: " + std::to_string(top_k_) + " is not in [1, " +
                              std::to_string(experts_.size()) + "]");
        for (std::size_t e = 0; e < experts_.size(); ++e)
            if (experts_[e].hidden_size() != hidden)
                throw ShapeError("MoE block '" + router_.weight.name + "': expert " + std::to_string(e) +
                                 " has hidden size " + std::to_string(experts_[e].hidden_size()) + ", expected " +
                                 std::to_string(hidden));
        if (shared_) {
            if (shared_->mlp.hidden_size() != hidden)
                throw ShapeError("MoE block '" + router_.weight.name + "': shared expert has hidden size " +
                                 std::to_string(shared_->mlp.hidden_size()) + ", expected " + std::to_string(hidden));
            if (shared_->gate.out_features() != 1 || shared_->gate.in_features() != hidden)
                throw ShapeError("tensor '" + shared_->gate.weight.name + "': shape " +
                                 shape_str(shared_->gate.weight.shape) + ", expected " + shape_str({1, hidden}));
        }
    }

    std::int64_t hidden_size() const { return router_.in_features(); }
    int num_experts() const { return int(experts_.size()); }
    int top_k() const { return top_k_; }
    bool norm_topk_prob() const { return norm_topk_prob_; }
    const std::optional<SharedExpert>& shared_expert() const { return shared_; }
    const DenseMlp& expert(int e) const { return experts_.at(std::size_t(e)); }
    // Weight elements one token reads: the router, k routed experts and the shared expert.
    std::int64_t active_parameters() const {
        std::int64_t n = router_.out_features() * router_.in_features() + top_k_ * experts_.front().parameters();
        if (shared_) n += shared_->mlp.parameters() + hidden_size();
        return n;
    }

    // y = sum_j w_j * expert_j(x) (+ sigmoid(gate(x)) * shared(x)); x, y: [n, hidden].
    // router_logits (nullable) receives [n, num_experts] pre-softmax logits.
    void forward(ThreadPool& pool, const Eigen::Ref<const RowMatrix>& x, Eigen::Ref<RowMatrix> y,
                 RowMatrix* router_logits = nullptr) const {
        const Eigen::Index n = x.rows(), hidden = Eigen::Index(hidden_size());
        if (x.cols() != hidden || y.rows() != n || y.cols() != hidden)
            throw ShapeError("MoE block '" + router_.weight.name + "': input [" + std::to_string(x.rows()) + ", " +
                             std::to_string(x.cols()) + "] / output [" + std::to_string(y.rows()) + ", " +
                             std::to_string(y.cols()) + "] do not match hidden size " + std::to_string(hidden));
        RowMatrix logits(n, num_experts());
        linear(pool, x, router_, logits);
        const MoeRouting routing = route_top_k(logits, top_k_, norm_topk_prob_);

        // Counting sort of (token, slot) pairs by expert: each expert's tokens stay in ascending order.
        const std::size_t E = experts_.size(), k = std::size_t(top_k_);
        std::vector<std::size_t> begin(E + 1, 0);
        for (int e : routing.experts) ++begin[std::size_t(e) + 1];
        for (std::size_t e = 0; e < E; ++e) begin[e + 1] += begin[e];
        std::vector<std::size_t> fill(begin.begin(), begin.end() - 1);
        std::vector<Eigen::Index> token(std::size_t(n) * k);
        std::vector<float> weight(std::size_t(n) * k);
        for (std::size_t s = 0; s < routing.experts.size(); ++s) {
            const std::size_t at = fill[std::size_t(routing.experts[s])]++;
            token[at] = Eigen::Index(s / k);
            weight[at] = routing.weights[s];
        }

        y.setZero();
        std::size_t most = 0;
        for (std::size_t e = 0; e < E; ++e) most = std::max(most, begin[e + 1] - begin[e]);
        RowMatrix gathered(Eigen::Index(most), hidden), out(Eigen::Index(most), hidden);
        // Experts in index order, one matrix product per expert over its gathered tokens; only the
        // experts some token chose are touched (decode reads k experts' weights, not all).
        for (std::size_t e = 0; e < E; ++e) {
            const Eigen::Index rows = Eigen::Index(begin[e + 1] - begin[e]);
            if (rows == 0) continue;
            const Eigen::Index* tok = token.data() + begin[e];
            const float* w = weight.data() + begin[e];
            for (Eigen::Index r = 0; r < rows; ++r) gathered.row(r) = x.row(tok[r]);
            experts_[e].forward(pool, gathered.topRows(rows), out.topRows(rows));
            for (Eigen::Index r = 0; r < rows; ++r) y.row(tok[r]) += w[r] * out.row(r);
        }

        if (shared_) {
            RowMatrix shared_out(n, hidden), shared_gate(n, 1);
            shared_->mlp.forward(pool, x, shared_out);
            linear(pool, x, shared_->gate, shared_gate);
            for (Eigen::Index t = 0; t < n; ++t)
                y.row(t) += (1.f / (1.f + std::exp(-shared_gate(t, 0)))) * shared_out.row(t);
        }
        if (router_logits) *router_logits = std::move(logits);
    }

private:
    Linear router_;
    std::vector<DenseMlp> experts_;
    int top_k_;
    bool norm_topk_prob_;
    std::optional<SharedExpert> shared_;
};

// For families that mix dense and sparse layers in one decoder (Qwen2-MoE's mlp_only_layers and
// decoder_sparse_step): each layer holds one or the other.
class DenseOrMoeMlp {
public:
    DenseOrMoeMlp(DenseMlp dense) : impl_(std::move(dense)) {}
    DenseOrMoeMlp(MoeMlp moe) : impl_(std::move(moe)) {}

    bool is_moe() const { return std::holds_alternative<MoeMlp>(impl_); }
    const MoeMlp* moe() const { return std::get_if<MoeMlp>(&impl_); }
    const DenseMlp* dense() const { return std::get_if<DenseMlp>(&impl_); }

    // Dense layers leave router_logits untouched (they have none).
    void forward(ThreadPool& pool, const Eigen::Ref<const RowMatrix>& x, Eigen::Ref<RowMatrix> y,
                 RowMatrix* router_logits = nullptr) const {
        std::visit([&](const auto& mlp) { mlp.forward(pool, x, y, router_logits); }, impl_);
    }

private:
    std::variant<DenseMlp, MoeMlp> impl_;
};

}  // namespace fusionlm
