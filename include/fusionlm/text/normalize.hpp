#pragma once
// Unicode canonical normalization (NFD, NFC) per UAX #15, from the generated UCD tables.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "unicode.hpp"
#include "unicode_tables.hpp"

namespace fusionlm::unicode {

namespace detail {
// Hangul syllables compose and decompose algorithmically (Unicode ch. 3.12).
inline constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
inline constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                          kSCount = kLCount * kNCount;

inline void decompose_into(char32_t c, std::vector<char32_t>& out) {
    if (c >= kSBase && c < kSBase + kSCount) {
        const char32_t s = c - kSBase;
        out.push_back(kLBase + s / kNCount);
        out.push_back(kVBase + (s % kNCount) / kTCount);
        if (s % kTCount) out.push_back(kTBase + s % kTCount);
        return;
    }
    if (c >= 0xC0) {
        const auto& t = unicode_tables::kDecompositions;
        const auto* it = std::lower_bound(std::begin(t), std::end(t), std::uint32_t(c),
                                          [](const unicode_tables::Decomposition& d, std::uint32_t v) { return d.cp < v; });
        if (it != std::end(t) && it->cp == c) {
            out.insert(out.end(), unicode_tables::kDecompositionData + it->offset,
                       unicode_tables::kDecompositionData + it->offset + it->length);
            return;
        }
    }
    out.push_back(c);
}

inline char32_t compose_pair(char32_t a, char32_t b) {
    if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
        return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
        return a + (b - kTBase);
    const auto& t = unicode_tables::kCompositions;
    const auto* it = std::lower_bound(std::begin(t), std::end(t), std::pair<std::uint32_t, std::uint32_t>(a, b),
                                      [](const unicode_tables::Composition& c, const std::pair<std::uint32_t, std::uint32_t>& v) {
                                          return c.first != v.first ? c.first < v.first : c.second < v.second;
                                      });
    if (it != std::end(t) && it->first == a && it->second == b) return it->composite;
    return 0;
}

// Canonical decomposition followed by the canonical ordering of combining marks.
inline std::vector<char32_t> nfd_code_points(std::string_view s) {
    std::vector<char32_t> cps;
    cps.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) decompose_into(decode_at(s, i), cps);
    // Stable sort of each run of non-starters by combining class.
    for (std::size_t i = 0; i < cps.size();) {
        if (combining_class(cps[i]) == 0) { ++i; continue; }
        std::size_t j = i;
        while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
        std::stable_sort(cps.begin() + std::ptrdiff_t(i), cps.begin() + std::ptrdiff_t(j),
                         [](char32_t x, char32_t y) { return combining_class(x) < combining_class(y); });
        i = j;
    }
    return cps;
}
}  // namespace detail

// Fast check: text made only of code points below U+0300 that never decompose is already NFC/NFD.
inline bool trivially_normalized(std::string_view s) {
    for (unsigned char b : s)
        if (b >= 0xC3) return false;  // U+00C0 and above may decompose
    return true;
}

// NFD of valid UTF-8.
inline std::string nfd(std::string_view s) {
    if (trivially_normalized(s)) return std::string(s);
    std::string out;
    out.reserve(s.size());
    for (char32_t c : detail::nfd_code_points(s)) append_utf8(out, c);
    return out;
}

// NFC of valid UTF-8: NFD, then canonical composition (a mark composes with the last starter
// unless a mark of the same or higher class, or a starter, stands between them).
inline std::string nfc(std::string_view s) {
    if (trivially_normalized(s)) return std::string(s);
    std::vector<char32_t> cps = detail::nfd_code_points(s);
    std::size_t starter = std::string::npos;
    int last_ccc = -1;
    std::size_t w = 0;
    for (std::size_t r = 0; r < cps.size(); ++r) {
        const char32_t c = cps[r];
        const int ccc = combining_class(c);
        if (starter != std::string::npos && (last_ccc < ccc || last_ccc == 0)) {
            if (const char32_t comp = detail::compose_pair(cps[starter], c)) {
                cps[starter] = comp;
                continue;
            }
        }
        if (ccc == 0) {
            starter = w;
            last_ccc = 0;
        } else {
            last_ccc = ccc;
        }
        cps[w++] = c;
    }
    cps.resize(w);
    std::string out;
    out.reserve(s.size());
    for (char32_t c : cps) append_utf8(out, c);
    return out;
}

}  // namespace fusionlm::unicode
