// Llama 3 tokenizer throughput on the long documents of the golden corpus (tests/data), plus load time.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <fusionlm/text/tokenizer.hpp>

namespace {

// Benchmarks carry no data-path define; the data sits beside this file's folder.
const std::filesystem::path kData = std::filesystem::path(__FILE__).parent_path().parent_path() / "tests" / "data";
const std::filesystem::path kTokenizer = kData / "tokenizers" / "llama3" / "tokenizer_llama3.2_vision.json";

const fusionlm::Tokenizer& tokenizer() {
    static const fusionlm::Tokenizer t = fusionlm::Tokenizer::from_file(kTokenizer);
    return t;
}

// The long-document and third-party-vector records (the longest texts of the corpus), joined.
const std::string& long_documents() {
    static const std::string text = [] {
        std::ifstream f(kData / "golden" / "tokenizer" / "public.jsonl");
        std::string all;
        for (std::string line; std::getline(f, line);) {
            if (line.empty()) continue;
            const auto r = nlohmann::json::parse(line);
            const std::string category = r.at("category");
            if (category == "long-document" || category == "third-party-vector" || category == "long-word")
                all += r.at("text").get<std::string>() + "\n";
        }
        return all;
    }();
    return text;
}

void BM_EncodeLongDocuments(benchmark::State& state) {
    const auto& tok = tokenizer();
    const std::string& text = long_documents();
    std::size_t tokens = 0;
    for (auto _ : state) {
        auto ids = tok.encode(text);
        tokens += ids.size();
        benchmark::DoNotOptimize(ids.data());
    }
    state.SetBytesProcessed(std::int64_t(text.size() * state.iterations()));
    state.counters["tokens/s"] = benchmark::Counter(double(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EncodeLongDocuments)->Unit(benchmark::kMicrosecond);

void BM_DecodeStreamLongDocuments(benchmark::State& state) {
    const auto& tok = tokenizer();
    const auto ids = tok.encode(long_documents());
    for (auto _ : state) {
        fusionlm::DecodeStream stream(tok);
        std::size_t bytes = 0;
        for (auto id : ids) bytes += stream.step(id).size();
        benchmark::DoNotOptimize(bytes);
    }
    state.counters["tokens/s"] = benchmark::Counter(double(ids.size() * state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeStreamLongDocuments)->Unit(benchmark::kMicrosecond);

void BM_LoadTokenizerJson(benchmark::State& state) {
    for (auto _ : state) benchmark::DoNotOptimize(fusionlm::Tokenizer::from_file(kTokenizer).vocab_size());
}
BENCHMARK(BM_LoadTokenizerJson)->Unit(benchmark::kMillisecond)->Iterations(2);

}  // namespace
