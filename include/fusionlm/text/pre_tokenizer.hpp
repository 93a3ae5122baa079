#pragma once
// Pre-tokenizers of tokenizer.json: the tiktoken-style Split regexes (Llama 3, Qwen2) and the GPT-2
// regex implemented by hand, the ByteLevel byte-to-unicode mapping, and Metaspace.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "unicode.hpp"

namespace fusionlm {

// ---- the regexes -------------------------------------------------------------------------------

// The Split patterns we implement, recognised by their exact text in tokenizer.json.
// kLlama3: cl100k_base / Llama 3 (digits in groups of 1-3); kQwen2: same with single digits;
// kGpt2: the GPT-2 pattern ByteLevel uses when `use_regex` is true.
enum class SplitPattern { kLlama3, kQwen2, kGpt2 };

inline constexpr std::string_view kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace detail {

// Code points of one piece with their classes and byte offsets (offset[n] = byte length).
struct CodePoints {
    std::vector<char32_t> cp;
    std::vector<std::uint8_t> cls;
    std::vector<std::uint32_t> offset;

    void assign(std::string_view s) {
        cp.clear();
        cls.clear();
        offset.clear();
        for (std::size_t i = 0; i < s.size();) {
            offset.push_back(std::uint32_t(i));
            const char32_t c = unicode::decode_at(s, i);
            cp.push_back(c);
            cls.push_back(unicode::char_class(c));
        }
        offset.push_back(std::uint32_t(s.size()));
    }
    std::size_t size() const { return cp.size(); }
};

class Matcher {
public:
    explicit Matcher(const CodePoints& p) : p_(p), n_(p.size()) {}

    bool letter(std::size_t k) const { return k < n_ && (p_.cls[k] & unicode::kLetter); }
    bool number(std::size_t k) const { return k < n_ && (p_.cls[k] & unicode::kNumber); }
    bool space(std::size_t k) const { return k < n_ && (p_.cls[k] & unicode::kWhiteSpace); }
    // [^\s\p{L}\p{N}]
    bool other(std::size_t k) const { return k < n_ && p_.cls[k] == 0; }
    bool newline(std::size_t k) const { return k < n_ && (p_.cp[k] == '\r' || p_.cp[k] == '\n'); }
    char32_t at(std::size_t k) const { return k < n_ ? p_.cp[k] : 0; }

    // 's 't 're 've 'm 'll 'd; `fold` applies simple case folding (the (?i:...) group).
    std::size_t contraction(std::size_t i, bool fold) const {
        if (at(i) != '\'' || i + 1 >= n_) return 0;
        auto lower = [&](std::size_t k) -> char {
            const char32_t c = at(k);
            if (fold) return unicode::fold_to_ascii(c);
            return c < 0x80 ? char(c) : 0;
        };
        const char a = lower(i + 1);
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
        if (i + 2 >= n_) return 0;
        const char b = lower(i + 2);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
        return 0;
    }

    // \s+(?!\S)|\s+ from a whitespace position i: the run, minus its last character when a
    // non-space follows and the run is longer than one.
    std::size_t trailing_space(std::size_t i) const {
        std::size_t j = i;
        while (space(j)) ++j;
        if (j == n_ || j - 1 == i) return j - i;
        return j - 1 - i;
    }

    // Length in code points of the match of the Llama 3 / Qwen2 pattern at i (always >= 1).
    std::size_t llama3(std::size_t i, std::size_t max_digits) const {
        if (std::size_t c = contraction(i, true)) return c;
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (letter(i) || (!newline(i) && !number(i) && letter(i + 1))) {
            std::size_t j = i + 1;
            while (letter(j)) ++j;
            return j - i;
        }
        // \p{N}{1,max_digits}
        if (number(i)) {
            std::size_t j = i + 1;
            while (j - i < max_digits && number(j)) ++j;
            return j - i;
        }
        //  ?[^\s\p{L}\p{N}]+[\r\n]*
        {
            std::size_t j = at(i) == ' ' ? i + 1 : i;
            if (other(j)) {
                while (other(j)) ++j;
                while (newline(j)) ++j;
                return j - i;
            }
        }
        // i is white space here. \s*[\r\n]+ ends after the last newline of the run.
        std::size_t j = i, last_newline = 0;
        bool any_newline = false;
        while (space(j)) {
            if (newline(j)) { last_newline = j; any_newline = true; }
            ++j;
        }
        if (any_newline) return last_newline + 1 - i;
        return trailing_space(i);
    }

    // Length of the match of the GPT-2 pattern at i (always >= 1).
    std::size_t gpt2(std::size_t i) const {
        if (std::size_t c = contraction(i, false)) return c;
        const std::size_t j = at(i) == ' ' ? i + 1 : i;
        if (letter(j) || number(j) || other(j)) {
            const std::uint8_t want = p_.cls[j];
            std::size_t k = j + 1;
            if (want == 0) {
                while (other(k)) ++k;
            } else {
                while (k < n_ && (p_.cls[k] & want)) ++k;
            }
            return k - i;
        }
        return trailing_space(i);
    }

private:
    const CodePoints& p_;
    std::size_t n_;
};

}  // namespace detail

// Splits `s` (valid UTF-8) into the matches of `pattern`; appends them to `out` as views into s.
// Every code point belongs to some branch of these patterns, so the matches tile the input.
inline void split_by_pattern(std::string_view s, SplitPattern pattern, std::vector<std::string_view>& out,
                             detail::CodePoints& scratch) {
    scratch.assign(s);
    const detail::Matcher m(scratch);
    for (std::size_t i = 0; i < scratch.size();) {
        std::size_t len = 0;
        switch (pattern) {
            case SplitPattern::kLlama3: len = m.llama3(i, 3); break;
            case SplitPattern::kQwen2: len = m.llama3(i, 1); break;
            case SplitPattern::kGpt2: len = m.gpt2(i); break;
        }
        out.push_back(s.substr(scratch.offset[i], scratch.offset[i + len] - scratch.offset[i]));
        i += len;
    }
}

inline std::vector<std::string_view> split_by_pattern(std::string_view s, SplitPattern pattern) {
    std::vector<std::string_view> out;
    detail::CodePoints scratch;
    split_by_pattern(s, pattern, out, scratch);
    return out;
}

// ---- ByteLevel alphabet ------------------------------------------------------------------------

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100 onwards in byte order, so every byte is a visible character.
class ByteLevelAlphabet {
public:
    static const ByteLevelAlphabet& get() {
        static const ByteLevelAlphabet instance;
        return instance;
    }
    std::string_view encode(unsigned char b) const { return {chars_[b].data(), lengths_[b]}; }
    // Byte of a code point of the alphabet, or -1.
    int decode(char32_t c) const { return c < byte_of_.size() ? byte_of_[c] : -1; }

