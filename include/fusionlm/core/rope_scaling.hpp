#pragma once
// config.json `rope_scaling`, shared by the config parser (io) and the rotary embedding (ops).
// Absent or null in the JSON means no scaling; only rope_type "llama3" changes the frequencies.
#include <cstdint>
#include <string>

namespace fusionlm {

struct RopeScaling {
    std::string rope_type;  // "default", "llama3", ... (the legacy key "type" is read as well)
    float factor = 1.0f;
    float low_freq_factor = 1.0f;
    float high_freq_factor = 4.0f;
    std::int64_t original_max_position_embeddings = 8192;
};

}  // namespace fusionlm
