#pragma once
// A Hugging Face tokenizer.json: added tokens -> normalizer -> pre-tokenizer -> BPE -> post-processor
// for encoding, and the decoder (whole sequences or streamed token by token).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "added_tokens.hpp"
#include "bpe.hpp"
#include "decoder.hpp"
#include "normalizer.hpp"
#include "pre_tokenizer.hpp"
#include "unicode.hpp"

namespace fusionlm {

struct EncodeOptions {
    // Text such as "<|eot_id|>" becomes its special token. Turn off for untrusted text.
    bool parse_special = true;
    // Run the post-processor (Llama 3.2: prepend <|begin_of_text|>).
    bool add_special_tokens = false;
    // Byte ranges of the text in which special-token text stays plain text even when
    // parse_special is on: the user's words inside a rendered chat template.
    std::span<const std::pair<std::size_t, std::size_t>> literal_ranges = {};
};

// The TemplateProcessing post-processor, single-sequence template only (what a prompt needs).
class PostProcessor {
public:
    static PostProcessor from_json(const nlohmann::json& j) {
        PostProcessor p;
        if (!j.is_null()) p.add(j);
        return p;
    }

    void apply(std::vector<TokenId>& ids) const {
        if (!templated_) return;
        std::vector<TokenId> out;
        out.reserve(ids.size() + prefix_.size() + suffix_.size());
        out.insert(out.end(), prefix_.begin(), prefix_.end());
        out.insert(out.end(), ids.begin(), ids.end());
        out.insert(out.end(), suffix_.begin(), suffix_.end());
        ids.swap(out);
    }
    std::size_t added_count() const { return prefix_.size() + suffix_.size(); }

private:
    void add(const nlohmann::json& j) {
        const std::string type = j.value("type", std::string());
        if (type == "Sequence") {
            for (const auto& sub : j.at("processors")) add(sub);
        } else if (type == "ByteLevel") {
            // Only adjusts offsets; ids are unchanged.
        } else if (type == "TemplateProcessing") {
            if (templated_) throw UnsupportedError("tokenizer.json post_processor: two TemplateProcessing steps");
            templated_ = true;
            const auto& specials = j.at("special_tokens");
            bool seen_sequence = false;
            for (const auto& item : j.at("single")) {
                if (item.contains("Sequence")) {
                    if (seen_sequence || item.at("Sequence").at("id").get<std::string>() != "A")
                        throw FormatError("tokenizer.json post_processor: the single template must hold $A once");
                    seen_sequence = true;
                } else if (item.contains("SpecialToken")) {
                    const std::string name = item.at("SpecialToken").at("id").get<std::string>();
                    if (!specials.contains(name))
                        throw FormatError("tokenizer.json post_processor: special token '" + name + "' is not defined");
                    auto& dst = seen_sequence ? suffix_ : prefix_;
                    for (const auto& id : specials.at(name).at("ids")) dst.push_back(id.get<TokenId>());
                } else {
                    throw FormatError("tokenizer.json post_processor: bad template item " + item.dump());
                }
            }
            if (!seen_sequence) throw FormatError("tokenizer.json post_processor: the single template has no $A");
        } else {
            throw UnsupportedError("tokenizer.json: post_processor type '" + type + "' is not supported");
        }
    }

    bool templated_ = false;
    std::vector<TokenId> prefix_, suffix_;
};

class Tokenizer {
public:
    // Parses tokenizer.json text; `name` names the source in errors.
    static Tokenizer from_json_text(std::string_view text, const std::string& name = "tokenizer.json") {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(text);
        } catch (const nlohmann::json::exception& e) {
            throw FormatError(name + ": not valid JSON: " + e.what());
        }
        try {
            return from_json(j);
        } catch (const nlohmann::json::exception& e) {
            throw FormatError(name + ": unexpected structure: " + e.what());
        } catch (const Error& e) {
            if (e.kind() == ErrorKind::Unsupported) throw UnsupportedError(name + ": " + e.what());
            throw FormatError(name + ": " + e.what());
        }
    }

    static Tokenizer from_file(const std::filesystem::path& path) {
        std::ifstream f(path, std::ios::binary);
        if (!f) throw InputError("cannot open tokenizer file '" + path.string() + "'");
        std::ostringstream ss;
        ss << f.rdbuf();
        return from_json_text(ss.str(), path.string());
    }

    // A checkpoint directory holding tokenizer.json.
    static Tokenizer from_dir(const std::filesystem::path& dir) { return from_file(dir / "tokenizer.json"); }

    static Tokenizer from_json(const nlohmann::json& j) {
        Tokenizer t;
        t.model_ = BpeModel::from_json(j.at("model"));
        t.normalizer_ = Normalizer::from_json(j.value("normalizer", nlohmann::json()));
        t.pre_tokenizer_ = PreTokenizer::from_json(j.value("pre_tokenizer", nlohmann::json()));
        t.post_processor_ = PostProcessor::from_json(j.value("post_processor", nlohmann::json()));
        t.decoder_ = TokenDecoder::from_json(j.value("decoder", nlohmann::json()));
        t.added_ = AddedVocabulary::from_json(j.value("added_tokens", nlohmann::json()));
        const Normalizer& n = t.normalizer_;
        t.added_.set_normalizer([&n](const std::string& s) { return n.apply(s); });
        return t;
    }

