#pragma once
// The BPE model of tokenizer.json: vocab, ranked merges, ignore_merges, byte_fallback, unk.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "unicode.hpp"

namespace fusionlm {

using TokenId = std::int32_t;

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, TokenId, StringHash, std::equal_to<>>;

namespace detail {

inline std::uint64_t mix64(std::uint64_t x) {
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

// Hash of a short string, 8 bytes at a time (tokens are mostly under 16 bytes).
inline std::uint64_t hash_bytes(std::string_view s) {
    std::uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
    std::size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
        std::uint64_t w;
        std::memcpy(&w, s.data() + i, 8);
        h = mix64(h ^ w);
    }
    if (i < s.size()) {
        std::uint64_t w = 0;
        std::memcpy(&w, s.data() + i, s.size() - i);
        h = mix64(h ^ w ^ 0xff51afd7ed558ccdull);
    }
    return h;
}

inline std::size_t table_capacity(std::size_t n) {
    std::size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    return cap;
}

}  // namespace detail

// Token strings by id and ids by string: one arena and an open-addressing table, which loads and
// looks up several times faster than a node-based map of 128k std::strings.
class TokenIndex {
public:
    void reserve(std::size_t n, std::size_t bytes) {
        arena_.reserve(bytes);
        slots_.assign(detail::table_capacity(n), -1);
        mask_ = slots_.size() - 1;
    }

    // Adds id -> token; a second token for an id already present replaces the id's text.
    void insert(TokenId id, std::string_view token) {
        if (slots_.empty() || 2 * (count_ + 1) > slots_.size()) grow();
        if (std::size_t(id) >= begin_.size()) {
            begin_.resize(std::size_t(id) + 1, 0);
            length_.resize(std::size_t(id) + 1, kAbsent);
        }
        begin_[std::size_t(id)] = std::uint32_t(arena_.size());
        length_[std::size_t(id)] = std::uint32_t(token.size());
        arena_.append(token);
        std::size_t k = detail::hash_bytes(token) & mask_;
        while (slots_[k] >= 0) {
            if (text(slots_[k]) == token) { slots_[k] = id; return; }
            k = (k + 1) & mask_;
        }
        slots_[k] = id;
        ++count_;
    }

    TokenId find(std::string_view token) const {
        if (slots_.empty()) return -1;
        for (std::size_t k = detail::hash_bytes(token) & mask_;; k = (k + 1) & mask_) {
            const TokenId id = slots_[k];
            if (id < 0) return -1;
            if (text(id) == token) return id;
        }
    }

    bool contains(TokenId id) const { return id >= 0 && std::size_t(id) < length_.size() && length_[std::size_t(id)] != kAbsent; }
    // Only valid when contains(id).
    std::string_view text(TokenId id) const {
        return std::string_view(arena_).substr(begin_[std::size_t(id)], length_[std::size_t(id)]);
    }
    std::size_t id_capacity() const { return begin_.size(); }
    std::size_t size() const { return count_; }

private:
    static constexpr std::uint32_t kAbsent = 0xFFFFFFFFu;

    void grow() {
        std::vector<TokenId> old;
        old.swap(slots_);
        slots_.assign(std::max<std::size_t>(16, old.size() * 2), -1);
        mask_ = slots_.size() - 1;
        for (TokenId id : old) {
            if (id < 0) continue;
            std::size_t k = detail::hash_bytes(text(id)) & mask_;
            while (slots_[k] >= 0) k = (k + 1) & mask_;
            slots_[k] = id;
        }
    }

    std::string arena_;
    std::vector<std::uint32_t> begin_, length_;
    std::vector<TokenId> slots_;
    std::size_t mask_ = 0, count_ = 0;
};

// (left id, right id) -> (rank, merged id), open addressing.
class MergeTable {
public:
    struct Merge {
        std::uint32_t rank;
        TokenId merged;
    };

    void reserve(std::size_t n) {
        keys_.assign(detail::table_capacity(n), kEmpty);
        values_.assign(keys_.size(), Merge{0, -1});
        mask_ = keys_.size() - 1;
    }

    // A pair listed twice keeps its later entry, as in Hugging Face (a map built in list order).
    void insert(TokenId a, TokenId b, Merge m) {
        if (keys_.empty() || 2 * (count_ + 1) > keys_.size()) grow();
        const std::uint64_t key = pack(a, b);
        std::size_t k = detail::mix64(key) & mask_;
        while (keys_[k] != kEmpty && keys_[k] != key) k = (k + 1) & mask_;
        if (keys_[k] == kEmpty) ++count_;
        keys_[k] = key;
        values_[k] = m;
    }

    const Merge* find(TokenId a, TokenId b) const {
        if (keys_.empty()) return nullptr;
        const std::uint64_t key = pack(a, b);
        for (std::size_t k = detail::mix64(key) & mask_;; k = (k + 1) & mask_) {
            if (keys_[k] == key) return &values_[k];
            if (keys_[k] == kEmpty) return nullptr;
        }
    }
    std::size_t size() const { return count_; }

private:
    static constexpr std::uint64_t kEmpty = ~std::uint64_t(0);
    static std::uint64_t pack(TokenId a, TokenId b) { return (std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b); }

