#pragma once
// The decoder half of fusionlm-parity, shared by every family: a case's tokens, the prefill with its
// hidden-state trace and logits, and greedy decoding continued through the KV cache.
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <fusionlm/core/error.hpp>
#include <fusionlm/core/tensor.hpp>
#include <fusionlm/core/threads.hpp>
#include <fusionlm/generate.hpp>
#include <fusionlm/io/safetensors.hpp>
#include <fusionlm/text_model/decoder.hpp>

#include "parity_case.hpp"

namespace fusionlm::parity {

// Token ids, attention mask and positions of a case; the comparison mask comes from here too.
struct CaseTokens {
    std::int64_t batch = 0, seq = 0;
    std::vector<std::int64_t> input_ids, attention_mask, position_ids;

    static CaseTokens read(const Case& c) {
        CaseTokens t;
        const TensorView& ids = c.input("input_ids", {-1, -1});
        t.batch = ids.shape[0];
        t.seq = ids.shape[1];
        if (t.batch <= 0 || t.seq <= 0) throw InputError("input_ids: empty batch " + shape_str(ids.shape));
        t.input_ids = to_i64(ids);
        if (c.optional_input("attention_mask")) t.attention_mask = to_i64(c.input("attention_mask", ids.shape));
        if (c.optional_input("position_ids")) t.position_ids = to_i64(c.input("position_ids", ids.shape));
        return t;
    }
    TokenBatch batch_view() const { return {batch, seq, input_ids, attention_mask, position_ids}; }
    TokenMask mask() const { return {batch, seq, attention_mask}; }
};

// Greedy decoding continued from the prefill logits of the last prompt tokens: steps x [batch, vocab].
template <class Model>
void run_greedy(ThreadPool& pool, const Model& model, typename Model::Session& session, const RowMatrix& logits_all,
                const CaseTokens& tokens, std::int64_t steps, CaseOutputs& out) {
    const std::int64_t B = tokens.batch, S = tokens.seq, V = logits_all.cols();
    RowMatrix logits(B, V);
    for (std::int64_t b = 0; b < B; ++b) logits.row(Eigen::Index(b)) = logits_all.row(Eigen::Index(b * S + S - 1));
    std::vector<std::int64_t> greedy(std::size_t(B * steps));
    std::vector<float> scores(std::size_t(B * steps * V));
    std::vector<std::int64_t> next(static_cast<std::size_t>(B));
    for (std::int64_t step = 0; step < steps; ++step) {
        if (step > 0) logits = model.forward(pool, session, TokenBatch{B, 1, next, {}, {}}, Logits::Last);
        for (std::int64_t b = 0; b < B; ++b) {
            next[std::size_t(b)] = argmax(logits.row(Eigen::Index(b)));
            greedy[std::size_t(b * steps + step)] = next[std::size_t(b)];
            std::copy_n(logits.row(Eigen::Index(b)).data(), V, scores.begin() + (b * steps + step) * V);
        }
    }
    out.add_i64("greedy_tokens", {B, steps}, greedy);
    out.add_f32("greedy_scores", {B, steps, V}, scores);
}

// Hidden states in the reference's names and (batch, seq, hidden) layout.
inline void add_decoder_trace(const DecoderTrace& trace, const CaseTokens& t, std::int64_t layers, CaseOutputs& out) {
    for (std::size_t i = 0; i < trace.hidden_states.size(); ++i) {
        const RowMatrix& h = trace.hidden_states[i];
        out.add_f32("hidden_states." + std::to_string(i), {t.batch, t.seq, h.cols()}, h);
    }
    const RowMatrix& last = trace.last_layer_output;
    out.add_f32("layer_output." + std::to_string(layers - 1), {t.batch, t.seq, last.cols()}, last);
    for (const auto& [layer, logits] : trace.router_logits)
        out.add_f32("router_logits." + std::to_string(layer), {logits.rows(), logits.cols()}, logits);
}

// The prefill with a trace (logits, hidden states), then greedy decoding for as many steps as the
// reference has (8 without a reference).
template <class Model>
void prefill_and_decode(const Case& c, const Model& model, typename Model::Session& session, const CaseTokens& tokens,
                        std::int64_t num_layers, ThreadPool& pool, CaseOutputs& out) {
    DecoderTrace trace;
    const RowMatrix logits = model.forward(pool, session, tokens.batch_view(), Logits::All, &trace);
    out.add_f32("logits", {tokens.batch, tokens.seq, logits.cols()}, logits);
    add_decoder_trace(trace, tokens, num_layers, out);

    std::int64_t steps = 8;
    if (const SafetensorsFile* e = c.expected())
        if (const TensorView* g = e->find("greedy_tokens"); g && g->shape.size() == 2) steps = g->shape[1];
    if (steps > 0 && (c.wants("greedy_tokens") || c.wants("greedy_scores")))
        run_greedy(pool, model, session, logits, tokens, steps, out);
}

}  // namespace fusionlm::parity
