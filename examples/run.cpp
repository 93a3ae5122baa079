// fusionlm-run: a prompt and images in, streamed text out, from a Hugging Face checkpoint folder.
//   fusionlm-run -m DIR [--image FILE]... -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P]
//                [--seed S] [-t THREADS] [--system TEXT] [--ignore-eos] [--json]
#define FUSIONLM_IMPLEMENT_STB_IMAGE
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>
#include <vector>

#include <fusionlm/core/error.hpp>
#include <fusionlm/core/threads.hpp>
#include <fusionlm/image/image.hpp>
#include <fusionlm/io/checkpoint.hpp>
#include <fusionlm/io/config.hpp>
#include <fusionlm/io/weights.hpp>
#include <fusionlm/mllama_prompt.hpp>
#include <fusionlm/models/mllama.hpp>
#include <fusionlm/sampler.hpp>
#include <fusionlm/text/chat.hpp>
#include <fusionlm/text/tokenizer.hpp>

namespace fs = std::filesystem;
using namespace fusionlm;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
    fs::path model_dir;
    std::vector<fs::path> images;
    std::string prompt;
    std::string system;
    std::int64_t max_new_tokens = 128;
    SamplerOptions sampling;
    int threads = 0;
    bool ignore_eos = false;
    bool json = false;
};

const char* kUsage =
    "usage: fusionlm-run -m DIR [--image FILE]... -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P]\n"
    "                    [--seed S] [-t THREADS] [--system TEXT] [--ignore-eos] [--json]\n";

template <class T>
T parse_number(const std::string& flag, const std::string& text) {
    try {
        std::size_t used = 0;
        T value;
        if constexpr (std::is_floating_point_v<T>) value = T(std::stod(text, &used));
        else value = T(std::stoll(text, &used));
        if (used == text.size()) return value;
    } catch (const std::exception&) {
    }
    throw InputError(flag + ": '" + text + "' is not a number");
}

Args parse_args(int argc, char** argv) {
    Args a;
    bool have_prompt = false;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw InputError(flag + ": missing value");
            return argv[++i];
        };
        if (flag == "-m" || flag == "--model") a.model_dir = value();
        else if (flag == "--image") a.images.emplace_back(value());
        else if (flag == "-p" || flag == "--prompt") { a.prompt = value(); have_prompt = true; }
        else if (flag == "--system") a.system = value();
        else if (flag == "-n" || flag == "--n-predict") a.max_new_tokens = parse_number<std::int64_t>(flag, value());
        else if (flag == "--temp") a.sampling.temperature = parse_number<float>(flag, value());
        else if (flag == "--top-k") a.sampling.top_k = parse_number<int>(flag, value());
        else if (flag == "--top-p") a.sampling.top_p = parse_number<float>(flag, value());
        else if (flag == "--seed") a.sampling.seed = parse_number<std::uint64_t>(flag, value());
        else if (flag == "-t" || flag == "--threads") a.threads = parse_number<int>(flag, value());
        else if (flag == "--ignore-eos") a.ignore_eos = true;
        else if (flag == "--json") a.json = true;
        else throw InputError("unknown argument '" + flag + "'");
    }
    if (a.model_dir.empty()) throw InputError("-m DIR is required");
    if (!have_prompt) throw InputError("-p PROMPT is required");
    if (a.max_new_tokens < 0) throw InputError("-n: must not be negative");
    if (a.threads < 0) throw InputError("-t: must not be negative");
    return a;
}

