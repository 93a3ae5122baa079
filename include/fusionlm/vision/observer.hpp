#pragma once
// A hook that sees the intermediate states of a vision encoder, e.g. for the parity tool's dumps.
#include <cstdint>
#include <functional>
#include <string_view>

#include <Eigen/Core>

#include "../core/tensor.hpp"

namespace fusionlm {

// Called with (stack, index, state): `stack` is "local" or "global" (Mllama) or "encoder" (CLIP);
// `index` counts as the reference's hidden_states do (0 = the encoder's input, k = output of layer k);
// `state` is [tokens, hidden] in the reference's layout (Mllama: padded tiles, tile-major).
using VisionObserver =
    std::function<void(std::string_view stack, std::int64_t index, const Eigen::Ref<const RowMatrix>& state)>;

}  // namespace fusionlm
