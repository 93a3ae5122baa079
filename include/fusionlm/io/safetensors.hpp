#pragma once
// safetensors files: a memory-mapped reader that validates the whole header before any tensor is
// used, and a writer of the standard format.
//
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets},
// "__metadata__": {str: str}}, then the data section; offsets are relative to the data section.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "json.hpp"

namespace fusionlm {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

// Real headers are a few MB at most (a 70B model's is ~100 KB per shard).
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100u << 20;

namespace detail {

// A read-only mapping of a whole file; unmapped on destruction.
class MappedFile {
public:
    MappedFile() = default;
    explicit MappedFile(const std::filesystem::path& path) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw FormatError(path.string() + ": cannot open (" + std::strerror(errno) + ")");
        struct stat st {};
        if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            ::close(fd);
            throw FormatError(path.string() + ": not a regular file");
        }
        size_ = std::size_t(st.st_size);
        if (size_ > 0) {
            void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                const int err = errno;
                ::close(fd);
                throw FormatError(path.string() + ": cannot map (" + std::strerror(err) + ")");
            }
            data_ = static_cast<const std::byte*>(p);
        }
        ::close(fd);
    }
    MappedFile(MappedFile&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    MappedFile& operator=(MappedFile&& o) noexcept {
        if (this != &o) {
            unmap();
            data_ = std::exchange(o.data_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile() { unmap(); }

    const std::byte* data() const { return data_; }
    std::size_t size() const { return size_; }

    // Maps every page of the file now (a hint: kernels without MADV_POPULATE_READ just fault later), so the
    // first pass over the weights does not take one page fault per 4 KiB.
    void populate() const {
#ifdef MADV_POPULATE_READ
        if (data_) ::madvise(const_cast<std::byte*>(data_), size_, MADV_POPULATE_READ);
#endif
    }

private:
    void unmap() {
        if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
        data_ = nullptr;
    }
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

// Heap bytes aligned for any vector load (misaligned tensors are copied here).
struct AlignedDelete {
    void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
using AlignedBytes = std::unique_ptr<std::byte[], AlignedDelete>;
inline AlignedBytes allocate_aligned(std::size_t n) {
    return AlignedBytes(static_cast<std::byte*>(::operator new[](std::max<std::size_t>(n, 1), std::align_val_t(64))));
}

}  // namespace detail

// One opened safetensors file. Views returned by tensors()/find() point into the mapping (or an owned
// aligned copy for misaligned tensors) and stay valid as long as this object lives; share it through a
// shared_ptr (see Checkpoint) to keep it alive. Moving it keeps the views valid.
class SafetensorsFile {
public:
    static SafetensorsFile open(const std::filesystem::path& path) {
        SafetensorsFile f;
        f.path_ = path;
        f.map_ = detail::MappedFile(path);
        f.parse();
        return f;
    }

    const std::filesystem::path& path() const { return path_; }
    // All tensors, sorted by name.
    const std::vector<TensorView>& tensors() const { return tensors_; }
    const std::map<std::string, std::string, std::less<>>& metadata() const { return metadata_; }
    std::size_t size() const { return tensors_.size(); }
    // Number of tensors that were misaligned in the file and copied into owned memory.
    std::size_t copied_tensors() const { return copied_; }
    // Maps all of the file's pages now rather than on first touch (see MappedFile::populate).
    void populate() const { map_.populate(); }

    const TensorView* find(std::string_view name) const {
        auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                                   [](const TensorView& t, std::string_view n) { return t.name < n; });
        return it != tensors_.end() && it->name == name ? &*it : nullptr;
    }
    const TensorView& get(std::string_view name) const {
        if (const TensorView* t = find(name)) return *t;
        throw ShapeError(path_.string() + ": no tensor '" + std::string(name) + "'");
    }

private:
    struct Entry {
        TensorView view;
        std::uint64_t begin = 0, end = 0;
    };

    [[noreturn]] void fail(const std::string& msg) const { throw FormatError(path_.string() + ": " + msg); }
    [[noreturn]] void fail_tensor(const std::string& name, const std::string& msg) const {
        fail("tensor '" + name + "': " + msg);
    }

    void parse() {
        const std::size_t file_size = map_.size();
        if (file_size < 8) fail("file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
        std::uint64_t header_len = 0;
        std::memcpy(&header_len, map_.data(), 8);
        if (header_len > kMaxSafetensorsHeader)
            fail("header length " + std::to_string(header_len) + " exceeds the limit of " +
                 std::to_string(kMaxSafetensorsHeader) + " bytes");
        if (header_len > file_size - 8)
            fail("header length " + std::to_string(header_len) + " runs past the end of the file (" +
                 std::to_string(file_size) + " bytes)");
        const std::string_view header_text(reinterpret_cast<const char*>(map_.data()) + 8, std::size_t(header_len));
        Json header;
        try {
            header = parse_json(header_text, path_.string() + ": header");
        } catch (const FormatError&) {
            throw;
        } catch (const std::exception& e) {
            fail(std::string("header: ") + e.what());
        }
        if (!header.is_object()) fail("header is " + json_type_name(header) + ", not a JSON object");

        const std::byte* data_section = map_.data() + 8 + header_len;
        const std::uint64_t data_size = file_size - 8 - header_len;

        std::vector<Entry> entries;
        entries.reserve(header.size());
        for (const auto& [name, info] : header.items()) {
            if (name == "__metadata__") {
                parse_metadata(info);
                continue;
            }
            entries.push_back(parse_entry(name, info, data_size));
        }
        check_overlaps(entries);

        // Tensors not aligned to their element size are copied once into one owned aligned arena.
        std::size_t arena_bytes = 0;
        auto misaligned = [&](const Entry& e) {
            const auto addr = reinterpret_cast<std::uintptr_t>(data_section + e.begin);
            return addr % dtype_size(e.view.dtype) != 0;
        };
        for (const Entry& e : entries)
            if (misaligned(e)) arena_bytes += (e.end - e.begin + 63) / 64 * 64;
        if (arena_bytes > 0) owned_ = detail::allocate_aligned(arena_bytes);
        std::size_t arena_used = 0;
        tensors_.reserve(entries.size());
        for (Entry& e : entries) {
            const std::byte* src = data_section + e.begin;
            if (misaligned(e)) {
                std::byte* dst = owned_.get() + arena_used;
                std::memcpy(dst, src, std::size_t(e.end - e.begin));
                arena_used += (e.end - e.begin + 63) / 64 * 64;
                e.view.data = dst;
                ++copied_;
            } else {
                e.view.data = src;
            }
            tensors_.push_back(std::move(e.view));
        }
        std::sort(tensors_.begin(), tensors_.end(), [](const TensorView& a, const TensorView& b) { return a.name < b.name; });
    }

    void parse_metadata(const Json& info) {
        if (!info.is_object()) fail("__metadata__ is " + json_type_name(info) + ", not an object");
        for (const auto& [k, v] : info.items()) {
            if (!v.is_string()) fail("__metadata__." + k + " is " + json_type_name(v) + ", not a string");
            metadata_.emplace(k, v.get<std::string>());
        }
    }

    Entry parse_entry(const std::string& name, const Json& info, std::uint64_t data_size) const {
        if (!info.is_object()) fail_tensor(name, "entry is " + json_type_name(info) + ", not an object");
        Entry e;
        e.view.name = name;

        const auto dt = info.find("dtype");
        if (dt == info.end() || !dt->is_string()) fail_tensor(name, "missing or non-string 'dtype'");
        if (!parse_dtype(dt->get<std::string>(), e.view.dtype))
            fail_tensor(name, "unknown dtype '" + dt->get<std::string>() + "'");

        const auto sh = info.find("shape");
        if (sh == info.end() || !sh->is_array()) fail_tensor(name, "missing or non-list 'shape'");
        if (sh->size() > 16) fail_tensor(name, "shape has " + std::to_string(sh->size()) + " dimensions");
        std::uint64_t count = 1;
        for (const Json& d : *sh) {
            if (!d.is_number_unsigned())
                fail_tensor(name, "shape entry " + json_excerpt(d) + " is not a non-negative integer");
            const auto v = d.get<std::uint64_t>();
            if (v > std::uint64_t(INT64_MAX) || __builtin_mul_overflow(count, v, &count) || count > std::uint64_t(INT64_MAX))
                fail_tensor(name, "shape " + json_excerpt(*sh) + " has more elements than int64 can count");
            e.view.shape.push_back(std::int64_t(v));
        }
        std::uint64_t nbytes = 0;
        if (__builtin_mul_overflow(count, std::uint64_t(dtype_size(e.view.dtype)), &nbytes))
            fail_tensor(name, "shape " + json_excerpt(*sh) + " overflows the byte count");

        const auto off = info.find("data_offsets");
        if (off == info.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
            !(*off)[1].is_number_unsigned())
            fail_tensor(name, "'data_offsets' must be two non-negative integers");
        e.begin = (*off)[0].get<std::uint64_t>();
        e.end = (*off)[1].get<std::uint64_t>();
        if (e.begin > e.end)
            fail_tensor(name, "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] are reversed");
        if (e.end > data_size)
            fail_tensor(name, "data_offsets end " + std::to_string(e.end) + " is past the data section (" +
                                  std::to_string(data_size) + " bytes)");
        if (e.end - e.begin != nbytes)
            fail_tensor(name, "holds " + std::to_string(e.end - e.begin) + " bytes but " +
                                  std::string(dtype_name(e.view.dtype)) + " " + shape_str(e.view.shape) + " needs " +
                                  std::to_string(nbytes));
        return e;
    }

    void check_overlaps(const std::vector<Entry>& entries) const {
        std::vector<const Entry*> by_offset;
        for (const Entry& e : entries)
            if (e.end > e.begin) by_offset.push_back(&e);
        std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) { return a->begin < b->begin; });
        for (std::size_t i = 1; i < by_offset.size(); ++i)
            if (by_offset[i]->begin < by_offset[i - 1]->end)
                fail_tensor(by_offset[i]->view.name, "data overlaps tensor '" + by_offset[i - 1]->view.name + "'");
    }

    std::filesystem::path path_;
    detail::MappedFile map_;
    detail::AlignedBytes owned_;
    std::vector<TensorView> tensors_;
    std::map<std::string, std::string, std::less<>> metadata_;
    std::size_t copied_ = 0;
};

// A tensor that owns its bytes, for writing files (parity outputs, test fixtures).
struct OwnedTensor {
    std::string name;
    DType dtype = DType::F32;
    Shape shape;
    std::vector<std::byte> bytes;

    template <class T>
    static OwnedTensor from(std::string name, DType dtype, Shape shape, std::span<const T> values) {
        if (sizeof(T) != dtype_size(dtype))
            throw InputError("tensor '" + name + "': element size does not match dtype " + std::string(dtype_name(dtype)));
        if (values.size() != std::size_t(fusionlm::numel(shape)))
            throw ShapeError("tensor '" + name + "': " + std::to_string(values.size()) + " values for shape " +
                             shape_str(shape));
        OwnedTensor t{std::move(name), dtype, std::move(shape), std::vector<std::byte>(values.size_bytes())};
        if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), values.size_bytes());
        return t;
    }
    static OwnedTensor f32(std::string name, Shape shape, std::span<const float> values) {
        return from(std::move(name), DType::F32, std::move(shape), values);
    }
    static OwnedTensor i64(std::string name, Shape shape, std::span<const std::int64_t> values) {
        return from(std::move(name), DType::I64, std::move(shape), values);
    }
    static OwnedTensor copy_of(const TensorView& v) {
        OwnedTensor t{v.name, v.dtype, v.shape, std::vector<std::byte>(v.nbytes())};
        if (!t.bytes.empty()) std::memcpy(t.bytes.data(), v.data, t.bytes.size());
        return t;
    }
    TensorView view() const { return TensorView{name, dtype, shape, bytes.data()}; }
};

