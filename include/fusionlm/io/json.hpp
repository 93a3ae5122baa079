#pragma once
// JSON parsing with limits, and typed field access whose errors name the file and the field path
// (e.g. "config.json: text_config.hidden_size: expected a positive integer, got -3").
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"

namespace fusionlm {

using Json = nlohmann::json;

// Nesting deeper than this, or more values than this, is never legitimate in a config or a
// safetensors header (a shard of a large MoE has ~10^4 values); the limits keep a hostile file from
// exhausting memory or stack.
inline constexpr int kMaxJsonDepth = 64;
inline constexpr std::size_t kMaxJsonValues = std::size_t(1) << 22;

// A short rendering of a JSON value for error messages.
inline std::string json_excerpt(const Json& j) {
    std::string s = j.dump();
    if (s.size() > 40) s = s.substr(0, 37) + "...";
    return s;
}

inline std::string json_type_name(const Json& j) {
    if (j.is_number_integer()) return "integer";
    if (j.is_number_float()) return "number";
    return j.type_name();
}

// Parses `text` as JSON; any syntax error or excessive nesting is a FormatError naming `where`.
inline Json parse_json(std::string_view text, const std::string& where) {
    std::size_t values = 0;
    const auto limit = [&](int depth, Json::parse_event_t, Json&) {
        if (depth > kMaxJsonDepth)
            throw FormatError(where + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        if (++values > 2 * kMaxJsonValues)  // about two parser events per value
            throw FormatError(where + ": JSON has more than " + std::to_string(kMaxJsonValues) + " values");
        return true;
    };
    Json j = Json::parse(text.begin(), text.end(), limit, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw FormatError(where + ": not valid JSON");
    return j;
}

// Reads and parses a JSON file of at most `max_bytes`.
inline Json read_json_file(const std::filesystem::path& path, std::uintmax_t max_bytes = 64u << 20) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) throw FormatError(path.string() + ": cannot open (" + ec.message() + ")");
    if (size > max_bytes)
        throw FormatError(path.string() + ": " + std::to_string(size) + " bytes, more than the " +
                          std::to_string(max_bytes) + " allowed for a JSON file");
    std::ifstream in(path, std::ios::binary);
    std::string text(size, '\0');
    if (!in || !in.read(text.data(), std::streamsize(size)))
        throw FormatError(path.string() + ": cannot read");
    return parse_json(text, path.string());
}

// Typed read access to one JSON object of a config file. Absent keys take the caller's default (the
// Hugging Face default); null is accepted only by the nullable accessors; any other mismatch is a
// ConfigError naming the file and the dotted field path.
class JsonFields {
public:
    JsonFields(const Json& object, std::string file, std::string path = {})
        : j_(object), file_(std::move(file)), path_(std::move(path)) {
        if (!j_.is_object())
            throw ConfigError(file_ + ": " + (path_.empty() ? std::string("top level") : path_) +
                              ": expected an object, got " + json_type_name(j_));
    }

    const std::string& file() const { return file_; }
    const Json& json() const { return j_; }
    std::string field(std::string_view key) const {
        return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
    }
    [[noreturn]] void fail(std::string_view key, const std::string& msg) const {
        throw ConfigError(file_ + ": " + field(key) + ": " + msg);
    }

    // Present and not null.
    bool has(std::string_view key) const {
        auto it = j_.find(key);
        return it != j_.end() && !it->is_null();
    }
    bool contains(std::string_view key) const { return j_.contains(key); }

    // A nested object; nullopt when absent or null.
    std::optional<JsonFields> object(std::string_view key) const {
        if (!has(key)) return std::nullopt;
        return JsonFields(j_.at(key), file_, field(key));
    }

    std::int64_t integer(std::string_view key, std::int64_t def) const {
        return optional_integer(key, /*nullable=*/false).value_or(def);
    }
    // Absent (or null when nullable) -> nullopt.
    std::optional<std::int64_t> optional_integer(std::string_view key, bool nullable = true) const {
        const Json* v = get(key, nullable);
        if (!v) return std::nullopt;
        return to_integer(*v, key);
    }
    std::int64_t positive(std::string_view key, std::int64_t def) const {
        const std::int64_t v = integer(key, def);
        if (v <= 0) fail(key, "expected a positive integer, got " + std::to_string(v));
        return v;
    }
    std::int64_t non_negative(std::string_view key, std::int64_t def) const {
        const std::int64_t v = integer(key, def);
        if (v < 0) fail(key, "expected a non-negative integer, got " + std::to_string(v));
        return v;
    }

