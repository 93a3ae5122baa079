#pragma once
// Built-in chat templates (no Jinja engine), chosen by the checkpoint's model_type:
//   mllama  Llama 3.2 Vision Instruct (images as <|image|> inside the user turn)
//   llama   Llama 3 / 3.1 Instruct, text only
//   llava   llava-1.5 ("USER: <image>\n... ASSISTANT:")
//   plain   a base model without a chat template: BOS, then the prompt as is
// and the end-of-sequence ids of generation_config.json.
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "tokenizer.hpp"
#include "unicode.hpp"

namespace fusionlm {

enum class Role { system, user, assistant, ipython };

inline std::string_view role_name(Role r) {
    switch (r) {
        case Role::system: return "system";
        case Role::user: return "user";
        case Role::assistant: return "assistant";
        case Role::ipython: return "ipython";
    }
    return "user";
}

// One item of a message: text, or the place where an image goes.
struct ContentPart {
    bool is_image = false;
    std::string text;
};
inline ContentPart text_part(std::string text) { return {false, std::move(text)}; }
inline ContentPart image_part() { return {true, {}}; }

struct ChatMessage {
    Role role = Role::user;
    std::vector<ContentPart> content;
};

// A rendered prompt and the byte ranges that hold the caller's words: special-token text inside
// them stays plain text when the prompt is encoded.
struct RenderedPrompt {
    std::string text;
    std::vector<std::pair<std::size_t, std::size_t>> user_ranges;
    std::size_t image_count = 0;
};

enum class ChatStyle { plain, llama3, mllama, llava };

class ChatTemplate {
public:
    ChatStyle style = ChatStyle::plain;
    std::string bos = "<|begin_of_text|>";  // empty: the model has no BOS token
    std::string image_token = "<|image|>";
    // "Today Date" of the Llama 3.2 Vision system block; HF's default when no clock is available.
    std::string date_string = "26 Jul 2024";

    // The template for a checkpoint: its model_type and whether it ships a chat template (the
    // chat_template text, used only to tell Llama 3 templates from others).
    static ChatTemplate for_model(std::string_view model_type, bool has_chat_template, std::string_view chat_template = {}) {
        ChatTemplate t;
        if (model_type == "mllama") {
            t.style = has_chat_template ? ChatStyle::mllama : ChatStyle::plain;
        } else if (model_type == "llava") {
            t.style = has_chat_template ? ChatStyle::llava : ChatStyle::plain;
            t.bos = "<s>";
            t.image_token = "<image>";
        } else if (model_type == "llama" && has_chat_template) {
            if (chat_template.find("<|start_header_id|>") == std::string_view::npos)
                throw UnsupportedError("chat template of this model_type 'llama' checkpoint is not the Llama 3 format; "
                                       "no built-in equivalent");
            t.style = ChatStyle::llama3;
        } else if (has_chat_template) {
            throw UnsupportedError("no built-in chat template for model_type '" + std::string(model_type) + "'");
        }
        return t;
    }

    // From a checkpoint directory: config.json (model_type), tokenizer_config.json (chat_template,
    // bos_token) and chat_template.json if present.
    static ChatTemplate from_dir(const std::filesystem::path& dir) {
        const nlohmann::json config = read_json(dir / "config.json");
        if (!config.contains("model_type") || !config.at("model_type").is_string())
            throw ConfigError((dir / "config.json").string() + ": missing string field 'model_type'");
        nlohmann::json tok_config = nlohmann::json::object();
        if (std::filesystem::exists(dir / "tokenizer_config.json")) tok_config = read_json(dir / "tokenizer_config.json");
        std::string chat_template;
        if (tok_config.contains("chat_template")) chat_template = tok_config.at("chat_template").dump();
        if (std::filesystem::exists(dir / "chat_template.json"))
            chat_template += read_json(dir / "chat_template.json").dump();
        ChatTemplate t = for_model(config.at("model_type").get<std::string>(), !chat_template.empty(), chat_template);
        if (tok_config.contains("bos_token")) {
            const auto& b = tok_config.at("bos_token");
            if (b.is_null()) t.bos.clear();
            else if (b.is_string()) t.bos = b.get<std::string>();
            else if (b.is_object() && b.contains("content")) t.bos = b.at("content").get<std::string>();
        }
        return t;
    }

