#pragma once
// Generation: prefill the prompt, then one token per item at a time through the KV cache. Greedy
// decoding (ties go to the lowest id, like argmax); an item stops at a stop token, the batch at
// max_new_tokens, when every item stopped, or when the streaming callback says so.
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/tensor.hpp"
#include "core/threads.hpp"
#include "text_model/decoder.hpp"

namespace fusionlm {

struct GenerateOptions {
    std::int64_t max_new_tokens = 32;
    std::vector<std::int64_t> stop_tokens;  // e.g. generation_config's eos_token_id(s)
    std::int64_t pad_token = 0;             // fed (and reported) for items that already stopped
    bool keep_scores = false;               // keep every step's logits in GenerateResult::scores
};

struct GenerateResult {
    std::vector<std::vector<std::int64_t>> tokens;  // [item]: new tokens, the stop token included
    std::vector<RowMatrix> scores;                  // [step]: logits [batch, vocab] when keep_scores
    std::vector<bool> stopped;                      // [item]: ended on a stop token
};

// Called for each new token of each still-running item; return false to end generation at once
// (later items of the same step get no token).
using TokenCallback = std::function<bool(std::int64_t item, std::int64_t token)>;

inline std::int64_t argmax(const Eigen::Ref<const Eigen::RowVectorXf>& logits) {
    Eigen::Index best = 0;
    logits.maxCoeff(&best);
    return std::int64_t(best);
}

// Model: anything with `RowMatrix forward(ThreadPool&, Session&, const TokenBatch&, Logits, DecoderTrace*) const`
// (FusionModel). The prompt must be the session's first tokens or continue it; images, if any, are
// attached to the session beforehand.
template <class Model, class Session>
GenerateResult generate(ThreadPool& pool, const Model& model, Session& session, const TokenBatch& prompt,
                        const GenerateOptions& options, const TokenCallback& on_token = {}) {
    if (options.max_new_tokens < 0)
        throw InputError("max_new_tokens: " + std::to_string(options.max_new_tokens) + " is negative");
    const std::int64_t B = prompt.batch;
    GenerateResult result;
    result.tokens.assign(std::size_t(B), {});
    result.stopped.assign(std::size_t(B), false);
    if (options.max_new_tokens == 0) return result;

    RowMatrix logits = model.forward(pool, session, prompt, Logits::Last, nullptr);
    std::vector<std::int64_t> next(static_cast<std::size_t>(B));
    for (std::int64_t step = 0;; ++step) {
        bool go_on = true;
        for (std::int64_t b = 0; b < B && go_on; ++b) {
            const std::size_t i = std::size_t(b);
            const std::int64_t token = result.stopped[i] ? options.pad_token : argmax(logits.row(Eigen::Index(b)));
            next[i] = token;
            if (result.stopped[i]) continue;
            result.tokens[i].push_back(token);
            if (std::find(options.stop_tokens.begin(), options.stop_tokens.end(), token) != options.stop_tokens.end())
                result.stopped[i] = true;
            if (on_token && !on_token(b, token)) go_on = false;
        }
        if (options.keep_scores) result.scores.push_back(std::move(logits));
        const bool all_stopped = std::all_of(result.stopped.begin(), result.stopped.end(), [](bool s) { return s; });
        if (!go_on || all_stopped || step + 1 >= options.max_new_tokens) break;
        const TokenBatch tokens{B, 1, next, {}, {}};
        logits = model.forward(pool, session, tokens, Logits::Last, nullptr);
    }
    return result;
}

}  // namespace fusionlm
