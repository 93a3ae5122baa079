#pragma once
// Added tokens of tokenizer.json (special tokens such as <|eot_id|>), split out of the text before
// pre-tokenization: leftmost-longest matching with the lstrip / rstrip / single_word flags.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "bpe.hpp"
#include "unicode.hpp"

namespace fusionlm {

struct AddedToken {
    TokenId id = -1;
    std::string content;
    bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// A stretch of text: either plain text [begin, end) or one added token.
struct TextSegment {
    std::size_t begin = 0, end = 0;
    TokenId id = -1;  // -1: plain text
};

// Byte trie over token contents for leftmost-longest search.
class TokenTrie {
public:
    void insert(std::string_view s, std::int32_t value) {
        std::int32_t node = 0;
        for (unsigned char c : s) {
            auto& kids = nodes_[std::size_t(node)].children;
            auto it = std::lower_bound(kids.begin(), kids.end(), c, [](const auto& e, unsigned char v) { return e.first < v; });
            if (it == kids.end() || it->first != c) {
                const auto next = std::int32_t(nodes_.size());
                it = kids.insert(it, {c, next});
                nodes_.emplace_back();
            }
            node = it->second;
        }
        nodes_[std::size_t(node)].value = value;
        if (!s.empty()) first_byte_[static_cast<unsigned char>(s[0])] = true;
    }
    bool empty() const { return nodes_.size() == 1; }

    // Longest entry starting at s[i]: its value and length, or value -1.
    std::pair<std::int32_t, std::size_t> longest_at(std::string_view s, std::size_t i) const {
        std::pair<std::int32_t, std::size_t> best{-1, 0};
        if (!first_byte_[static_cast<unsigned char>(s[i])]) return best;
        std::int32_t node = 0;
        for (std::size_t k = i; k < s.size(); ++k) {
            const auto& kids = nodes_[std::size_t(node)].children;
            const auto c = static_cast<unsigned char>(s[k]);
            auto it = std::lower_bound(kids.begin(), kids.end(), c, [](const auto& e, unsigned char v) { return e.first < v; });
            if (it == kids.end() || it->first != c) break;
            node = it->second;
            if (nodes_[std::size_t(node)].value >= 0) best = {nodes_[std::size_t(node)].value, k + 1 - i};
        }
        return best;
    }

private:
    struct Node {
        std::vector<std::pair<unsigned char, std::int32_t>> children;
        std::int32_t value = -1;
    };
    std::vector<Node> nodes_{1};
    std::array<bool, 256> first_byte_{};
};

class AddedVocabulary {
public:
    // From the `added_tokens` array of tokenizer.json.
    static AddedVocabulary from_json(const nlohmann::json& list) {
        AddedVocabulary v;
        if (list.is_null()) return v;
        if (!list.is_array()) throw FormatError("tokenizer.json added_tokens: expected an array");
        for (const auto& j : list) {
            AddedToken t;
            const auto id = j.at("id").get<std::int64_t>();
            if (id < 0 || id >= (std::int64_t(1) << 30))
                throw FormatError("tokenizer.json added_tokens: id " + std::to_string(id) + " out of range");
            t.id = TokenId(id);
            t.content = j.at("content").get<std::string>();
            if (t.content.empty()) throw FormatError("tokenizer.json added_tokens: empty content for id " + std::to_string(id));
            t.special = j.value("special", false);
            t.lstrip = j.value("lstrip", false);
            t.rstrip = j.value("rstrip", false);
            t.single_word = j.value("single_word", false);
            t.normalized = j.value("normalized", !t.special);
            v.add(std::move(t));
        }
        return v;
    }

    // Builds the trie of normalized tokens once the normalizer is known.
    template <class Normalize>
    void set_normalizer(Normalize&& normalize) {
        normalized_trie_ = TokenTrie();
        for (std::size_t k = 0; k < tokens_.size(); ++k)
            if (tokens_[k].normalized) normalized_trie_.insert(normalize(tokens_[k].content), std::int32_t(k));
    }