    // Renders the conversation. With `add_generation_prompt`, ends with the assistant header.
    RenderedPrompt render(const std::vector<ChatMessage>& messages, bool add_generation_prompt = true) const {
        RenderedPrompt p;
        p.text = bos;
        switch (style) {
            case ChatStyle::plain: render_plain(messages, p); break;
            case ChatStyle::llama3: render_llama3(messages, add_generation_prompt, p); break;
            case ChatStyle::mllama: render_mllama(messages, add_generation_prompt, p); break;
            case ChatStyle::llava: render_llava(messages, add_generation_prompt, p); break;
        }
        return p;
    }

    // Renders and encodes: template tokens are parsed as special tokens, the caller's words are
    // not. BOS is its own id in front, never re-derived from text.
    std::vector<TokenId> encode(const Tokenizer& tok, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt = true) const {
        const RenderedPrompt p = render(messages, add_generation_prompt);
        std::vector<TokenId> ids;
        if (!bos.empty()) {
            const TokenId bos_id = tok.token_to_id(bos);
            if (bos_id < 0) throw ConfigError("BOS token '" + bos + "' is not in the tokenizer's vocabulary");
            ids.push_back(bos_id);
        }
        std::vector<std::pair<std::size_t, std::size_t>> ranges;
        for (const auto& [b, e] : p.user_ranges) ranges.emplace_back(b - bos.size(), e - bos.size());
        const auto rest = tok.encode(std::string_view(p.text).substr(bos.size()),
                                     {.parse_special = true, .add_special_tokens = false, .literal_ranges = ranges});
        ids.insert(ids.end(), rest.begin(), rest.end());
        return ids;
    }

private:
    static nlohmann::json read_json(const std::filesystem::path& path) {
        std::ifstream f(path);
        if (!f) throw ConfigError("cannot open '" + path.string() + "'");
        try {
            return nlohmann::json::parse(f);
        } catch (const nlohmann::json::exception& e) {
            throw FormatError(path.string() + ": not valid JSON: " + e.what());
        }
    }

    static void user_text(RenderedPrompt& p, std::string_view s) {
        const std::size_t begin = p.text.size();
        p.text += s;
        if (!s.empty()) p.user_ranges.emplace_back(begin, p.text.size());
    }

    void image(RenderedPrompt& p) const {
        p.text += image_token;
        ++p.image_count;
    }

    // Jinja's trim: Unicode white space at both ends.
    static std::string_view trim(std::string_view s) {
        auto ws_front = [&](std::size_t& i) {
            std::size_t k = i;
            if (k < s.size() && unicode::is_white_space(unicode::decode_at(s, k))) { i = k; return true; }
            return false;
        };
        std::size_t b = 0;
        while (ws_front(b)) {}
        std::size_t e = s.size();
        while (e > b) {
            std::size_t start = e - 1;
            while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
            std::size_t k = start;
            if (!unicode::is_white_space(unicode::decode_at(s, k))) break;
            e = start;
        }
        return s.substr(b, e - b);
    }

    static std::string joined_text(const ChatMessage& m, const char* style_name) {
        std::string s;
        for (const ContentPart& c : m.content) {
            if (c.is_image)
                throw InputError(std::string(style_name) + " chat: images are not allowed in a " +
                                 std::string(role_name(m.role)) + " message");
            s += c.text;
        }
        return s;
    }

    static void header(RenderedPrompt& p, Role r) {
        p.text += "<|start_header_id|>";
        p.text += role_name(r);
        p.text += "<|end_header_id|>\n\n";
    }

    void render_plain(const std::vector<ChatMessage>& messages, RenderedPrompt& p) const {
        for (const ChatMessage& m : messages)
            for (const ContentPart& c : m.content) {
                if (c.is_image) image(p);
                else user_text(p, c.text);
            }
    }

    // Llama 3 / 3.1 text template (as in Llama 3's tokenizer_config.json): every message trimmed.
    void render_llama3(const std::vector<ChatMessage>& messages, bool gen, RenderedPrompt& p) const {
        for (const ChatMessage& m : messages) {
            header(p, m.role);
            user_text(p, trim(joined_text(m, "Llama 3")));
            p.text += "<|eot_id|>";
        }
        if (gen) header(p, Role::assistant);
    }

