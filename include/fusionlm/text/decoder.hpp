#pragma once
// Decoders of tokenizer.json (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence),
// applied token by token so that the same code serves whole-sequence and streaming decoding.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "pre_tokenizer.hpp"
#include "unicode.hpp"

namespace fusionlm {

class TokenDecoder {
public:
    // Progress through one sequence: tokens seen so far and leading characters still to strip.
    struct State {
        std::size_t index = 0;
        std::size_t strip_pending = 0;
    };

    TokenDecoder() = default;

    // From the `decoder` member of tokenizer.json. Hugging Face joins tokens with spaces when there
    // is no decoder; so do we.
    static TokenDecoder from_json(const nlohmann::json& j) {
        TokenDecoder d;
        if (j.is_null()) {
            d.join_with_space_ = true;
            return d;
        }
        bool merged = false;
        d.add(j, merged);
        return d;
    }

    State start() const {
        State s;
        for (const Step& step : steps_)
            if (step.kind == Kind::kStrip && step.global) s.strip_pending = step.start;
        return s;
    }

    // Appends the bytes one token contributes. The bytes of several tokens may form one UTF-8
    // character; the caller converts the concatenation (see unicode::append_lossy).
    void append(std::string_view token, State& st, std::string& out) const {
        std::string t(token);
        for (const Step& step : steps_) {
            switch (step.kind) {
                case Kind::kReplace: t = replace_all(t, step.a, step.b); break;
                case Kind::kByteLevel: t = byte_level(t); break;
                case Kind::kByteFallback: byte_fallback(t); break;
                case Kind::kMetaspace: t = replace_all(t, step.a, st.index == 0 && step.drop_first ? "" : " "); break;
                case Kind::kStrip: strip(t, step, st); break;
            }
        }
        if (join_with_space_ && st.index > 0) out.push_back(' ');
        out += t;
        ++st.index;
    }

private:
    enum class Kind { kReplace, kByteLevel, kByteFallback, kMetaspace, kStrip };
    struct Step {
        Kind kind;
        std::string a{}, b{};
        bool drop_first = false, global = false;
        std::size_t start = 0, stop = 0;
    };

    // `merged` tracks whether an earlier step has joined tokens (ByteLevel, ByteFallback, Fuse):
    // steps that depend on token boundaries cannot follow one token at a time after that.
    void add(const nlohmann::json& j, bool& merged) {
        const std::string type = j.value("type", std::string());
        const std::string where = "tokenizer.json decoder " + type;
        if (type == "Sequence") {
            for (const auto& sub : j.at("decoders")) add(sub, merged);
        } else if (type == "ByteLevel") {
            if (merged) throw UnsupportedError(where + " after a merging decoder");
            steps_.push_back({Kind::kByteLevel});
            merged = true;
        } else if (type == "ByteFallback") {
            if (merged) throw UnsupportedError(where + " after a merging decoder");
            steps_.push_back({Kind::kByteFallback});
            merged = true;
        } else if (type == "Fuse") {
            merged = true;
        } else if (type == "Replace") {
            const auto& pat = j.at("pattern");
            if (!pat.contains("String"))
                throw UnsupportedError(where + ": only String patterns are supported, got " + pat.dump());
            Step s{Kind::kReplace, pat.at("String").get<std::string>(), j.at("content").get<std::string>()};
            if (s.a.empty()) throw FormatError(where + ": empty pattern");
            bool complete = false;
            if (merged && unicode::utf8_scan(s.a, 0, complete) != s.a.size())
                throw UnsupportedError(where + ": a multi-character pattern after a merging decoder");
            steps_.push_back(s);
        } else if (type == "Metaspace") {
            if (merged) throw UnsupportedError(where + " after a merging decoder");
            Step s{Kind::kMetaspace, j.value("replacement", std::string("\u2581"))};
            s.drop_first = parse_prepend_scheme(j, where) != PrependScheme::kNever;
            steps_.push_back(s);
        } else if (type == "Strip") {
            Step s{Kind::kStrip, j.at("content").get<std::string>()};
            s.start = j.value("start", std::size_t(0));
            s.stop = j.value("stop", std::size_t(0));
            s.global = merged;
            if (merged && s.stop > 0)
                throw UnsupportedError(where + ": stripping the end after a merging decoder");
            steps_.push_back(s);
        } else {
            throw UnsupportedError("tokenizer.json: decoder type '" + type + "' is not supported");
        }
    }

    static std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
        std::string out;
        std::size_t pos = 0;
        for (std::size_t hit = s.find(from); hit != std::string_view::npos; hit = s.find(from, pos)) {
            out.append(s.substr(pos, hit - pos));
            out.append(to);
            pos = hit + from.size();
        }
        out.append(s.substr(pos));
        return out;
    }

    // Characters of the byte-level alphabet back to bytes; a token with any other character
    // (an added token such as "<|image|>" written in plain text) is kept as its own UTF-8.
    static std::string byte_level(const std::string& t) {
        const auto& alphabet = ByteLevelAlphabet::get();
        std::string out;
        out.reserve(t.size());
        for (std::size_t i = 0; i < t.size();) {
            bool complete = false;
            if (unicode::utf8_scan(t, i, complete) == 0 || !complete) return t;
            const int b = alphabet.decode(unicode::decode_at(t, i));
            if (b < 0) return t;
            out.push_back(char(b));
        }
        return out;
    }

    static void byte_fallback(std::string& t) {
        if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return;
        auto hex = [](char c) -> int {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            return -1;
        };
        const int hi = hex(t[3]), lo = hex(t[4]);
        if (hi < 0 || lo < 0) return;
        t.assign(1, char(hi * 16 + lo));
    }

    static void strip(std::string& t, const Step& s, State& st) {
        const std::string& c = s.a;
        if (s.global) {
            while (st.strip_pending > 0 && t.compare(0, c.size(), c) == 0) {
                t.erase(0, c.size());
                --st.strip_pending;
            }
            if (!t.empty()) st.strip_pending = 0;
            return;
        }
        for (std::size_t k = 0; k < s.start && t.compare(0, c.size(), c) == 0; ++k) t.erase(0, c.size());
        for (std::size_t k = 0; k < s.stop && t.size() >= c.size() && t.compare(t.size() - c.size(), c.size(), c) == 0; ++k)
            t.erase(t.size() - c.size());
    }

    std::vector<Step> steps_;
    bool join_with_space_ = false;
};

}  // namespace fusionlm
