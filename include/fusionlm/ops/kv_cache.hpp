#pragma once
// Per-layer key/value cache: rows appended as tokens are processed, storage grown geometrically so
// decoding amortises to O(1) copies per token.
#include <algorithm>
#include <cstdint>
#include <string>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace fusionlm {

class KvCache {
public:
    // kv_dim = num_kv_heads * head_dim.
    explicit KvCache(std::int64_t kv_dim, std::int64_t initial_capacity = 0)
        : kv_dim_(kv_dim), keys_(0, std::max<std::int64_t>(kv_dim, 0)), values_(0, std::max<std::int64_t>(kv_dim, 0)) {
        if (kv_dim <= 0) throw ShapeError("KvCache: kv_dim must be positive, got " + std::to_string(kv_dim));
        reserve(std::max<std::int64_t>(initial_capacity, 0));
    }

    // Appends rows of k and v ([n, kv_dim] each).
    void append(const Eigen::Ref<const RowMatrix>& k, const Eigen::Ref<const RowMatrix>& v) {
        if (k.cols() != kv_dim_ || v.cols() != kv_dim_ || k.rows() != v.rows())
            throw ShapeError("KvCache::append: key [" + std::to_string(k.rows()) + ", " + std::to_string(k.cols()) +
                             "] and value [" + std::to_string(v.rows()) + ", " + std::to_string(v.cols()) +
                             "] must both be [n, " + std::to_string(kv_dim_) + "]");
        const std::int64_t n = k.rows();
        if (size_ + n > capacity()) reserve(std::max(size_ + n, capacity() * 2));
        keys_.middleRows(size_, n) = k;
        values_.middleRows(size_, n) = v;
        size_ += n;
    }

    // [size, kv_dim] views, valid until the next append / reserve.
    auto keys() const { return keys_.topRows(size_); }
    auto values() const { return values_.topRows(size_); }

    std::int64_t size() const { return size_; }
    std::int64_t capacity() const { return keys_.rows(); }
    std::int64_t kv_dim() const { return kv_dim_; }
    void clear() { size_ = 0; }

    // Grows storage to at least `rows` rows, keeping the cached ones.
    void reserve(std::int64_t rows) {
        if (rows <= capacity()) return;
        RowMatrix k(rows, kv_dim_), v(rows, kv_dim_);
        k.topRows(size_) = keys_.topRows(size_);
        v.topRows(size_) = values_.topRows(size_);
        keys_.swap(k);
        values_.swap(v);
    }

private:
    std::int64_t kv_dim_;
    std::int64_t size_ = 0;
    RowMatrix keys_, values_;
};

}  // namespace fusionlm
