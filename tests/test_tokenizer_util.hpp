#pragma once
// The 6 MB Llama 3 tokenizer files, parsed once per test binary and shared by the test files.
#include <string>

#include <fusionlm/text/tokenizer.hpp>

namespace fusionlm::test {

inline const std::string& test_data() {
    static const std::string dir = FUSIONLM_TEST_DATA;
    return dir;
}

inline const Tokenizer& llama32_vision_tokenizer() {
    static const Tokenizer t = Tokenizer::from_file(test_data() + "/tokenizers/llama3/tokenizer_llama3.2_vision.json");
    return t;
}

inline const Tokenizer& llama3_tokenizer() {
    static const Tokenizer t = Tokenizer::from_file(test_data() + "/tokenizers/llama3/tokenizer.json");
    return t;
}

}  // namespace fusionlm::test
