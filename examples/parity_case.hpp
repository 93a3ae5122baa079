#pragma once
// The parts of fusionlm-parity that do not depend on the model family: reading a reference case
// (config.json, inputs.safetensors, optional expected.safetensors), collecting outputs, comparing them
// with the reference and writing them. A family runner (parity_mllama.hpp, ...) fills CaseOutputs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <fusionlm/core/error.hpp>
#include <fusionlm/core/tensor.hpp>
#include <fusionlm/io/safetensors.hpp>

namespace fusionlm::parity {

struct Tolerance {
    double rel = 1e-4;        // max|out - exp| / max|exp|
    double logits_abs = 1e-3;  // additionally, for logits-like tensors
};

// One reference case folder.
class Case {
public:
    explicit Case(std::filesystem::path dir) : dir_(std::move(dir)) {
        std::error_code ec;
        if (!std::filesystem::is_directory(dir_, ec)) throw InputError(dir_.string() + ": not a case directory");
        inputs_ = std::make_shared<SafetensorsFile>(SafetensorsFile::open(dir_ / "inputs.safetensors"));
        if (std::filesystem::exists(dir_ / "expected.safetensors", ec))
            expected_ = std::make_shared<SafetensorsFile>(SafetensorsFile::open(dir_ / "expected.safetensors"));
    }

    const std::filesystem::path& dir() const { return dir_; }
    const SafetensorsFile& inputs() const { return *inputs_; }
    const SafetensorsFile* expected() const { return expected_.get(); }