// Writes the standard format: tensors ordered largest element size first, then by name, header
// space-padded to a multiple of 8, so every tensor is aligned to its element size.
inline void write_safetensors(const std::filesystem::path& path, const std::vector<TensorView>& tensors,
                              const std::map<std::string, std::string>& metadata = {{"format", "pt"}}) {
    std::vector<const TensorView*> order;
    for (const TensorView& t : tensors) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const TensorView* a, const TensorView* b) {
        const auto sa = dtype_size(a->dtype), sb = dtype_size(b->dtype);
        return sa != sb ? sa > sb : a->name < b->name;
    });
    Json header = Json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::uint64_t offset = 0;
    for (std::size_t i = 0; i < order.size(); ++i) {
        const TensorView& t = *order[i];
        if (t.name == "__metadata__" || header.contains(t.name))
            throw InputError(path.string() + ": duplicate or reserved tensor name '" + t.name + "'");
        for (auto d : t.shape)
            if (d < 0) throw ShapeError(path.string() + ": tensor '" + t.name + "' has negative dimension");
        const std::uint64_t n = t.nbytes();
        header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
        offset += n;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');

    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw InputError(path.string() + ": cannot create file");
    const std::uint64_t len = text.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(text.data(), std::streamsize(text.size()));
    for (const TensorView* t : order)
        if (t->nbytes() > 0) out.write(reinterpret_cast<const char*>(t->data), std::streamsize(t->nbytes()));
    out.flush();
    if (!out) throw InputError(path.string() + ": write failed");
}