    const AddedToken* find(TokenId id) const {
        const auto it = by_id_.find(id);
        return it == by_id_.end() ? nullptr : &tokens_[it->second];
    }
    const AddedToken* find(std::string_view content) const {
        const auto it = by_content_.find(content);
        return it == by_content_.end() ? nullptr : &tokens_[std::size_t(it->second)];
    }
    const std::vector<AddedToken>& tokens() const { return tokens_; }
    bool has_normalized() const { return !normalized_trie_.empty(); }

    // Splits text at added tokens: the raw (non-normalized) set, or the normalized set for text
    // already normalized. With `parse_special` false, special tokens stay plain text (the way to
    // encode untrusted input); so do special tokens overlapping a `literal` byte range (untrusted
    // text inside a trusted template). As in Hugging Face, a skipped match is not retried at a
    // later offset.
    std::vector<TextSegment> split(std::string_view s, bool parse_special, bool normalized_set,
                                   std::span<const std::pair<std::size_t, std::size_t>> literal = {}) const {
        const TokenTrie& trie = normalized_set ? normalized_trie_ : raw_trie_;
        std::vector<TextSegment> out;
        std::size_t text_start = 0;
        if (!trie.empty()) {
            for (std::size_t i = 0; i < s.size();) {
                const auto [k, len] = trie.longest_at(s, i);
                if (k < 0) { ++i; continue; }
                const AddedToken& t = tokens_[std::size_t(k)];
                std::size_t start = i, stop = i + len;
                i = stop;
                if (t.special && (!parse_special || overlaps(literal, start, stop))) continue;
                if (t.single_word && !(is_word_boundary_before(s, start) && is_word_boundary_after(s, stop))) continue;
                if (t.lstrip) start = std::max(text_start, spaces_before(s, start));
                if (t.rstrip) stop = spaces_after(s, stop);
                if (text_start < start) out.push_back({text_start, start, -1});
                out.push_back({start, stop, t.id});
                text_start = stop;
                i = stop;
            }
        }
        if (text_start < s.size() || out.empty()) out.push_back({text_start, s.size(), -1});
        return out;
    }

private:
    static bool overlaps(std::span<const std::pair<std::size_t, std::size_t>> ranges, std::size_t begin, std::size_t end) {
        for (const auto& [b, e] : ranges)
            if (begin < e && b < end) return true;
        return false;
    }

    void add(AddedToken t) {
        const auto k = std::int32_t(tokens_.size());
        by_id_[t.id] = std::size_t(k);
        by_content_[t.content] = k;
        if (!t.normalized) raw_trie_.insert(t.content, k);
        tokens_.push_back(std::move(t));
    }

    // \w approximated as letters, numbers and '_' (Hugging Face uses Rust's Unicode \w).
    static bool is_word_char(char32_t c) { return c == '_' || unicode::is_letter(c) || unicode::is_number(c); }
    static char32_t char_before(std::string_view s, std::size_t pos) {
        std::size_t b = pos - 1;
        while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
        return unicode::decode_at(s, b);
    }
    static bool is_word_boundary_before(std::string_view s, std::size_t pos) {
        return pos == 0 || !is_word_char(char_before(s, pos));
    }
    static bool is_word_boundary_after(std::string_view s, std::size_t pos) {
        if (pos == s.size()) return true;
        std::size_t i = pos;
        return !is_word_char(unicode::decode_at(s, i));
    }
    static std::size_t spaces_before(std::string_view s, std::size_t pos) {
        while (pos > 0) {
            std::size_t b = pos - 1;
            while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
            std::size_t i = b;
            if (!unicode::is_white_space(unicode::decode_at(s, i))) break;
            pos = b;
        }
        return pos;
    }
    static std::size_t spaces_after(std::string_view s, std::size_t pos) {
        while (pos < s.size()) {
            std::size_t i = pos;
            if (!unicode::is_white_space(unicode::decode_at(s, i))) break;
            pos = i;
        }
        return pos;
    }

    std::vector<AddedToken> tokens_;
    std::unordered_map<TokenId, std::size_t> by_id_;
    TokenMap by_content_;
    TokenTrie raw_trie_, normalized_trie_;
};

}  // namespace fusionlm
