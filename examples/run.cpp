// fusionlm-run: a prompt and images in, streamed text out, from a Hugging Face checkpoint folder
// (Llama 3.2 Vision, LLaVA, or a text-only Llama).
//   fusionlm-run -m DIR [--image FILE]... -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P]
//                [--seed S] [-t THREADS] [--system TEXT] [--ignore-eos] [--f32] [--json]
// Matrix products use the fastest instructions the CPU has, AMX tiles and bf16 dot products (which round
// activations to bf16) included; --f32 keeps every product in f32, as fusionlm-parity does.
#define FUSIONLM_IMPLEMENT_STB_IMAGE
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>
#include <vector>

#include <fusionlm/core/cpu.hpp>
#include <fusionlm/core/error.hpp>
#include <fusionlm/core/threads.hpp>
#include <fusionlm/image/image.hpp>
#include <fusionlm/io/checkpoint.hpp>
#include <fusionlm/io/config.hpp>
#include <fusionlm/io/weights.hpp>
#include <fusionlm/llava_prompt.hpp>
#include <fusionlm/mllama_prompt.hpp>
#include <fusionlm/models/llama_causal_lm.hpp>
#include <fusionlm/models/llava.hpp>
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
    bool f32 = false;
    bool json = false;
};

const char* kUsage =
    "usage: fusionlm-run -m DIR [--image FILE]... -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P]\n"
    "                    [--seed S] [-t THREADS] [--system TEXT] [--ignore-eos] [--f32] [--json]\n";

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
        else if (flag == "--f32") a.f32 = true;
        else if (flag == "--json") a.json = true;
        else throw InputError("unknown argument '" + flag + "'");
    }
    if (a.model_dir.empty()) throw InputError("-m DIR is required");
    if (!have_prompt) throw InputError("-p PROMPT is required");
    if (a.max_new_tokens < 0) throw InputError("-n: must not be negative");
    if (a.threads < 0) throw InputError("-t: must not be negative");
    return a;
}

// The user's text with an image where each marker (<|image|> for mllama, <image> for llava) stands; with
// no marker, the images come first, as in the reference's single-image prompts. A marker count that
// disagrees is an error.
std::vector<ContentPart> user_content(const std::string& prompt, std::size_t images, const std::string& marker) {
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
        throw InputError("prompt has " + std::to_string(markers) + " " + marker + " markers but " +
                         std::to_string(images) + " images were given");
    }
    return parts;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The checkpoint is memory-mapped, so its bytes are read when first touched. Touching one byte per page
// here does the reading up front, behind a progress bar on a terminal, instead of inside the first token.
void read_weights(const Checkpoint& checkpoint, bool progress) {
    std::size_t total = 0, done = 0;
    for (const TensorView* t : checkpoint.tensors()) total += t->nbytes();
    volatile std::uint8_t sink = 0;
    int shown = -1;
    for (const TensorView* t : checkpoint.tensors()) {
        const auto* bytes = reinterpret_cast<const std::uint8_t*>(t->data);
        for (std::size_t at = 0; at < t->nbytes(); at += 4096) sink = std::uint8_t(sink ^ bytes[at]);
        done += t->nbytes();
        const int percent = total ? int(100 * done / total) : 100;
        if (progress && percent != shown) {
            shown = percent;
            const std::string bar = std::string(std::size_t(percent / 4), '#') + std::string(std::size_t(25 - percent / 4), ' ');
            std::fprintf(stderr, "\rloading weights [%s] %3d%%", bar.c_str(), percent);
        }
    }
    if (progress) std::fputs("\n", stderr);
}

// What every family shares: the tokenizer, the chat template and the stop tokens of the checkpoint.
struct Conversation {
    Tokenizer tokenizer;
    ChatTemplate chat;
    std::vector<std::int64_t> stop_tokens;
    std::int64_t context = 0;
    double load_s = 0.0;

    // The chat prompt's ids, each image as one marker token where the user put it.
    std::vector<std::int64_t> prompt_ids(const Args& args, const std::string& marker) const {
        std::vector<ChatMessage> messages;
        if (!args.system.empty()) messages.push_back({Role::system, {text_part(args.system)}});
        messages.push_back({Role::user, user_content(args.prompt, args.images.size(), marker)});
        std::vector<std::int64_t> ids;
        for (TokenId id : chat.encode(tokenizer, messages)) ids.push_back(id);
        return ids;
    }
};

Conversation open_conversation(const Args& args, const std::vector<std::int64_t>& config_eos, std::int64_t context,
                               Clock::time_point t_load) {
    Conversation c{Tokenizer::from_dir(args.model_dir), ChatTemplate::from_dir(args.model_dir),
                   generation_stop_tokens(args.model_dir, config_eos), context, 0.0};
    if (args.ignore_eos) c.stop_tokens.clear();
    c.load_s = seconds_since(t_load);
    return c;
}

std::vector<Image> load_images(const Args& args) {
    std::vector<Image> images;
    for (const auto& file : args.images) images.push_back(load_image(file));
    return images;
}