    void append_mapped(std::string& out, std::string_view bytes) const {
        for (unsigned char b : bytes) out.append(chars_[b].data(), lengths_[b]);
    }

private:
    ByteLevelAlphabet() {
        byte_of_.fill(-1);
        unsigned extra = 0;
        for (unsigned b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            const char32_t c = printable ? char32_t(b) : char32_t(256 + extra++);
            std::string s;
            unicode::append_utf8(s, c);
            lengths_[b] = std::uint8_t(s.size());
            std::copy(s.begin(), s.end(), chars_[b].begin());
            byte_of_[c] = std::int16_t(b);
        }
    }
    std::array<std::array<char, 2>, 256> chars_{};
    std::array<std::uint8_t, 256> lengths_{};
    std::array<std::int16_t, 324> byte_of_{};
};

// ---- the pre-tokenizer pipeline ----------------------------------------------------------------

enum class PrependScheme { kAlways, kFirst, kNever };

inline PrependScheme parse_prepend_scheme(const nlohmann::json& j, const std::string& where) {
    PrependScheme scheme = PrependScheme::kAlways;
    if (j.contains("prepend_scheme")) {
        const std::string s = j.at("prepend_scheme").get<std::string>();
        if (s == "always") scheme = PrependScheme::kAlways;
        else if (s == "first") scheme = PrependScheme::kFirst;
        else if (s == "never") scheme = PrependScheme::kNever;
        else throw FormatError(where + ": unknown prepend_scheme '" + s + "'");
    }
    if (j.contains("add_prefix_space") && j.at("add_prefix_space").is_boolean() && !j.at("add_prefix_space").get<bool>())
        scheme = PrependScheme::kNever;
    return scheme;
}

// The pieces of one text segment as they go through the steps. Only pieces[0] can be at the start
// of the original input (Metaspace's "first" scheme needs to know).
struct PreTokenized {
    std::vector<std::string> pieces;
    bool first_at_start = false;
};

class PreTokenizer {
public:
    PreTokenizer() = default;

    // From the `pre_tokenizer` member of tokenizer.json (null: the segment is one piece).
    static PreTokenizer from_json(const nlohmann::json& j) {
        PreTokenizer p;
        if (!j.is_null()) p.add(j);
        return p;
    }

    bool empty() const { return steps_.empty(); }