    // ---- encoding ----

    std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opt = {}) const {
        unicode::require_utf8(text, "text to encode");
        std::vector<TokenId> ids;
        ids.reserve(text.size() / 3 + 4);
        PreTokenized pieces;
        for (const TextSegment& seg : added_.split(text, opt.parse_special, false, opt.literal_ranges)) {
            if (seg.id >= 0) { ids.push_back(seg.id); continue; }
            if (seg.begin == seg.end) continue;
            const std::string_view raw = text.substr(seg.begin, seg.end - seg.begin);
            const bool at_start = seg.begin == 0;
            if (normalizer_.empty() && !added_.has_normalized()) {
                encode_plain(raw, at_start, pieces, ids);
                continue;
            }
            const std::string norm = normalizer_.apply(raw);
            // Normalizing moves offsets, so a segment touching a literal range parses no special
            // tokens at all in this second pass.
            bool literal = false;
            for (const auto& [b, e] : opt.literal_ranges) literal = literal || (seg.begin < e && b < seg.end);
            for (const TextSegment& sub : added_.split(norm, opt.parse_special && !literal, true)) {
                if (sub.id >= 0) { ids.push_back(sub.id); continue; }
                if (sub.begin == sub.end) continue;
                encode_plain(std::string_view(norm).substr(sub.begin, sub.end - sub.begin), at_start && sub.begin == 0,
                             pieces, ids);
            }
        }
        if (opt.add_special_tokens) post_processor_.apply(ids);
        return ids;
    }

    // ---- decoding ----

    // The text of one id (an added token's content or the vocab entry); nullopt if unknown.
    std::optional<std::string_view> id_to_token(TokenId id) const {
        if (const AddedToken* t = added_.find(id)) return t->content;
        if (model_.contains(id)) return model_.id_to_token(id);
        return std::nullopt;
    }
    TokenId token_to_id(std::string_view token) const {
        if (const AddedToken* t = added_.find(token)) return t->id;
        return model_.token_to_id(token);
    }
    bool is_special(TokenId id) const {
        const AddedToken* t = added_.find(id);
        return t && t->special;
    }
    // One past the largest id this tokenizer can produce.
    std::size_t vocab_size() const {
        std::size_t n = model_.id_capacity();
        for (const AddedToken& t : added_.tokens()) n = std::max(n, std::size_t(t.id) + 1);
        return n;
    }

    // Decodes ids to UTF-8 text; invalid byte sequences become U+FFFD. Special tokens are kept as
    // their text unless `skip_special`. Throws InputError for ids outside the vocabulary.
    std::string decode(const std::vector<TokenId>& ids, bool skip_special = false) const {
        TokenDecoder::State st = decoder_.start();
        std::string bytes;
        for (TokenId id : ids) append_token_bytes(id, skip_special, st, bytes);
        std::string out;
        out.reserve(bytes.size());
        unicode::append_lossy(out, bytes);
        return out;
    }

    // Raw bytes one token adds to the output (internal step of decode and DecodeStream).
    void append_token_bytes(TokenId id, bool skip_special, TokenDecoder::State& st, std::string& bytes) const {
        const AddedToken* added = added_.find(id);
        if (added && added->special && skip_special) return;
        if (!added && !model_.contains(id))
            throw InputError("token id " + std::to_string(id) + " is not in the tokenizer's vocabulary");
        decoder_.append(added ? std::string_view(added->content) : model_.id_to_token(id), st, bytes);
    }
    TokenDecoder::State decode_start() const { return decoder_.start(); }

    const BpeModel& model() const { return model_; }
    const AddedVocabulary& added_tokens() const { return added_; }

private:
    void encode_plain(std::string_view text, bool at_start, PreTokenized& pieces, std::vector<TokenId>& ids) const {
        pre_tokenizer_.run(text, at_start, pieces);
        for (const std::string& p : pieces.pieces) model_.encode(p, ids);
    }

    BpeModel model_;
    Normalizer normalizer_;
    PreTokenizer pre_tokenizer_;
    PostProcessor post_processor_;
    TokenDecoder decoder_;
    AddedVocabulary added_;
};

// Streams decoded text while ids arrive one at a time: each step returns the complete UTF-8 text
// that the new id finishes, holding back a partial multi-byte character until its last byte comes.
class DecodeStream {
public:
    explicit DecodeStream(const Tokenizer& tokenizer, bool skip_special = false)
        : tok_(&tokenizer), skip_special_(skip_special), state_(tokenizer.decode_start()) {}

    std::string step(TokenId id) {
        tok_->append_token_bytes(id, skip_special_, state_, pending_);
        std::string out;
        const std::size_t used = unicode::append_lossy(out, pending_, /*hold_tail=*/true);
        pending_.erase(0, used);
        return out;
    }

    // Whatever is still held back (an unfinished character becomes U+FFFD).
    std::string finish() {
        std::string out;
        unicode::append_lossy(out, pending_);
        pending_.clear();
        return out;
    }

    bool has_pending() const { return !pending_.empty(); }

private:
    const Tokenizer* tok_;
    bool skip_special_;
    TokenDecoder::State state_;
    std::string pending_;
};

}  // namespace fusionlm