    void grow() {
        std::vector<std::uint64_t> old_keys;
        std::vector<Merge> old_values;
        old_keys.swap(keys_);
        old_values.swap(values_);
        keys_.assign(std::max<std::size_t>(16, old_keys.size() * 2), kEmpty);
        values_.assign(keys_.size(), Merge{0, -1});
        mask_ = keys_.size() - 1;
        for (std::size_t i = 0; i < old_keys.size(); ++i) {
            if (old_keys[i] == kEmpty) continue;
            std::size_t k = detail::mix64(old_keys[i]) & mask_;
            while (keys_[k] != kEmpty) k = (k + 1) & mask_;
            keys_[k] = old_keys[i];
            values_[k] = old_values[i];
        }
    }

    std::vector<std::uint64_t> keys_;
    std::vector<Merge> values_;
    std::size_t mask_ = 0, count_ = 0;
};

class BpeModel {
public:
    // From the `model` member of tokenizer.json.
    static BpeModel from_json(const nlohmann::json& m) {
        const std::string where = "tokenizer.json model";
        if (m.value("type", std::string("BPE")) != "BPE")
            throw UnsupportedError(where + ": model type '" + m.value("type", std::string()) + "' is not supported (only BPE)");
        for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
            if (m.contains(key) && !m.at(key).is_null() && !m.at(key).get<std::string>().empty())
                throw UnsupportedError(where + ": BPE option '" + key + "' is not supported");
        if (m.contains("dropout") && !m.at("dropout").is_null() && m.at("dropout").get<double>() > 0.0)
            throw UnsupportedError(where + ": BPE dropout is not supported (inference is deterministic)");

        BpeModel b;
        const auto& vocab = m.at("vocab");
        if (!vocab.is_object()) throw FormatError(where + ".vocab: expected an object");
        std::size_t bytes = 0;
        for (auto it = vocab.begin(); it != vocab.end(); ++it) bytes += it.key().size();
        b.vocab_.reserve(vocab.size(), bytes);
        for (auto it = vocab.begin(); it != vocab.end(); ++it) {
            if (!it.value().is_number_integer()) throw FormatError(where + ".vocab: id of '" + it.key() + "' is not an integer");
            const auto id = it.value().get<std::int64_t>();
            if (id < 0 || id >= (std::int64_t(1) << 30))
                throw FormatError(where + ".vocab: id " + std::to_string(id) + " of '" + it.key() + "' out of range");
            b.vocab_.insert(TokenId(id), it.key());
        }

        const auto& merges = m.at("merges");
        if (!merges.is_array()) throw FormatError(where + ".merges: expected an array");
        b.merges_.reserve(merges.size());
        std::uint32_t rank = 0;
        std::string joined;
        for (const auto& entry : merges) {
            std::string_view left, right;
            if (entry.is_string()) {
                const std::string& s = entry.get_ref<const std::string&>();
                if (s.rfind("#version", 0) == 0) continue;
                const auto sp = s.find(' ');
                if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                    throw FormatError(where + ".merges[" + std::to_string(rank) + "]: expected 'left right', got '" + s + "'");
                left = std::string_view(s).substr(0, sp);
                right = std::string_view(s).substr(sp + 1);
            } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
                left = entry[0].get_ref<const std::string&>();
                right = entry[1].get_ref<const std::string&>();
            } else {
                throw FormatError(where + ".merges[" + std::to_string(rank) + "]: expected a string or a pair of strings");
            }
            joined.assign(left).append(right);
            const TokenId a = b.token_to_id(left), c = b.token_to_id(right), merged = b.token_to_id(joined);
            if (a < 0 || c < 0 || merged < 0)
                throw FormatError(where + ".merges[" + std::to_string(rank) + "]: '" + std::string(left) + "' + '" +
                                  std::string(right) + "' uses a token missing from the vocab");
            b.merges_.insert(a, c, {rank, merged});
            ++rank;
        }

        b.ignore_merges_ = m.value("ignore_merges", false);
        b.byte_fallback_ = m.value("byte_fallback", false);
        b.fuse_unk_ = m.value("fuse_unk", false);
        if (m.contains("unk_token") && !m.at("unk_token").is_null()) {
            const std::string unk = m.at("unk_token").get<std::string>();
            b.unk_id_ = b.token_to_id(unk);
            if (b.unk_id_ < 0) throw FormatError(where + ": unk_token '" + unk + "' is not in the vocab");
        }
        if (b.byte_fallback_) {
            for (int v = 0; v < 256; ++v) {
                char name[8];
                std::snprintf(name, sizeof name, "<0x%02X>", v);
                b.byte_ids_[std::size_t(v)] = b.token_to_id(name);
            }
        }
        return b;
    }

