#pragma once
// Binding module parameters to checkpoint tensors. A model asks for every parameter by its checkpoint
// name and expected shape; nothing throws until finish(), which reports ALL problems at once
// (missing, mis-shaped, wrong dtype, and checkpoint tensors nobody asked for) in one ShapeError.
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "checkpoint.hpp"

namespace fusionlm {

// In an expected shape, this dimension matches any size.
inline constexpr std::int64_t kAnyDim = -1;

class WeightBinder {
public:
    explicit WeightBinder(Checkpoint checkpoint) : ckpt_(std::move(checkpoint)) {}

    // The checkpoint the views point into; a model keeps a copy so they stay valid.
    const Checkpoint& checkpoint() const { return ckpt_; }

    // A float (F32/F16/BF16) tensor of exactly `shape`. On any problem the problem is recorded and an
    // empty view (data == nullptr) is returned; finish() then throws before it can be used.
    TensorView require(const std::string& name, const Shape& shape) {
        const TensorView* t = ckpt_.find(name);
        if (!t) {
            problems_.push_back("missing tensor '" + name + "' " + shape_str(shape));
            return placeholder(name, shape);
        }
        return check(*t, shape);
    }

    // Like require(), but absence is fine (nullopt); a present tensor is still checked.
    std::optional<TensorView> optional(const std::string& name, const Shape& shape) {
        const TensorView* t = ckpt_.find(name);
        if (!t) return std::nullopt;
        return check(*t, shape);
    }

    // An f32 copy widened from the stored dtype, for small tensors (norm weights, biases, gates).
    // Zeros of the expected size when there is a problem (finish() will throw).
    std::vector<float> require_f32(const std::string& name, const Shape& shape) {
        const TensorView v = require(name, shape);
        return v.data ? v.to_f32() : std::vector<float>(std::size_t(expected_numel(shape)), 0.0f);
    }
    std::optional<std::vector<float>> optional_f32(const std::string& name, const Shape& shape) {
        const auto v = optional(name, shape);
        if (!v) return std::nullopt;
        return v->data ? v->to_f32() : std::vector<float>(std::size_t(expected_numel(shape)), 0.0f);
    }

    // Checkpoint tensors under this prefix are known to be unused (e.g. "vision_model.post_layernorm.")
    // and are not reported as unexpected.
    void ignore_prefix(std::string prefix) { ignored_.push_back(std::move(prefix)); }
    // Marks a tensor as consumed without binding it (e.g. a derived buffer such as rotary inv_freq).
    void mark_used(const std::string& name) { bound_.insert(name); }

    // Problems recorded so far, plus unexpected tensors: the lines finish() would report.
    std::vector<std::string> problems() const {
        std::vector<std::string> all = problems_;
        for (const TensorView* t : ckpt_.tensors()) {
            if (bound_.count(t->name) || is_ignored(t->name)) continue;
            all.push_back("unexpected tensor '" + t->name + "' " + std::string(dtype_name(t->dtype)) + " " +
                          shape_str(t->shape));
        }
        return all;
    }

    // Throws one ShapeError naming the checkpoint directory and listing every problem (the first 40).
    // When there is none, maps the checkpoint's pages: the model is about to read them all, and
    // faulting them in one by one would be charged to its first prompt.
    void finish() const {
        const auto all = problems();
        if (all.empty()) {
            ckpt_.populate();
            return;
        }
        constexpr std::size_t kShown = 40;
        std::string msg = ckpt_.dir().string() + ": " + std::to_string(all.size()) + " weight problem(s): ";
        for (std::size_t i = 0; i < all.size() && i < kShown; ++i) msg += (i ? "; " : "") + all[i];
        if (all.size() > kShown) msg += "; ... and " + std::to_string(all.size() - kShown) + " more";
        throw ShapeError(msg);
    }

private:
    static std::int64_t expected_numel(const Shape& shape) {
        std::int64_t n = 1;
        for (auto d : shape) n *= d < 0 ? 0 : d;
        return n;
    }
    static TensorView placeholder(const std::string& name, const Shape& shape) {
        return TensorView{name, DType::F32, shape, nullptr};
    }
    static bool shape_matches(const Shape& got, const Shape& want) {
        if (got.size() != want.size()) return false;
        for (std::size_t i = 0; i < got.size(); ++i)
            if (want[i] != kAnyDim && want[i] != got[i]) return false;
        return true;
    }
    bool is_ignored(const std::string& name) const {
        for (const auto& p : ignored_)
            if (std::string_view(name).starts_with(p)) return true;
        return false;
    }

    TensorView check(const TensorView& t, const Shape& shape) {
        bound_.insert(t.name);
        bool ok = true;
        if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16) {
            problems_.push_back("tensor '" + t.name + "': dtype " + std::string(dtype_name(t.dtype)) +
                                ", expected F32, BF16 or F16");
            ok = false;
        }
        if (!shape_matches(t.shape, shape)) {
            problems_.push_back("tensor '" + t.name + "': shape " + shape_str(t.shape) + ", expected " + shape_str(shape));
            ok = false;
        }
        return ok ? t : placeholder(t.name, shape);
    }

    Checkpoint ckpt_;
    std::vector<std::string> problems_;
    std::set<std::string, std::less<>> bound_;
    std::vector<std::string> ignored_;
};

}  // namespace fusionlm
