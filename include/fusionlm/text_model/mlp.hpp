#pragma once
// The dense SwiGLU feed-forward of Llama-family decoders: down_proj(act(gate_proj(x)) * up_proj(x)).
#include <Eigen/Core>
#include <cstdint>
#include <string>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../ops/activation.hpp"
#include "../ops/linear.hpp"

namespace fusionlm {

class DenseMlp {
public:
    // gate/up: [intermediate, hidden], down: [hidden, intermediate]; act is the config's hidden_act.
    DenseMlp(Linear gate_proj, Linear up_proj, Linear down_proj, Activation act = Activation::Silu)
        : gate_proj_(std::move(gate_proj)), up_proj_(std::move(up_proj)), down_proj_(std::move(down_proj)),
          act_(act) {
        const auto hidden = gate_proj_.in_features(), inter = gate_proj_.out_features();
        expect(up_proj_, inter, hidden);
        expect(down_proj_, hidden, inter);
    }

    std::int64_t hidden_size() const { return gate_proj_.in_features(); }
    std::int64_t intermediate_size() const { return gate_proj_.out_features(); }
    // Weight elements read per token (for FLOP and byte counters).
    std::int64_t parameters() const { return 3 * hidden_size() * intermediate_size(); }

    // x, y: [n, hidden]. router_logits is part of the MLP interface shared with MoeMlp; a dense block has none.
    void forward(ThreadPool& pool, const Eigen::Ref<const RowMatrix>& x, Eigen::Ref<RowMatrix> y,
                 RowMatrix* router_logits = nullptr) const {
        (void)router_logits;
        const Eigen::Index n = x.rows(), inter = Eigen::Index(intermediate_size());
        // Per-thread buffers, kept from layer to layer: fresh ones for every layer were fresh pages too, and
        // their page faults cost 7% of a 512-token prefill. A different row count (decode) reallocates.
        thread_local RowMatrix gate, up;
        gate.resize(n, inter);
        up.resize(n, inter);
        linear(pool, x, gate_proj_, gate);
        linear(pool, x, up_proj_, up);
        if (act_ == Activation::Silu) {
            silu_mul(gate, up);
        } else {
            apply_activation(act_, gate);
            gate.array() *= up.array();
        }
        linear(pool, gate, down_proj_, y);
    }

private:
    static void expect(const Linear& l, std::int64_t out, std::int64_t in) {
        if (l.out_features() != out || l.in_features() != in)
            throw ShapeError("tensor '" + l.weight.name + "': shape " + shape_str(l.weight.shape) + ", expected " +
                             shape_str({out, in}));
    }

    Linear gate_proj_, up_proj_, down_proj_;
    Activation act_;
};

}  // namespace fusionlm