    TokenId token_to_id(std::string_view token) const { return vocab_.find(token); }
    bool contains(TokenId id) const { return vocab_.contains(id); }
    // The token text of an id; only valid when contains(id).
    std::string_view id_to_token(TokenId id) const { return vocab_.text(id); }
    std::size_t id_capacity() const { return vocab_.id_capacity(); }
    std::size_t merge_count() const { return merges_.size(); }
    bool byte_fallback() const { return byte_fallback_; }

    // Appends the ids of one pre-token (already in the vocab's alphabet) to `out`.
    void encode(std::string_view word, std::vector<TokenId>& out) const {
        if (word.empty()) return;
        if (ignore_merges_) {
            const TokenId id = token_to_id(word);
            if (id >= 0) { out.push_back(id); return; }
        }
        const bool cacheable = word.size() < kMaxCachedLength;
        if (cacheable) {
            std::lock_guard<std::mutex> lock(cache_->mutex);
            const auto it = cache_->map.find(word);
            if (it != cache_->map.end()) {
                out.insert(out.end(), it->second.begin(), it->second.end());
                return;
            }
        }
        const std::size_t before = out.size();
        merge_word(word, out);
        if (cacheable) {
            std::lock_guard<std::mutex> lock(cache_->mutex);
            if (cache_->map.size() < kCacheCapacity)
                cache_->map.emplace(std::string(word), std::vector<TokenId>(out.begin() + std::ptrdiff_t(before), out.end()));
        }
    }

private:
    static constexpr std::size_t kMaxCachedLength = 256;
    static constexpr std::size_t kCacheCapacity = 10000;

    struct Symbol {
        TokenId id;
        std::int32_t prev, next;
        bool alive;
    };
    struct Candidate {
        std::uint32_t rank;
        std::int32_t pos;
        TokenId merged;
        // Lowest rank first, then leftmost.
        bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };

    // Initial symbols: one per character; unknown characters become their <0xXX> byte tokens
    // (byte_fallback) or unk (fused when fuse_unk), as Hugging Face's BPE does.
    void merge_word(std::string_view word, std::vector<TokenId>& out) const {
        std::vector<Symbol> sym;
        sym.reserve(word.size());
        auto push = [&](TokenId id) {
            sym.push_back({id, std::int32_t(sym.size()) - 1, std::int32_t(sym.size()) + 1, true});
        };
        bool last_was_unk = false;
        for (std::size_t i = 0; i < word.size();) {
            bool complete = false;
            const std::size_t n = std::max<std::size_t>(unicode::utf8_scan(word, i, complete), 1);
            const std::string_view ch = word.substr(i, n);
            i += n;
            const TokenId id = token_to_id(ch);
            if (id >= 0) { push(id); last_was_unk = false; continue; }
            if (byte_fallback_) {
                bool all = true;
                for (unsigned char b : ch) all = all && byte_ids_[b] >= 0;
                if (all) {
                    for (unsigned char b : ch) push(byte_ids_[b]);
                    last_was_unk = false;
                    continue;
                }
            }
            if (unk_id_ >= 0) {
                if (!(fuse_unk_ && last_was_unk)) push(unk_id_);
                last_was_unk = true;
            }
        }
        if (sym.empty()) return;
        sym.back().next = -1;

        std::priority_queue<Candidate> queue;
        auto consider = [&](std::int32_t pos) {
            const std::int32_t nx = sym[std::size_t(pos)].next;
            if (nx < 0) return;
            if (const auto* m = merges_.find(sym[std::size_t(pos)].id, sym[std::size_t(nx)].id))
                queue.push({m->rank, pos, m->merged});
        };
        for (std::int32_t k = 0; k + 1 < std::int32_t(sym.size()); ++k) consider(k);

        while (!queue.empty()) {
            const Candidate top = queue.top();
            queue.pop();
            Symbol& left = sym[std::size_t(top.pos)];
            if (!left.alive || left.next < 0) continue;
            Symbol& right = sym[std::size_t(left.next)];
            // Stale entry: one side changed since it was queued.
            const auto* m = merges_.find(left.id, right.id);
            if (!m || m->merged != top.merged) continue;
            left.id = top.merged;
            right.alive = false;
            left.next = right.next;
            if (right.next >= 0) sym[std::size_t(right.next)].prev = top.pos;
            if (left.prev >= 0) consider(left.prev);
            consider(top.pos);
        }
        for (const Symbol& s : sym)
            if (s.alive) out.push_back(s.id);
    }

    struct Cache {
        std::mutex mutex;
        std::unordered_map<std::string, std::vector<TokenId>, StringHash, std::equal_to<>> map;
    };

    TokenIndex vocab_;
    MergeTable merges_;
    bool ignore_merges_ = false, byte_fallback_ = false, fuse_unk_ = false;
    TokenId unk_id_ = -1;
    std::array<TokenId, 256> byte_ids_{};
    // Shared so the model stays copyable and movable; guarded because encode() is const and may
    // be called from several threads.
    std::shared_ptr<Cache> cache_ = std::make_shared<Cache>();
};

}  // namespace fusionlm