inline void write_safetensors(const std::filesystem::path& path, const std::vector<OwnedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {{"format", "pt"}}) {
    std::vector<TensorView> views;
    views.reserve(tensors.size());
    for (const OwnedTensor& t : tensors) views.push_back(t.view());
    write_safetensors(path, views, metadata);
}

// Reads an integer tensor (I64, I32, I16, I8, U8, BOOL) widened to int64, e.g. input_ids.
inline std::vector<std::int64_t> to_i64(const TensorView& t) {
    std::vector<std::int64_t> out(std::size_t(t.numel()));
    auto widen = [&](auto tag) {
        using T = decltype(tag);
        const T* p = t.as<T>();
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = std::int64_t(p[i]);
    };
    switch (t.dtype) {
        case DType::I64: widen(std::int64_t{}); break;
        case DType::I32: widen(std::int32_t{}); break;
        case DType::I16: widen(std::int16_t{}); break;
        case DType::I8: widen(std::int8_t{}); break;
        case DType::U8: case DType::Bool: widen(std::uint8_t{}); break;
        default:
            throw ShapeError("tensor '" + t.name + "': dtype " + std::string(dtype_name(t.dtype)) + " is not an integer type");
    }
    return out;
}

// A float tensor as an f32 matrix of (numel / last dim) rows and last-dim columns; a 0-d or 1-d
// tensor is one row.
inline RowMatrix to_row_matrix(const TensorView& t) {
    const std::int64_t cols = t.shape.empty() ? 1 : t.shape.back();
    const std::int64_t rows = cols == 0 ? 0 : t.numel() / cols;
    RowMatrix m(rows, cols);
    const std::vector<float> v = t.to_f32();
    if (!v.empty()) std::copy(v.begin(), v.end(), m.data());
    return m;
}

}  // namespace fusionlm
