#pragma once
// A checkpoint directory: model.safetensors, or shards listed by model.safetensors.index.json.
// A Checkpoint is a cheap shared handle: copies share the mapped shards, and every TensorView it hands
// out stays valid while any copy lives (a model keeps one).
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "json.hpp"
#include "safetensors.hpp"

namespace fusionlm {

inline constexpr std::string_view kSafetensorsIndexName = "model.safetensors.index.json";
inline constexpr std::string_view kSafetensorsSingleName = "model.safetensors";

class Checkpoint {
public:
    Checkpoint() = default;

    static Checkpoint open(const std::filesystem::path& dir) {
        std::error_code ec;
        if (!std::filesystem::is_directory(dir, ec))
            throw FormatError(dir.string() + ": not a checkpoint directory");
        auto state = std::make_shared<State>();
        state->dir = dir;
        const auto index_path = dir / kSafetensorsIndexName;
        const auto single_path = dir / kSafetensorsSingleName;
        if (std::filesystem::exists(index_path, ec)) {
            open_sharded(*state, index_path);
        } else if (std::filesystem::exists(single_path, ec)) {
            state->shards.push_back(std::make_shared<SafetensorsFile>(SafetensorsFile::open(single_path)));
            collect(*state);
        } else {
            throw FormatError(dir.string() + ": neither " + std::string(kSafetensorsIndexName) + " nor " +
                              std::string(kSafetensorsSingleName) + " found");
        }
        Checkpoint c;
        c.state_ = std::move(state);
        return c;
    }

    const std::filesystem::path& dir() const { return state().dir; }
    // Every tensor of every shard, sorted by name.
    const std::vector<const TensorView*>& tensors() const { return state().sorted; }
    std::size_t size() const { return state().sorted.size(); }
    const std::vector<std::shared_ptr<const SafetensorsFile>>& shards() const { return state().shards; }
    // Maps every shard's pages now, so a model's first forward pass does not stall on page faults.
    void populate() const {
        for (const auto& shard : state().shards) shard->populate();
    }

    const TensorView* find(std::string_view name) const {
        const auto& v = state().sorted;
        auto it = std::lower_bound(v.begin(), v.end(), name,
                                   [](const TensorView* t, std::string_view n) { return t->name < n; });
        return it != v.end() && (*it)->name == name ? *it : nullptr;
    }
    const TensorView& get(std::string_view name) const {
        if (const TensorView* t = find(name)) return *t;
        throw ShapeError(dir().string() + ": checkpoint has no tensor '" + std::string(name) + "'");
    }
    // The shard file that holds `name` (empty when absent).
    std::filesystem::path file_of(std::string_view name) const {
        for (const auto& s : state().shards)
            if (s->find(name)) return s->path();
        return {};
    }

    std::int64_t parameter_count() const {
        std::int64_t n = 0;
        for (const TensorView* t : tensors()) n += t->numel();
        return n;
    }
    std::uint64_t byte_count() const {
        std::uint64_t n = 0;
        for (const TensorView* t : tensors()) n += t->nbytes();
        return n;
    }

private:
    struct State {
        std::filesystem::path dir;
        std::vector<std::shared_ptr<const SafetensorsFile>> shards;
        std::vector<const TensorView*> sorted;
    };

    const State& state() const {
        static const State empty;
        return state_ ? *state_ : empty;
    }

    static bool plain_file_name(const std::string& name) {
        return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
               name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
    }

    static void open_sharded(State& s, const std::filesystem::path& index_path) {
        const std::string where = index_path.string();
        const Json index = read_json_file(index_path);
        if (!index.is_object()) throw FormatError(where + ": not a JSON object");
        const auto wm = index.find("weight_map");
        if (wm == index.end() || !wm->is_object()) throw FormatError(where + ": 'weight_map' missing or not an object");

        std::map<std::string, std::size_t> shard_index;  // file name -> position in s.shards
        for (const auto& [tensor, file] : wm->items()) {
            if (!file.is_string())
                throw FormatError(where + ": weight_map['" + tensor + "'] is " + json_type_name(file) + ", not a file name");
            const std::string name = file.get<std::string>();
            if (!plain_file_name(name))
                throw FormatError(where + ": weight_map['" + tensor + "'] = '" + name +
                                  "' is not a plain file name inside the checkpoint directory");
            if (!shard_index.count(name)) {
                const auto path = s.dir / name;
                std::error_code ec;
                if (!std::filesystem::is_regular_file(path, ec))
                    throw FormatError(where + ": shard '" + name + "' (for tensor '" + tensor + "') does not exist");
                shard_index.emplace(name, s.shards.size());
                s.shards.push_back(std::make_shared<SafetensorsFile>(SafetensorsFile::open(path)));
            }
        }
        for (const auto& [tensor, file] : wm->items()) {
            const auto& shard = *s.shards[shard_index.at(file.get<std::string>())];
            if (!shard.find(tensor))
                throw FormatError(where + ": tensor '" + tensor + "' is mapped to " + shard.path().filename().string() +
                                  ", which does not contain it");
        }
        collect(s);
    }

    static void collect(State& s) {
        for (const auto& shard : s.shards)
            for (const TensorView& t : shard->tensors()) s.sorted.push_back(&t);
        std::sort(s.sorted.begin(), s.sorted.end(), [](const TensorView* a, const TensorView* b) { return a->name < b->name; });
        for (std::size_t i = 1; i < s.sorted.size(); ++i)
            if (s.sorted[i]->name == s.sorted[i - 1]->name)
                throw FormatError(s.dir.string() + ": tensor '" + s.sorted[i]->name + "' appears in more than one shard");
    }

    std::shared_ptr<const State> state_;
};

}  // namespace fusionlm