    // Llama 3.2 Vision Instruct: a leading system message is trimmed and goes into the system block,
    // which is written only when the conversation has no image (the model's template refuses images
    // together with a system message). Message parts are written in order, untrimmed.
    void render_mllama(const std::vector<ChatMessage>& messages, bool gen, RenderedPrompt& p) const {
        std::size_t first = 0;
        std::string system;
        if (!messages.empty() && messages[0].role == Role::system) {
            system = std::string(trim(joined_text(messages[0], "Llama 3.2 Vision")));
            first = 1;
        }
        bool has_images = false;
        for (const ChatMessage& m : messages)
            for (const ContentPart& c : m.content) has_images = has_images || c.is_image;
        if (has_images && !system.empty())
            throw InputError("Llama 3.2 Vision chat: a system message cannot be combined with images "
                             "(the model's chat template forbids it)");
        if (!has_images) {
            header(p, Role::system);
            p.text += "Cutting Knowledge Date: December 2023\nToday Date: " + date_string + "\n\n";
            user_text(p, system);
            p.text += "<|eot_id|>";
        }
        for (std::size_t k = first; k < messages.size(); ++k) {
            const ChatMessage& m = messages[k];
            if (m.role == Role::system) throw InputError("Llama 3.2 Vision chat: a system message must come first");
            header(p, m.role);
            for (const ContentPart& c : m.content) {
                if (c.is_image) image(p);
                else user_text(p, c.text);
            }
            p.text += "<|eot_id|>";
        }
        if (gen) header(p, Role::assistant);
    }

    // llava-1.5: "ROLE: " (none for system), the message's images as "<image>\n", then each text
    // part followed by a space; the generation prompt is "ASSISTANT:".
    void render_llava(const std::vector<ChatMessage>& messages, bool gen, RenderedPrompt& p) const {
        for (const ChatMessage& m : messages) {
            if (m.role != Role::system) {
                std::string role(role_name(m.role));
                for (char& ch : role) ch = char(ch - 'a' + 'A');
                p.text += role + ": ";
            }
            for (const ContentPart& c : m.content)
                if (c.is_image) {
                    image(p);
                    p.text += "\n";
                }
            for (const ContentPart& c : m.content)
                if (!c.is_image) {
                    user_text(p, c.text);
                    p.text += " ";
                }
        }
        if (gen) p.text += "ASSISTANT:";
    }
};

// End-of-sequence ids from generation_config.json: `eos_token_id` is an int or a list of ints.
inline std::vector<TokenId> eos_token_ids(const nlohmann::json& generation_config, const std::string& where = "generation_config.json") {
    std::vector<TokenId> out;
    if (!generation_config.contains("eos_token_id") || generation_config.at("eos_token_id").is_null()) return out;
    const auto& e = generation_config.at("eos_token_id");
    auto one = [&](const nlohmann::json& v) {
        if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() >= (std::int64_t(1) << 30))
            throw ConfigError(where + ": eos_token_id must be a non-negative integer or a list of them, got " + v.dump());
        out.push_back(TokenId(v.get<std::int64_t>()));
    };
    if (e.is_array()) {
        for (const auto& v : e) one(v);
    } else {
        one(e);
    }
    return out;
}

inline std::vector<TokenId> read_eos_token_ids(const std::filesystem::path& path) {
    std::ifstream f(path);
    if (!f) throw ConfigError("cannot open '" + path.string() + "'");
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(f);
    } catch (const nlohmann::json::exception& e) {
        throw FormatError(path.string() + ": not valid JSON: " + e.what());
    }
    return eos_token_ids(j, path.string());
}

// The ids that end generation, as Hugging Face's generate() picks them: generation_config.json's
// eos_token_id when the checkpoint has that file, else config.json's (config_eos).
inline std::vector<std::int64_t> generation_stop_tokens(const std::filesystem::path& model_dir,
                                                        const std::vector<std::int64_t>& config_eos) {
    const std::filesystem::path path = model_dir / "generation_config.json";
    if (!std::filesystem::exists(path)) return config_eos;
    const std::vector<TokenId> ids = read_eos_token_ids(path);
    return {ids.begin(), ids.end()};
}

}  // namespace fusionlm
