#pragma once
// fusionlm-parity for the text-only MoE families (Mixtral, Qwen2-MoE, OLMoE): the prefill (hidden
// states, router logits per MoE layer, logits) and greedy decoding, computed through the public model API.
#include <cstdint>

#include <fusionlm/core/tensor.hpp>
#include <fusionlm/core/threads.hpp>
#include <fusionlm/io/checkpoint.hpp>
#include <fusionlm/io/config.hpp>
#include <fusionlm/io/weights.hpp>
#include <fusionlm/models/mixtral.hpp>
#include <fusionlm/models/olmoe.hpp>
#include <fusionlm/models/qwen2_moe.hpp>

#include "parity_case.hpp"
#include "parity_decoder.hpp"

namespace fusionlm::parity {

// Any CausalLM: prefill with a trace, then greedy decoding for as many steps as the reference has.
template <class Model>
TokenMask run_causal_lm_case(const Case& c, const Model& model, std::int64_t num_layers, ThreadPool& pool,
                             CaseOutputs& out) {
    const CaseTokens tokens = CaseTokens::read(c);
    auto session = model.new_session(tokens.batch);
    prefill_and_decode(c, model, session, tokens, num_layers, pool, out);
    return tokens.mask();
}

inline TokenMask run_mixtral_case(const Case& c, const MixtralConfig& config, ThreadPool& pool, CaseOutputs& out) {
    WeightBinder binder(Checkpoint::open(c.dir()));
    return run_causal_lm_case(c, bind_mixtral(binder, config), config.num_hidden_layers, pool, out);
}

inline TokenMask run_qwen2_moe_case(const Case& c, const Qwen2MoeConfig& config, ThreadPool& pool, CaseOutputs& out) {
    WeightBinder binder(Checkpoint::open(c.dir()));
    return run_causal_lm_case(c, bind_qwen2_moe(binder, config), config.num_hidden_layers, pool, out);
}

inline TokenMask run_olmoe_case(const Case& c, const OlmoeConfig& config, ThreadPool& pool, CaseOutputs& out) {
    WeightBinder binder(Checkpoint::open(c.dir()));
    return run_causal_lm_case(c, bind_olmoe(binder, config), config.num_hidden_layers, pool, out);
}

}  // namespace fusionlm::parity
