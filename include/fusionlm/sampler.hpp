#pragma once
// Next-token choice from one row of logits: greedy at temperature 0, else temperature, top-k and
// top-p (nucleus) sampling, reproducible from a seed.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace fusionlm {

struct SamplerOptions {
    float temperature = 0.0f;  // <= 0: greedy
    int top_k = 0;             // 0: all tokens
    float top_p = 1.0f;        // 1: no nucleus cut
    std::uint64_t seed = 0;
};

class Sampler {
public:
    explicit Sampler(SamplerOptions options) : options_(options), rng_(options.seed) {
        if (!(options.top_p > 0.0f && options.top_p <= 1.0f))
            throw InputError("top_p: " + std::to_string(options.top_p) + " is not in (0, 1]");
        if (options.top_k < 0) throw InputError("top_k: " + std::to_string(options.top_k) + " is negative");
        if (!std::isfinite(options.temperature))
            throw InputError("temperature: " + std::to_string(options.temperature) + " is not finite");
    }

    std::int64_t sample(const Eigen::Ref<const Eigen::RowVectorXf>& logits) {
        const Eigen::Index n = logits.size();
        if (n == 0) throw InputError("sampler: empty logits");
        if (options_.temperature <= 0.0f) {
            Eigen::Index best = 0;
            logits.maxCoeff(&best);
            return std::int64_t(best);
        }
        // Candidates sorted by logit, best first; top-k keeps only the first k.
        order_.resize(std::size_t(n));
        std::iota(order_.begin(), order_.end(), 0);
        const std::size_t k = options_.top_k > 0 ? std::min<std::size_t>(std::size_t(options_.top_k), order_.size())
                                                 : order_.size();
        const auto by_logit = [&](std::int64_t a, std::int64_t b) { return logits[a] > logits[b]; };
        std::partial_sort(order_.begin(), order_.begin() + std::ptrdiff_t(k), order_.end(), by_logit);
        order_.resize(k);

        probs_.resize(k);
        const float top = logits[order_[0]];
        double total = 0.0;
        for (std::size_t i = 0; i < k; ++i) {
            probs_[i] = std::exp(double(logits[order_[i]] - top) / options_.temperature);
            total += probs_[i];
        }
        // Nucleus: the smallest prefix whose probability reaches top_p (always at least one token).
        std::size_t keep = k;
        if (options_.top_p < 1.0f) {
            double cumulative = 0.0;
            for (std::size_t i = 0; i < k; ++i) {
                cumulative += probs_[i] / total;
                if (cumulative >= options_.top_p) { keep = i + 1; break; }
            }
        }
        const double kept = std::accumulate(probs_.begin(), probs_.begin() + std::ptrdiff_t(keep), 0.0);
        double u = std::uniform_real_distribution<double>(0.0, kept)(rng_);
        for (std::size_t i = 0; i < keep; ++i) {
            u -= probs_[i];
            if (u < 0.0) return order_[i];
        }
        return order_[keep - 1];
    }

private:
    SamplerOptions options_;
    std::mt19937_64 rng_;
    std::vector<std::int64_t> order_;
    std::vector<double> probs_;
};

}  // namespace fusionlm