    double number(std::string_view key, double def) const {
        const Json* v = get(key, false);
        if (!v) return def;
        if (!v->is_number()) fail(key, "expected a number, got " + json_type_name(*v) + " " + json_excerpt(*v));
        const double d = v->get<double>();
        if (!std::isfinite(d)) fail(key, "expected a finite number");
        return d;
    }
    double positive_number(std::string_view key, double def) const {
        const double d = number(key, def);
        if (!(d > 0)) fail(key, "expected a positive number, got " + json_excerpt(Json(d)));
        return d;
    }
    std::optional<double> optional_number(std::string_view key) const {
        if (!has(key)) return std::nullopt;
        return number(key, 0.0);
    }

    bool boolean(std::string_view key, bool def) const {
        const Json* v = get(key, false);
        if (!v) return def;
        if (!v->is_boolean()) fail(key, "expected true or false, got " + json_type_name(*v) + " " + json_excerpt(*v));
        return v->get<bool>();
    }

    std::string string(std::string_view key, const std::string& def) const {
        const Json* v = get(key, false);
        if (!v) return def;
        if (!v->is_string()) fail(key, "expected a string, got " + json_type_name(*v) + " " + json_excerpt(*v));
        return v->get<std::string>();
    }
    std::optional<std::string> optional_string(std::string_view key) const {
        if (!has(key)) return std::nullopt;
        return string(key, {});
    }

    // A list of integers; absent or null -> def.
    std::vector<std::int64_t> integer_list(std::string_view key, const std::vector<std::int64_t>& def) const {
        const Json* v = get(key, true);
        if (!v) return def;
        return to_integer_list(*v, key);
    }
    // A token id or a list of them (eos_token_id may be either); absent or null -> empty.
    std::vector<std::int64_t> token_ids(std::string_view key, const std::vector<std::int64_t>& def) const {
        if (!contains(key)) return def;
        const Json& v = j_.at(key);
        if (v.is_null()) return {};
        if (v.is_array()) return to_integer_list(v, key);
        return {to_integer(v, key)};
    }
    // A list of integer pairs or tuples, e.g. supported_aspect_ratios [[1, 1], [1, 2]].
    std::vector<std::vector<std::int64_t>> integer_lists(std::string_view key,
                                                         const std::vector<std::vector<std::int64_t>>& def) const {
        const Json* v = get(key, true);
        if (!v) return def;
        if (!v->is_array()) fail(key, "expected a list of lists, got " + json_type_name(*v));
        std::vector<std::vector<std::int64_t>> out;
        for (std::size_t i = 0; i < v->size(); ++i)
            out.push_back(to_integer_list((*v)[i], std::string(key) + "[" + std::to_string(i) + "]"));
        return out;
    }

private:
    const Json* get(std::string_view key, bool nullable) const {
        auto it = j_.find(key);
        if (it == j_.end()) return nullptr;
        if (it->is_null()) {
            if (nullable) return nullptr;
            fail(key, "expected a value, got null");
        }
        return &*it;
    }
    std::int64_t to_integer(const Json& v, std::string_view key) const {
        if (v.is_number_unsigned()) {
            const auto u = v.get<std::uint64_t>();
            if (u > std::uint64_t(std::numeric_limits<std::int64_t>::max())) fail(key, "integer " + v.dump() + " is too large");
            return std::int64_t(u);
        }
        if (v.is_number_integer()) return v.get<std::int64_t>();
        fail(key, "expected an integer, got " + json_type_name(v) + " " + json_excerpt(v));
    }
    std::vector<std::int64_t> to_integer_list(const Json& v, std::string_view key) const {
        if (!v.is_array()) fail(key, "expected a list of integers, got " + json_type_name(v) + " " + json_excerpt(v));
        std::vector<std::int64_t> out;
        out.reserve(v.size());
        for (std::size_t i = 0; i < v.size(); ++i)
            out.push_back(to_integer(v[i], std::string(key) + "[" + std::to_string(i) + "]"));
        return out;
    }

    const Json& j_;
    std::string file_;
    std::string path_;
};

}  // namespace fusionlm