    // An input tensor of the given rank (dims < 0 match anything), or InputError naming it.
    const TensorView& input(const std::string& name, const Shape& shape) const {
        const TensorView* t = inputs_->find(name);
        if (!t) throw InputError(inputs_->path().string() + ": missing input tensor '" + name + "'");
        bool ok = t->shape.size() == shape.size();
        for (std::size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == t->shape[i];
        if (!ok)
            throw InputError(inputs_->path().string() + ": input '" + name + "' has shape " + shape_str(t->shape) +
                             ", expected " + shape_str(shape) + " (-1 = any)");
        return *t;
    }
    const TensorView* optional_input(const std::string& name) const { return inputs_->find(name); }

    // Whether the run should produce `name`: everything when there is no expected file.
    bool wants(const std::string& name) const { return !expected_ || expected_->find(name); }

private:
    std::filesystem::path dir_;
    std::shared_ptr<SafetensorsFile> inputs_, expected_;
};

// What a run produced, by reference name.
class CaseOutputs {
public:
    void add_f32(const std::string& name, Shape shape, std::span<const float> values) {
        put(OwnedTensor::f32(name, std::move(shape), values));
    }
    void add_f32(const std::string& name, Shape shape, const RowMatrix& m) {
        add_f32(name, std::move(shape), std::span<const float>(m.data(), std::size_t(m.size())));
    }
    void add_i64(const std::string& name, Shape shape, std::span<const std::int64_t> values) {
        put(OwnedTensor::i64(name, std::move(shape), values));
    }
    const std::map<std::string, OwnedTensor>& all() const { return tensors_; }
    const OwnedTensor* find(const std::string& name) const {
        auto it = tensors_.find(name);
        return it == tensors_.end() ? nullptr : &it->second;
    }

private:
    void put(OwnedTensor t) {
        const std::string name = t.name;
        tensors_.insert_or_assign(name, std::move(t));
    }
    std::map<std::string, OwnedTensor> tensors_;
};

// Which leading (batch, seq) elements are real tokens, for masking the comparison.
struct TokenMask {
    std::int64_t batch = 0, seq = 0;
    std::vector<std::int64_t> attention_mask;  // [batch * seq]; empty = all real
    bool real(std::int64_t b, std::int64_t s) const {
        return attention_mask.empty() || attention_mask[std::size_t(b * seq + s)] != 0;
    }
};

struct Comparison {
    std::string name;
    Shape shape;
    double max_abs = 0, rel = 0;
    bool integer = false;
    bool ok = false;
    std::string problem;  // shape/dtype disagreement or a missing output
};

namespace detail {
inline bool is_logits(const std::string& name) { return name == "logits" || name == "greedy_scores"; }

inline std::vector<double> as_f64(const TensorView& t) {
    std::vector<double> v(std::size_t(t.numel()));
    if (t.dtype == DType::F64) {
        std::copy_n(t.as<double>(), v.size(), v.begin());
    } else if (t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16) {
        const auto f = t.to_f32();
        std::copy(f.begin(), f.end(), v.begin());
    } else {
        const auto i = to_i64(t);
        std::copy(i.begin(), i.end(), v.begin());
    }
    return v;
}

// Row r of a tensor (rows over the leading dims) is compared when it belongs to a real token: tensors
// laid out (batch, seq, ...) and router logits (batch * seq, experts).
inline std::function<bool(std::int64_t)> row_filter(const std::string& name, const Shape& shape, const TokenMask& m,
                                                    std::int64_t& row_size) {
    row_size = 1;
    if (m.attention_mask.empty()) return {};
    if (shape.size() >= 2 && shape[0] == m.batch && shape[1] == m.seq) {
        for (std::size_t i = 2; i < shape.size(); ++i) row_size *= shape[i];
        return [&m](std::int64_t r) { return m.real(r / m.seq, r % m.seq); };
    }
    if (name.starts_with("router_logits") && shape.size() == 2 && shape[0] == m.batch * m.seq) {
        row_size = shape[1];
        return [&m](std::int64_t r) { return m.real(r / m.seq, r % m.seq); };
    }
    return {};
}
}  // namespace detail

inline Comparison compare(const TensorView& out, const TensorView& exp, const TokenMask& mask, const Tolerance& tol) {
    Comparison c;
    c.name = exp.name;
    c.shape = exp.shape;
    c.integer = !(exp.dtype == DType::F32 || exp.dtype == DType::F64 || exp.dtype == DType::BF16 ||
                  exp.dtype == DType::F16);
    if (out.shape != exp.shape) {
        c.problem = "shape " + shape_str(out.shape) + ", expected " + shape_str(exp.shape);
        return c;
    }
    const auto o = detail::as_f64(out), e = detail::as_f64(exp);
    std::int64_t row_size = 1;
    const auto keep = detail::row_filter(exp.name, exp.shape, mask, row_size);
    double max_exp = 0;
    for (std::size_t i = 0; i < e.size(); ++i) {
        if (keep && !keep(std::int64_t(i) / row_size)) continue;
        // NaN anywhere makes the difference NaN, which the checks below reject.
        const double d = std::isnan(o[i]) || std::isnan(e[i]) ? NAN : std::abs(o[i] - e[i]);
        c.max_abs = std::isnan(d) || std::isnan(c.max_abs) ? NAN : std::max(c.max_abs, d);
        max_exp = std::max(max_exp, std::abs(e[i]));
    }
    c.rel = max_exp > 0 ? c.max_abs / max_exp : c.max_abs;
    if (c.integer)
        c.ok = c.max_abs == 0;
    else
        c.ok = c.rel <= tol.rel && (!detail::is_logits(exp.name) || c.max_abs <= tol.logits_abs);
    return c;
}

// Compares every expected tensor with the output of the same name.
inline std::vector<Comparison> compare_all(const SafetensorsFile& expected, const CaseOutputs& outputs,
                                           const TokenMask& mask, const Tolerance& tol = {}) {
    std::vector<Comparison> result;
    for (const TensorView& exp : expected.tensors()) {
        const OwnedTensor* out = outputs.find(exp.name);
        if (!out) {
            Comparison c;
            c.name = exp.name;
            c.shape = exp.shape;
            c.problem = "not produced";
            result.push_back(c);
            continue;
        }
        result.push_back(compare(out->view(), exp, mask, tol));
    }
    return result;
}

// The outputs to write: those the reference names, converted to its dtype; all of them without a reference.
inline std::vector<OwnedTensor> outputs_to_write(const SafetensorsFile* expected, const CaseOutputs& outputs) {
    std::vector<OwnedTensor> w;
    for (const auto& [name, t] : outputs.all()) {
        const TensorView* exp = expected ? expected->find(name) : nullptr;
        if (expected && !exp) continue;
        if (!exp || exp->dtype == t.dtype) {
            w.push_back(t);
            continue;
        }
        const auto v = detail::as_f64(t.view());
        if (exp->dtype == DType::F64) {
            w.push_back(OwnedTensor::from(name, DType::F64, t.shape, std::span<const double>(v)));
        } else if (exp->dtype == DType::I64) {
            std::vector<std::int64_t> i(v.begin(), v.end());
            w.push_back(OwnedTensor::i64(name, t.shape, i));
        } else {
            std::vector<float> f(v.begin(), v.end());
            w.push_back(OwnedTensor::f32(name, t.shape, f));
        }
    }
    return w;
}

}  // namespace fusionlm::parity
