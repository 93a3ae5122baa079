// fusionlm-parity CASE_DIR [--out FILE] [--threads N]
// Runs a reference case (config.json, model.safetensors, inputs.safetensors) through the library in f32,
// writes every output the case's expected.safetensors names to FILE (default outputs.safetensors), and
// when expected.safetensors exists prints one line per tensor with its max absolute and relative error.
// Exit status: 0 all within tolerance, 1 some tensor outside it, 2 bad input (one line on stderr).
#define FUSIONLM_IMPLEMENT_STB_IMAGE
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <new>
#include <string>
#include <variant>

#include <fusionlm/core/error.hpp>
#include <fusionlm/core/threads.hpp>
#include <fusionlm/io/config.hpp>
#include <fusionlm/io/safetensors.hpp>

#include "parity_case.hpp"
#include "preprocess_case.hpp"
#include "parity_llava.hpp"
#include "parity_mllama.hpp"
#include "parity_moe.hpp"

namespace {

// Error messages go out as one line.
void report(const char* what) {
    std::string line = what;
    for (char& ch : line)
        if (ch == '\n' || ch == '\r') ch = ' ';
    std::fprintf(stderr, "fusionlm-parity: %s\n", line.c_str());
}

struct Args {
    std::filesystem::path case_dir;
    std::filesystem::path out = "outputs.safetensors";
    int threads = 0;
};

Args parse_args(int argc, char** argv) {
    Args a;
    bool have_dir = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if ((arg == "--out" || arg == "--threads") && i + 1 >= argc)
            throw fusionlm::InputError("usage: " + arg + " needs a value");
        if (arg == "--out") {
            a.out = argv[++i];
        } else if (arg == "--threads") {
            const std::string v = argv[++i];
            char* end = nullptr;
            const long n = std::strtol(v.c_str(), &end, 10);
            if (v.empty() || *end != '\0' || n < 1 || n > 1024)
                throw fusionlm::InputError("usage: --threads '" + v + "' is not a thread count (1..1024)");
            a.threads = int(n);
        } else if (!arg.empty() && arg[0] == '-') {
            throw fusionlm::InputError("usage: unknown option '" + arg + "'");
        } else if (!have_dir) {
            a.case_dir = arg;
            have_dir = true;
        } else {
            throw fusionlm::InputError("usage: more than one case directory ('" + arg + "')");
        }
    }
    if (!have_dir) throw fusionlm::InputError("usage: fusionlm-parity CASE_DIR [--out FILE] [--threads N]");
    return a;
}

// Dispatches on the config's family; each family's runner fills the outputs and returns the token mask.
fusionlm::parity::TokenMask run_case(const fusionlm::parity::Case& c, fusionlm::ThreadPool& pool,
                                     fusionlm::parity::CaseOutputs& out) {
    const fusionlm::ModelConfig config = fusionlm::load_config(c.dir() / "config.json");
    if (const auto* m = std::get_if<fusionlm::MllamaConfig>(&config.family))
        return fusionlm::parity::run_mllama_case(c, *m, pool, out);
    if (const auto* m = std::get_if<fusionlm::LlavaConfig>(&config.family))
        return fusionlm::parity::run_llava_case(c, *m, pool, out);
    if (const auto* m = std::get_if<fusionlm::MixtralConfig>(&config.family))
        return fusionlm::parity::run_mixtral_case(c, *m, pool, out);
    if (const auto* m = std::get_if<fusionlm::Qwen2MoeConfig>(&config.family))
        return fusionlm::parity::run_qwen2_moe_case(c, *m, pool, out);
    if (const auto* m = std::get_if<fusionlm::OlmoeConfig>(&config.family))
        return fusionlm::parity::run_olmoe_case(c, *m, pool, out);
    throw fusionlm::UnsupportedError((c.dir() / "config.json").string() + ": model_type '" + config.model_type +
                                     "' is not supported by fusionlm-parity");
}

// A preprocessing case holds image-processor configs instead of a model.
bool is_preprocess_case(const std::filesystem::path& dir) {
    if (std::filesystem::exists(dir / "config.json") || !std::filesystem::is_directory(dir)) return false;
    for (const auto& e : std::filesystem::directory_iterator(dir))
        if (e.path().filename().string().starts_with("preprocessor_config_")) return true;
    return false;
}

int run(int argc, char** argv) {
    const Args args = parse_args(argc, argv);
    if (is_preprocess_case(args.case_dir)) {
        const auto tensors = fusionlm::examples::run_preprocess_case(args.case_dir);
        fusionlm::write_safetensors(args.out, tensors);
        std::printf("wrote %zu preprocessing tensors to %s (pixel tensors at full size)\n", tensors.size(),
                    args.out.string().c_str());
        return 0;
    }
    const fusionlm::parity::Case c(args.case_dir);
    fusionlm::ThreadPool pool(args.threads);
    fusionlm::parity::CaseOutputs outputs;
    const fusionlm::parity::TokenMask mask = run_case(c, pool, outputs);
    fusionlm::write_safetensors(args.out, fusionlm::parity::outputs_to_write(c.expected(), outputs));
    if (!c.expected()) {
        std::printf("wrote %zu tensors to %s (no expected.safetensors to compare with)\n", outputs.all().size(),
                    args.out.string().c_str());
        return 0;
    }
    bool all_ok = true;
    for (const auto& r : fusionlm::parity::compare_all(*c.expected(), outputs, mask)) {
        all_ok = all_ok && r.ok;
        if (!r.problem.empty())
            std::printf("%-40s %-18s FAIL  %s\n", r.name.c_str(), fusionlm::shape_str(r.shape).c_str(),
                        r.problem.c_str());
        else
            std::printf("%-40s %-18s %s  max_abs %.3e  rel %.3e\n", r.name.c_str(), fusionlm::shape_str(r.shape).c_str(),
                        r.ok ? "ok  " : "FAIL", r.max_abs, r.rel);
    }
    std::printf("%s\n", all_ok ? "PASS" : "FAIL");
    return all_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::bad_alloc&) {
        report("out of memory");
    } catch (const std::exception& e) {
        report(e.what());
    }
    return 2;
}
