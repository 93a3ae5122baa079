#pragma once
// A text-only causal language model (Mixtral, Qwen2-MoE, OLMoE, ...): a Decoder fed by no fusion policy,
// plus the checkpoint its weight views point into. Same Session / forward() shape as FusionModel, so
// generate() and the parity tool drive both alike.
#include <Eigen/Core>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../io/config.hpp"
#include "../text_model/decoder.hpp"

namespace fusionlm {

template <class Mlp>
class CausalLM {
public:
    using Session = DecoderState;

    // sliding_window: the family's attention window, when it has one. Attention within the window is exact
    // full causal attention, so sequences up to that length are supported and longer ones rejected.
    CausalLM(Decoder<Mlp> decoder, std::shared_ptr<const void> weights,
             std::optional<std::int64_t> sliding_window = std::nullopt)
        : decoder_(std::move(decoder)), weights_(std::move(weights)), sliding_window_(sliding_window) {}

    const Decoder<Mlp>& decoder() const { return decoder_; }
    std::int64_t vocab_size() const { return decoder_.vocab_size(); }

    Session new_session(std::int64_t batch) const {
        if (batch <= 0) throw InputError("session: batch " + std::to_string(batch) + " is not positive");
        return decoder_.new_state(batch);
    }

    // Runs new tokens (a prompt or one generated token per item) through the decoder.
    RowMatrix forward(ThreadPool& pool, Session& session, const TokenBatch& tokens, Logits which,
                      DecoderTrace* trace = nullptr) const {
        if (sliding_window_ && session.length() + tokens.seq > *sliding_window_)
            throw UnsupportedError("sequence of " + std::to_string(session.length() + tokens.seq) +
                                   " tokens exceeds sliding_window " + std::to_string(*sliding_window_) +
                                   " (windowed attention is not implemented)");
        NoFusion::State none;
        return decoder_.forward(pool, tokens, session, NoFusion{}, none, which, trace);
    }

private:
    Decoder<Mlp> decoder_;
    std::shared_ptr<const void> weights_;
    std::optional<std::int64_t> sliding_window_;
};

// The decoder sizes of any Llama-style text config (head_dim and num_key_value_heads already resolved by
// the config parser).
inline DecoderConfig text_decoder_config(const LlamaStyleConfig& c) {
    DecoderConfig d;
    d.hidden_size = c.hidden_size;
    d.num_layers = c.num_hidden_layers;
    d.num_heads = c.num_attention_heads;
    d.num_kv_heads = c.num_key_value_heads;
    d.head_dim = c.head_dim;
    d.rms_norm_eps = float(c.rms_norm_eps);
    d.rope_theta = c.rope_theta;
    d.rope_scaling = c.rope_scaling;
    return d;
}

}  // namespace fusionlm