// Prefill, then sample token by token, streaming the text (or printing one JSON line at the end).
template <class Model>
int generate_text(const Args& args, ThreadPool& pool, const Model& model, typename Model::Session& session,
                  const std::vector<std::int64_t>& ids, const Conversation& conv, double vision_s) {
    const auto S = std::int64_t(ids.size());
    if (S + args.max_new_tokens > conv.context)
        throw InputError("prompt of " + std::to_string(S) + " tokens plus " + std::to_string(args.max_new_tokens) +
                         " new tokens exceeds the context of " + std::to_string(conv.context));
    Sampler sampler(args.sampling);
    DecodeStream stream(conv.tokenizer, /*skip_special=*/true);
    std::string text;
    const auto emit = [&](const std::string& piece) {
        text += piece;
        if (!args.json) std::cout << piece << std::flush;
    };

    std::vector<std::int64_t> tokens;  // every sampled id, a stop token included
    double prefill_s = 0.0, decode_s = 0.0;
    if (args.max_new_tokens > 0) {
        const auto t_prefill = Clock::now();
        RowMatrix logits = model.forward(pool, session, TokenBatch{1, S, ids, {}, {}}, Logits::Last);
        prefill_s = seconds_since(t_prefill);
        const auto t_decode = Clock::now();
        for (;;) {
            const std::int64_t token = sampler.sample(logits.row(0));
            tokens.push_back(token);
            if (std::find(conv.stop_tokens.begin(), conv.stop_tokens.end(), token) != conv.stop_tokens.end()) break;
            emit(stream.step(TokenId(token)));
            if (std::int64_t(tokens.size()) >= args.max_new_tokens) break;
            const std::int64_t next[] = {token};
            logits = model.forward(pool, session, TokenBatch{1, 1, next, {}, {}}, Logits::Last);
        }
        emit(stream.finish());
        decode_s = seconds_since(t_decode);
    }
    // The first new token comes from the prefill; decode speed counts the tokens after it.
    const double prefill_tps = prefill_s > 0.0 ? double(S) / prefill_s : 0.0;
    const auto generated = std::int64_t(tokens.size());
    const double decode_tps = generated > 1 ? double(generated - 1) / decode_s : 0.0;
    if (args.json) {
        const nlohmann::json out = {{"text", text},
                                    {"prompt_tokens", S},
                                    {"generated_tokens", generated},
                                    {"tokens", tokens},
                                    {"isa", isa_name(pool.isa())},
                                    {"load_s", conv.load_s},
                                    {"vision_s", vision_s},
                                    {"prefill_tokens_per_s", prefill_tps},
                                    {"decode_tokens_per_s", decode_tps}};
        std::cout << out.dump() << "\n";
    } else {
        std::cout << "\n";
        std::fprintf(stderr, "load %.2f s, images %.2f s, prefill %.1f tok/s (%lld tokens), decode %.1f tok/s (%lld tokens)\n",
                     conv.load_s, vision_s, prefill_tps, static_cast<long long>(S), decode_tps,
                     static_cast<long long>(generated));
    }
    return 0;
}

int run(const Args& args) {
    const auto t_load = Clock::now();
    const ModelConfig config = load_config(args.model_dir / "config.json");
    const bool progress = isatty(2) && !args.json;
    WeightBinder binder(Checkpoint::open(args.model_dir));
    read_weights(binder.checkpoint(), progress);
    ThreadPool pool(args.threads);
    pool.set_isa(args.f32 ? best_isa() : fastest_isa());

    if (const auto* mllama = std::get_if<MllamaConfig>(&config.family)) {
        const MllamaModel model = bind_mllama(binder, *mllama);
        const Conversation conv =
            open_conversation(args, mllama->text_config.eos_token_id, mllama->text_config.max_position_embeddings, t_load);
        const std::vector<std::int64_t> ids = conv.prompt_ids(args, "<|image|>");
        auto session = model.new_session(1);
        const auto t_vision = Clock::now();
        if (!args.images.empty()) {
            const auto processor = MllamaImageProcessor::from_file(args.model_dir / "preprocessor_config.json");
            attach_prompt_images(pool, model, session, processor, load_images(args), ids, mllama->image_token_index);
        }
        return generate_text(args, pool, model, session, ids, conv, seconds_since(t_vision));
    }
    if (const auto* llava = std::get_if<LlavaConfig>(&config.family)) {
        const LlavaModel model = bind_llava(binder, *llava);
        const Conversation conv =
            open_conversation(args, llava->text_config.eos_token_id, llava->text_config.max_position_embeddings, t_load);
        auto session = model.new_session(1);
        const auto t_vision = Clock::now();
        std::vector<std::int64_t> ids = conv.prompt_ids(args, "<image>");
        if (!args.images.empty()) {
            const auto processor = ClipImageProcessor::from_file(args.model_dir / "preprocessor_config.json");
            ids = attach_prompt_images(pool, model, session, processor, load_images(args), ids);
        }
        return generate_text(args, pool, model, session, ids, conv, seconds_since(t_vision));
    }
    if (const auto* llama = std::get_if<LlamaConfig>(&config.family)) {
        if (!args.images.empty()) throw InputError("--image: model_type 'llama' is a text-only model");
        const LlamaModel model = bind_llama(binder, *llama);
        const Conversation conv = open_conversation(args, llama->eos_token_id, llama->max_position_embeddings, t_load);
        auto session = model.new_session(1);
        return generate_text(args, pool, model, session, conv.prompt_ids(args, "<image>"), conv, 0.0);
    }
    throw UnsupportedError((args.model_dir / "config.json").string() + ": model_type '" + config.model_type +
                           "' is not supported by fusionlm-run (supported: mllama, llava, llama)");
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
