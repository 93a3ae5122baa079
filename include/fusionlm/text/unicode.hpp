#pragma once
// UTF-8 coding and the Unicode properties the tokenizer regexes need (\p{L}, \p{N}, \s = White_Space).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../core/error.hpp"
#include "unicode_tables.hpp"

namespace fusionlm::unicode {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Length of the UTF-8 sequence a lead byte starts; 0 for bytes that cannot start one.
inline int utf8_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if (lead < 0xC2) return 0;
    if (lead < 0xE0) return 2;
    if (lead < 0xF0) return 3;
    if (lead < 0xF5) return 4;
    return 0;
}

// Whether `b` may follow `lead` as the second byte (excludes overlongs, surrogates, > U+10FFFF).
inline bool utf8_second_ok(unsigned char lead, unsigned char b) {
    switch (lead) {
        case 0xE0: return b >= 0xA0 && b <= 0xBF;
        case 0xED: return b >= 0x80 && b <= 0x9F;
        case 0xF0: return b >= 0x90 && b <= 0xBF;
        case 0xF4: return b >= 0x80 && b <= 0x8F;
        default: return b >= 0x80 && b <= 0xBF;
    }
}

// Length of the longest prefix of s[i..] that is a valid start of one UTF-8 sequence: returns the
// full length when the sequence is complete, the valid prefix length (>= 1) when it breaks or the
// input ends early, 0 when s[i] cannot start a sequence. `complete` tells which.
inline std::size_t utf8_scan(std::string_view s, std::size_t i, bool& complete) {
    const auto lead = static_cast<unsigned char>(s[i]);
    const int n = utf8_length(lead);
    complete = false;
    if (n == 0) return 0;
    if (n == 1) { complete = true; return 1; }
    std::size_t k = 1;
    for (; k < std::size_t(n); ++k) {
        if (i + k >= s.size()) return k;
        const auto b = static_cast<unsigned char>(s[i + k]);
        const bool ok = k == 1 ? utf8_second_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
        if (!ok) return k;
    }
    complete = true;
    return k;
}

// Decodes the code point at s[i] (which must start a complete, valid sequence) and advances i.
inline char32_t decode_at(std::string_view s, std::size_t& i) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) { ++i; return b0; }
    if (b0 < 0xE0) {
        const char32_t c = (char32_t(b0 & 0x1F) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3F);
        i += 2;
        return c;
    }
    if (b0 < 0xF0) {
        const char32_t c = (char32_t(b0 & 0x0F) << 12) | (char32_t(static_cast<unsigned char>(s[i + 1]) & 0x3F) << 6) |
                           (static_cast<unsigned char>(s[i + 2]) & 0x3F);
        i += 3;
        return c;
    }
    const char32_t c = (char32_t(b0 & 0x07) << 18) | (char32_t(static_cast<unsigned char>(s[i + 1]) & 0x3F) << 12) |
                       (char32_t(static_cast<unsigned char>(s[i + 2]) & 0x3F) << 6) |
                       (static_cast<unsigned char>(s[i + 3]) & 0x3F);
    i += 4;
    return c;
}

inline void append_utf8(std::string& out, char32_t c) {
    if (c < 0x80) {
        out.push_back(char(c));
    } else if (c < 0x800) {
        out.push_back(char(0xC0 | (c >> 6)));
        out.push_back(char(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
        out.push_back(char(0xE0 | (c >> 12)));
        out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
        out.push_back(char(0x80 | (c & 0x3F)));
    } else {
        out.push_back(char(0xF0 | (c >> 18)));
        out.push_back(char(0x80 | ((c >> 12) & 0x3F)));
        out.push_back(char(0x80 | ((c >> 6) & 0x3F)));
        out.push_back(char(0x80 | (c & 0x3F)));
    }
}

// Byte offset of the first invalid UTF-8 sequence, or npos when the whole string is valid.
inline std::size_t find_invalid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        if (static_cast<unsigned char>(s[i]) < 0x80) { ++i; continue; }
        bool complete = false;
        const std::size_t n = utf8_scan(s, i, complete);
        if (!complete) return i;
        i += n;
    }
    return std::string_view::npos;
}