// The user's text with an image where each <|image|> marker stands; with no marker, the images come
// first, as in the reference's single-image prompts. A marker count that disagrees is an error.
std::vector<ContentPart> user_content(const std::string& prompt, std::size_t images) {
    static const std::string marker = "<|image|>";
    std::vector<ContentPart> parts;
    std::size_t markers = 0, at = 0;
    for (std::size_t hit; (hit = prompt.find(marker, at)) != std::string::npos; at = hit + marker.size()) {
        if (hit > at) parts.push_back(text_part(prompt.substr(at, hit - at)));
        parts.push_back(image_part());
        ++markers;
    }
    if (at < prompt.size()) parts.push_back(text_part(prompt.substr(at)));
    if (markers == 0) {
        parts.insert(parts.begin(), images, image_part());
    } else if (markers != images) {
        throw InputError("prompt has " + std::to_string(markers) + " <|image|> markers but " +
                         std::to_string(images) + " images were given");
    }
    return parts;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int run(const Args& args) {
    const auto t_load = Clock::now();
    const ModelConfig config = load_config(args.model_dir / "config.json");
    const auto* mllama = std::get_if<MllamaConfig>(&config.family);
    if (!mllama)
        throw UnsupportedError((args.model_dir / "config.json").string() + ": model_type '" + config.model_type +
                               "' is not supported by fusionlm-run (supported: mllama)");
    if (isatty(2) && !args.json) std::fputs("loading weights...", stderr);
    WeightBinder binder(Checkpoint::open(args.model_dir));
    const MllamaModel model = bind_mllama(binder, *mllama);
    if (isatty(2) && !args.json) std::fputs(" done\n", stderr);
    const Tokenizer tokenizer = Tokenizer::from_dir(args.model_dir);
    const ChatTemplate chat = ChatTemplate::from_dir(args.model_dir);
    std::vector<std::int64_t> stop_tokens = mllama->text_config.eos_token_id;
    if (fs::exists(args.model_dir / "generation_config.json"))
        for (TokenId id : read_eos_token_ids(args.model_dir / "generation_config.json")) stop_tokens.push_back(id);
    if (args.ignore_eos) stop_tokens.clear();
    ThreadPool pool(args.threads);
    const double load_s = seconds_since(t_load);

    std::vector<ChatMessage> messages;
    if (!args.system.empty()) messages.push_back({Role::system, {text_part(args.system)}});
    messages.push_back({Role::user, user_content(args.prompt, args.images.size())});
    std::vector<std::int64_t> ids;
    for (TokenId id : chat.encode(tokenizer, messages)) ids.push_back(id);
    const auto S = std::int64_t(ids.size());
    const std::int64_t context = mllama->text_config.max_position_embeddings;
    if (S + args.max_new_tokens > context)
        throw InputError("prompt of " + std::to_string(S) + " tokens plus " + std::to_string(args.max_new_tokens) +
                         " new tokens exceeds the context of " + std::to_string(context));

    auto session = model.new_session(1);
    const auto t_vision = Clock::now();
    if (!args.images.empty()) {
        std::vector<Image> images;
        for (const auto& file : args.images) images.push_back(load_image(file));
        const auto processor = MllamaImageProcessor::from_file(args.model_dir / "preprocessor_config.json");
        attach_prompt_images(pool, model, session, processor, images, ids, mllama->image_token_index);
    }
    const double vision_s = seconds_since(t_vision);

    Sampler sampler(args.sampling);
    DecodeStream stream(tokenizer, /*skip_special=*/true);
    std::string text;
    const auto emit = [&](const std::string& piece) {
        text += piece;
        if (!args.json) std::cout << piece << std::flush;
    };

    std::int64_t generated = 0;
    double prefill_s = 0.0, decode_s = 0.0;
    if (args.max_new_tokens > 0) {
        const auto t_prefill = Clock::now();
        RowMatrix logits = model.forward(pool, session, TokenBatch{1, S, ids, {}, {}}, Logits::Last);
        prefill_s = seconds_since(t_prefill);
        const auto t_decode = Clock::now();
        for (;;) {
            const std::int64_t token = sampler.sample(logits.row(0));
            ++generated;
            if (std::find(stop_tokens.begin(), stop_tokens.end(), token) != stop_tokens.end()) break;
            emit(stream.step(TokenId(token)));
            if (generated >= args.max_new_tokens) break;
            const std::int64_t next[] = {token};
            logits = model.forward(pool, session, TokenBatch{1, 1, next, {}, {}}, Logits::Last);
        }
        emit(stream.finish());
        decode_s = seconds_since(t_decode);
    }
    // The first new token comes from the prefill; decode speed counts the tokens after it.
    const double prefill_tps = prefill_s > 0.0 ? double(S) / prefill_s : 0.0;
    const double decode_tps = generated > 1 ? double(generated - 1) / decode_s : 0.0;
    if (args.json) {
        const nlohmann::json out = {{"text", text},
                                    {"prompt_tokens", S},
                                    {"generated_tokens", generated},
                                    {"load_s", load_s},
                                    {"vision_s", vision_s},
                                    {"prefill_tokens_per_s", prefill_tps},
                                    {"decode_tokens_per_s", decode_tps}};
        std::cout << out.dump() << "\n";
    } else {
        std::cout << "\n";
        std::fprintf(stderr, "load %.2f s, images %.2f s, prefill %.1f tok/s (%lld tokens), decode %.1f tok/s (%lld tokens)\n",
                     load_s, vision_s, prefill_tps, static_cast<long long>(S), decode_tps,
                     static_cast<long long>(generated));
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    try {
        return run(parse_args(argc, argv));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fusionlm-run: %s\n", e.what());
    }
    return 2;
}
