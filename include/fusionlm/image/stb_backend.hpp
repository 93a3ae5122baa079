#pragma once
// The stb_image decoder behind fusionlm's own opt-in macro.
//
// fusionlm is header-only, so stb_image's implementation must be compiled in exactly one translation
// unit of the program: define FUSIONLM_IMPLEMENT_STB_IMAGE in one .cpp before including fusionlm
// (without it, linking fails with undefined fusionlm::detail::stb_* functions). That .cpp must not
// include <stb_image.h> itself. The copy compiled there is private: every stb function is `static`
// (STB_IMAGE_STATIC) and reached only through the C++ functions below, so a program that also links
// its own stb_image (any configuration, e.g. Debian's libstb) gets no duplicate symbols, and each
// copy keeps its own settings. Ours has only the JPEG and PNG decoders, no stdio, a dimension cap,
// and an allocator with a per-decode byte budget (a zlib bomb fails instead of exhausting memory).
#include <cstddef>

namespace fusionlm::detail {

struct StbDecoded {
    unsigned char* pixels = nullptr;  // release with stb_free
    int width = 0, height = 0, channels = 0;
    const char* failure = nullptr;    // stb's reason when pixels is null
};

// Header only: dimensions and channel count as stb would decode them.
bool stb_info(const unsigned char* bytes, int len, int* width, int* height, int* channels);
// 8-bit pixels with the file's own channel count (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA; 16-bit samples
// are reduced to their high byte, palettes expanded, CMYK converted to RGB). All allocations of the
// call together may not exceed `budget_bytes`.
StbDecoded stb_decode(const unsigned char* bytes, int len, std::size_t budget_bytes);
void stb_free(void* pixels);

}  // namespace fusionlm::detail

#if defined(FUSIONLM_IMPLEMENT_STB_IMAGE) && !defined(FUSIONLM_STB_IMAGE_IMPLEMENTED)
#define FUSIONLM_STB_IMAGE_IMPLEMENTED
#ifdef STBI_INCLUDE_STB_IMAGE_H
#error "fusionlm: the translation unit that defines FUSIONLM_IMPLEMENT_STB_IMAGE must not include <stb_image.h> itself; use another .cpp for your own stb_image"
#endif
#include <cstdlib>
#include <cstring>

namespace fusionlm::detail::stb_alloc {
// Bytes the current decode may still allocate; blocks carry their size in a header so realloc and
// free can account for it.
inline thread_local std::size_t remaining = 0;
inline constexpr std::size_t kHeader = 16;

inline void* allocate(std::size_t n) {
    if (n > remaining) return nullptr;
    auto* base = static_cast<unsigned char*>(std::malloc(n + kHeader));
    if (!base) return nullptr;
    remaining -= n;
    std::memcpy(base, &n, sizeof n);
    return base + kHeader;
}
inline void release(void* p) {
    if (!p) return;
    auto* base = static_cast<unsigned char*>(p) - kHeader;
    std::size_t n;
    std::memcpy(&n, base, sizeof n);
    remaining += n;
    std::free(base);
}
inline void* reallocate(void* p, std::size_t n) {
    if (!p) return allocate(n);
    auto* base = static_cast<unsigned char*>(p) - kHeader;
    std::size_t old;
    std::memcpy(&old, base, sizeof old);
    if (n > old && n - old > remaining) return nullptr;
    auto* grown = static_cast<unsigned char*>(std::realloc(base, n + kHeader));
    if (!grown) return nullptr;
    remaining = remaining + old - n;
    std::memcpy(grown, &n, sizeof n);
    return grown + kHeader;
}
}  // namespace fusionlm::detail::stb_alloc

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_MAX_DIMENSIONS (1 << 20)
#define STBI_MALLOC(sz) ::fusionlm::detail::stb_alloc::allocate(sz)
#define STBI_REALLOC(p, newsz) ::fusionlm::detail::stb_alloc::reallocate(p, newsz)
#define STBI_FREE(p) ::fusionlm::detail::stb_alloc::release(p)
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#endif
#include <stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#undef STBI_MALLOC
#undef STBI_REALLOC
#undef STBI_FREE

namespace fusionlm::detail {

bool stb_info(const unsigned char* bytes, int len, int* width, int* height, int* channels) {
    stb_alloc::remaining = std::size_t(1) << 20;  // the JPEG decoder state lives on the heap
    return stbi_info_from_memory(bytes, len, width, height, channels) != 0;
}

StbDecoded stb_decode(const unsigned char* bytes, int len, std::size_t budget_bytes) {
    stb_alloc::remaining = budget_bytes;
    StbDecoded out;
    out.pixels = stbi_load_from_memory(bytes, len, &out.width, &out.height, &out.channels, 0);
    if (!out.pixels) out.failure = stbi_failure_reason();
    return out;
}

void stb_free(void* pixels) { stbi_image_free(pixels); }

}  // namespace fusionlm::detail
#endif