// Throws InputError naming `what` when s is not valid UTF-8.
inline void require_utf8(std::string_view s, const std::string& what) {
    const std::size_t bad = find_invalid_utf8(s);
    if (bad != std::string_view::npos)
        throw InputError(what + ": invalid UTF-8 at byte " + std::to_string(bad));
}

// Appends bytes as UTF-8, replacing each maximal invalid subpart by U+FFFD (the rule of
// Rust's String::from_utf8_lossy, which Hugging Face decoders use). When `hold_tail` is set, an
// incomplete but so-far-valid sequence at the very end is not consumed; returns the bytes consumed.
inline std::size_t append_lossy(std::string& out, std::string_view bytes, bool hold_tail = false) {
    std::size_t i = 0;
    while (i < bytes.size()) {
        if (static_cast<unsigned char>(bytes[i]) < 0x80) { out.push_back(bytes[i++]); continue; }
        bool complete = false;
        const std::size_t n = utf8_scan(bytes, i, complete);
        if (complete) {
            out.append(bytes.substr(i, n));
            i += n;
        } else if (hold_tail && n > 0 && i + n == bytes.size()) {
            break;
        } else {
            append_utf8(out, kReplacementChar);
            i += std::max<std::size_t>(n, 1);
        }
    }
    return i;
}

// ---- properties -------------------------------------------------------------------------------

enum CharClass : std::uint8_t { kLetter = 1, kNumber = 2, kWhiteSpace = 4 };

namespace detail {
inline std::uint8_t lookup_class(char32_t c) {
    const auto& t = unicode_tables::kClassRanges;
    const auto* it = std::upper_bound(std::begin(t), std::end(t), std::uint32_t(c),
                                      [](std::uint32_t v, const unicode_tables::ClassRange& r) { return v < r.first; });
    if (it == std::begin(t)) return 0;
    --it;
    return c <= it->last ? it->cls : 0;
}

inline const std::array<std::uint8_t, 128>& ascii_classes() {
    static const std::array<std::uint8_t, 128> table = [] {
        std::array<std::uint8_t, 128> a{};
        for (char32_t c = 0; c < 128; ++c) a[c] = lookup_class(c);
        return a;
    }();
    return table;
}
}  // namespace detail

// Bit set of CharClass values for one code point.
inline std::uint8_t char_class(char32_t c) {
    if (c < 128) return detail::ascii_classes()[c];
    return detail::lookup_class(c);
}
inline bool is_letter(char32_t c) { return char_class(c) & kLetter; }
inline bool is_number(char32_t c) { return char_class(c) & kNumber; }
inline bool is_white_space(char32_t c) { return char_class(c) & kWhiteSpace; }

// Simple case folding restricted to targets in ASCII: 'S' -> 's', U+017F -> 's'; anything else
// maps to 0 unless it is an ASCII lowercase letter already.
inline char fold_to_ascii(char32_t c) {
    if (c >= 'A' && c <= 'Z') return char(c - 'A' + 'a');
    if (c >= 'a' && c <= 'z') return char(c);
    if (c < 0x80) return 0;
    for (const auto& f : unicode_tables::kAsciiFolds)
        if (f.cp == c) return f.folded;
    return 0;
}

inline std::uint8_t combining_class(char32_t c) {
    if (c < 0x300) return 0;
    const auto& t = unicode_tables::kCccRanges;
    const auto* it = std::upper_bound(std::begin(t), std::end(t), std::uint32_t(c),
                                      [](std::uint32_t v, const unicode_tables::CccRange& r) { return v < r.first; });
    if (it == std::begin(t)) return 0;
    --it;
    return c <= it->last ? it->ccc : 0;
}

}  // namespace fusionlm::unicode
