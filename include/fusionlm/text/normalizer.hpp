#pragma once
// Normalizers of tokenizer.json: NFC, NFD, Prepend, Replace (string pattern), Strip, Sequence.
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "normalize.hpp"
#include "unicode.hpp"

namespace fusionlm {

class Normalizer {
public:
    Normalizer() = default;

    // From the `normalizer` member of tokenizer.json (null: identity).
    static Normalizer from_json(const nlohmann::json& j) {
        Normalizer n;
        if (!j.is_null()) n.add(j);
        return n;
    }

    bool empty() const { return steps_.empty(); }

    std::string apply(std::string_view text) const {
        std::string s(text);
        for (const Step& step : steps_) {
            switch (step.kind) {
                case Kind::kNfc: s = unicode::nfc(s); break;
                case Kind::kNfd: s = unicode::nfd(s); break;
                case Kind::kPrepend:
                    if (!s.empty()) s.insert(0, step.a);
                    break;
                case Kind::kReplace: s = replace_all(s, step.a, step.b); break;
                case Kind::kStrip: s = strip(s, step.left, step.right); break;
            }
        }
        return s;
    }

private:
    enum class Kind { kNfc, kNfd, kPrepend, kReplace, kStrip };
    struct Step {
        Kind kind;
        std::string a{}, b{};
        bool left = false, right = false;
    };

    void add(const nlohmann::json& j) {
        const std::string type = j.value("type", std::string());
        if (type == "Sequence") {
            for (const auto& sub : j.at("normalizers")) add(sub);
        } else if (type == "NFC") {
            steps_.push_back({Kind::kNfc});
        } else if (type == "NFD") {
            steps_.push_back({Kind::kNfd});
        } else if (type == "Prepend") {
            steps_.push_back({Kind::kPrepend, j.at("prepend").get<std::string>()});
        } else if (type == "Replace") {
            const auto& pat = j.at("pattern");
            if (!pat.contains("String"))
                throw UnsupportedError("tokenizer.json normalizer Replace: only String patterns are supported, got " + pat.dump());
            const std::string from = pat.at("String").get<std::string>();
            if (from.empty()) throw FormatError("tokenizer.json normalizer Replace: empty pattern");
            steps_.push_back({Kind::kReplace, from, j.at("content").get<std::string>()});
        } else if (type == "Strip") {
            Step s{Kind::kStrip};
            s.left = j.value("strip_left", true);
            s.right = j.value("strip_right", true);
            steps_.push_back(s);
        } else {
            throw UnsupportedError("tokenizer.json: normalizer type '" + type + "' is not supported");
        }
    }

    static std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
        std::string out;
        out.reserve(s.size());
        std::size_t pos = 0;
        for (std::size_t hit = s.find(from); hit != std::string_view::npos; hit = s.find(from, pos)) {
            out.append(s.substr(pos, hit - pos));
            out.append(to);
            pos = hit + from.size();
        }
        out.append(s.substr(pos));
        return out;
    }

    // Strips Unicode White_Space on the chosen sides.
    static std::string strip(std::string_view s, bool left, bool right) {
        std::size_t begin = 0, end = s.size();
        if (left) {
            while (begin < end) {
                std::size_t i = begin;
                if (!unicode::is_white_space(unicode::decode_at(s, i))) break;
                begin = i;
            }
        }
        if (right) {
            while (end > begin) {
                std::size_t start = end - 1;
                while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
                std::size_t i = start;
                if (!unicode::is_white_space(unicode::decode_at(s, i))) break;
                end = start;
            }
        }
        return std::string(s.substr(begin, end - begin));
    }

    std::vector<Step> steps_;
};

}  // namespace fusionlm