    void run(std::string_view segment, bool at_start, PreTokenized& out) const {
        out.pieces.clear();
        out.pieces.emplace_back(segment);
        out.first_at_start = at_start;
        for (const Step& s : steps_) apply(s, out);
    }

private:
    enum class Kind { kSplit, kByteLevel, kMetaspace };
    struct Step {
        Kind kind;
        SplitPattern pattern = SplitPattern::kGpt2;
        bool use_regex = false, add_prefix_space = false, split = true;
        PrependScheme prepend = PrependScheme::kAlways;
        std::string replacement{};
    };

    void add(const nlohmann::json& j) {
        const std::string type = j.value("type", std::string());
        const std::string where = "tokenizer.json pre_tokenizer " + type;
        if (type == "Sequence") {
            for (const auto& sub : j.at("pretokenizers")) add(sub);
        } else if (type == "Split") {
            const auto& pat = j.at("pattern");
            if (!pat.contains("Regex"))
                throw UnsupportedError(where + ": only Regex patterns are supported, got " + pat.dump());
            const std::string re = pat.at("Regex").get<std::string>();
            Step s{Kind::kSplit};
            if (re == kLlama3Pattern) s.pattern = SplitPattern::kLlama3;
            else if (re == kQwen2Pattern) s.pattern = SplitPattern::kQwen2;
            else if (re == kGpt2Pattern) s.pattern = SplitPattern::kGpt2;
            else throw UnsupportedError(where + ": regex not implemented: " + re);
            if (j.value("behavior", std::string()) != "Isolated" || j.value("invert", false))
                throw UnsupportedError(where + ": only behavior Isolated without invert is supported");
            steps_.push_back(s);
        } else if (type == "ByteLevel") {
            Step s{Kind::kByteLevel};
            s.use_regex = j.value("use_regex", true);
            s.add_prefix_space = j.value("add_prefix_space", true);
            steps_.push_back(s);
        } else if (type == "Metaspace") {
            Step s{Kind::kMetaspace};
            s.replacement = j.value("replacement", std::string("\u2581"));
            s.prepend = parse_prepend_scheme(j, where);
            s.split = j.value("split", true);
            steps_.push_back(s);
        } else {
            throw UnsupportedError("tokenizer.json: pre_tokenizer type '" + type + "' is not supported");
        }
    }

    void apply(const Step& s, PreTokenized& p) const {
        switch (s.kind) {
            case Kind::kSplit: split_all(p, s.pattern); break;
            case Kind::kByteLevel: byte_level(p, s); break;
            case Kind::kMetaspace: metaspace(p, s); break;
        }
    }

    static void split_all(PreTokenized& p, SplitPattern pattern) {
        std::vector<std::string> next;
        std::vector<std::string_view> views;
        detail::CodePoints scratch;
        for (const std::string& piece : p.pieces) {
            views.clear();
            split_by_pattern(piece, pattern, views, scratch);
            for (auto v : views) next.emplace_back(v);
        }
        p.pieces = std::move(next);
    }

    static void byte_level(PreTokenized& p, const Step& s) {
        if (s.add_prefix_space)
            for (std::string& piece : p.pieces)
                if (piece.empty() || piece.front() != ' ') piece.insert(piece.begin(), ' ');
        if (s.use_regex) split_all(p, SplitPattern::kGpt2);
        const auto& alphabet = ByteLevelAlphabet::get();
        std::string mapped;
        for (std::string& piece : p.pieces) {
            mapped.clear();
            alphabet.append_mapped(mapped, piece);
            piece.swap(mapped);
        }
    }

    static void metaspace(PreTokenized& p, const Step& s) {
        std::vector<std::string> next;
        for (std::size_t k = 0; k < p.pieces.size(); ++k) {
            std::string t;
            for (char c : p.pieces[k]) {
                if (c == ' ') t += s.replacement;
                else t.push_back(c);
            }
            const bool starts = t.compare(0, s.replacement.size(), s.replacement) == 0;
            const bool prepend = s.prepend == PrependScheme::kAlways ||
                                 (s.prepend == PrependScheme::kFirst && k == 0 && p.first_at_start);
            if (prepend && !starts) t.insert(0, s.replacement);
            if (!s.split) {
                next.push_back(std::move(t));
                continue;
            }
            // Split before every replacement character, which stays with the text after it.
            std::size_t begin = 0;
            for (std::size_t pos = t.find(s.replacement, 1); pos != std::string::npos;
                 pos = t.find(s.replacement, pos + s.replacement.size())) {
                if (pos > begin) next.push_back(t.substr(begin, pos - begin));
                begin = pos;
            }
            if (begin < t.size()) next.push_back(t.substr(begin));
        }
        p.pieces = std::move(next);
    }

    std::vector<Step> steps_;
};

}  // namespace fusionlm
