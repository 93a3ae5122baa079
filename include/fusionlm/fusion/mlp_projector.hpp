#pragma once
// The multimodal projector of LLaVA: vision features -> linear_1 -> activation -> linear_2 -> text
// embedding width. Any type with the same in_features / out_features / forward can stand in for it
// (EarlyFusion is templated on the projector).
#include <Eigen/Core>
#include <cstdint>
#include <string>
#include <utility>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../core/threads.hpp"
#include "../ops/activation.hpp"
#include "../ops/linear.hpp"

namespace fusionlm {

class MlpProjector {
public:
    MlpProjector(Linear linear_1, Activation act, Linear linear_2)
        : linear_1_(std::move(linear_1)), act_(act), linear_2_(std::move(linear_2)) {
        if (linear_2_.in_features() != linear_1_.out_features())
            throw ShapeError("tensor '" + linear_2_.weight.name + "': shape " + shape_str(linear_2_.weight.shape) +
                             " does not take the " + std::to_string(linear_1_.out_features()) + " outputs of '" +
                             linear_1_.weight.name + "'");
    }

    std::int64_t in_features() const { return linear_1_.in_features(); }
    std::int64_t out_features() const { return linear_2_.out_features(); }

    // x: [rows, in_features] -> [rows, out_features]
    RowMatrix forward(ThreadPool& pool, const Eigen::Ref<const RowMatrix>& x) const {
        RowMatrix mid = linear(pool, x, linear_1_);
        apply_activation(act_, mid);
        return linear(pool, mid, linear_2_);
    }

    double flops(std::int64_t rows) const {
        return 2.0 * double(rows) *
               double(linear_1_.in_features() * linear_1_.out_features() + linear_2_.in_features() * linear_2_.out_features());
    }

private:
    Linear linear_1_;
    Activation act_;
    Linear linear_2_;
};

}  // namespace fusionlm
