// Quantisation on the CPU. quantize_pixel depends on a value only through
// its Bayer cell, so one 256-entry byte table per cell (64 with dithering, 1
// without) answers every pixel; without dithering the whole image is one
// table applied to every byte, which byte shuffles do at about the speed of
// a copy.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu_shared.h"

#ifdef FI_X86_TARGETS
#include <immintrin.h>
#endif

namespace fi {
namespace {

std::vector<uint8_t> tables(int levels, bool dither) {
  const int cells = dither ? 64 : 1;
  std::vector<uint8_t> table(static_cast<size_t>(cells) * 256);
  for (int cell = 0; cell < cells; ++cell)
    for (int v = 0; v < 256; ++v) {
      const uint8_t grey = static_cast<uint8_t>(v);
      quantize_pixel<uint8_t>(&grey, &table[cell * 256 + v], 1, levels, cell % 8, cell / 8, dither);
    }
  return table;
}

// Alpha bytes (every fourth, for RGBA) are copied, as quantize_pixel does.
void lut_scalar(const uint8_t* s, uint8_t* d, size_t n, const uint8_t* t, int c) {
  if (c != 4) {
    // Eight bytes read and written at a time: byte by byte, each store could
    // change the table or the source as far as the compiler knows, and the
    // loop ran at half the speed or full speed depending on where the linker
    // put it.
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t v, r = 0;
      std::memcpy(&v, s + i, 8);
      for (int b = 0; b < 8; ++b) r |= static_cast<uint64_t>(t[(v >> (8 * b)) & 0xff]) << (8 * b);
      std::memcpy(d + i, &r, 8);
    }
    for (; i < n; ++i) d[i] = t[s[i]];
    return;
  }
  for (size_t i = 0; i < n; i += 4) {
    d[i] = t[s[i]];
    d[i + 1] = t[s[i + 1]];
    d[i + 2] = t[s[i + 2]];
    d[i + 3] = s[i + 3];
  }
}

#ifdef FI_X86_TARGETS
// The whole table in four registers: vpermi2b looks a byte up among 128
// entries, so one lookup per half, and the index's top bit picks the half.
__attribute__((target("arch=x86-64-v4,avx512vbmi"))) void lut_vbmi(const uint8_t* s, uint8_t* d,
                                                                   size_t n, const uint8_t* t,
                                                                   int c) {
  const __m512i t0 = _mm512_loadu_si512(t), t1 = _mm512_loadu_si512(t + 64),
                t2 = _mm512_loadu_si512(t + 128), t3 = _mm512_loadu_si512(t + 192);
  const __mmask64 alpha = c == 4 ? 0x8888888888888888ull : 0;
  for (size_t i = 0; i < n; i += 64) {
    const __mmask64 m = n - i >= 64 ? ~0ull : (1ull << (n - i)) - 1;
    const __m512i v = _mm512_maskz_loadu_epi8(m, s + i);
    const __m512i lo = _mm512_permutex2var_epi8(t0, v, t1);
    const __m512i hi = _mm512_permutex2var_epi8(t2, v, t3);
    const __m512i q = _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi);
    _mm512_mask_storeu_epi8(d + i, m, _mm512_mask_blend_epi8(alpha, q, v));
  }
}

// Without VBMI, vpshufb looks up 16 entries: sixteen lookups by the low
// nibble, each kept where the high nibble selects its row of the table.
__attribute__((target("arch=x86-64-v4"))) void lut_avx512(const uint8_t* s, uint8_t* d, size_t n,
                                                          const uint8_t* t, int c) {
  __m512i rows[16];
  for (int h = 0; h < 16; ++h) {
    uint8_t row[64];
    for (int i = 0; i < 64; ++i) row[i] = t[16 * h + i % 16];
    rows[h] = _mm512_loadu_si512(row);
  }
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  const __mmask64 alpha = c == 4 ? 0x8888888888888888ull : 0;
  for (size_t i = 0; i < n; i += 64) {
    const __mmask64 m = n - i >= 64 ? ~0ull : (1ull << (n - i)) - 1;
    const __m512i v = _mm512_maskz_loadu_epi8(m, s + i);
    const __m512i lo = _mm512_and_si512(v, nibble);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
    __m512i q = v;  // alpha lanes keep it
    for (int h = 0; h < 16; ++h) {
      const __mmask64 row = _mm512_cmpeq_epi8_mask(hi, _mm512_set1_epi8(static_cast<char>(h)));
      q = _mm512_mask_shuffle_epi8(q, row & ~alpha, rows[h], lo);
    }
    _mm512_mask_storeu_epi8(d + i, m, q);
  }
}

__attribute__((target("arch=x86-64-v3"))) void lut_avx2(const uint8_t* s, uint8_t* d, size_t n,
                                                        const uint8_t* t, int c) {
  __m256i rows[16];
  for (int h = 0; h < 16; ++h)
    rows[h] =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t + 16 * h)));
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i alpha =
      c == 4 ? _mm256_set1_epi32(static_cast<int>(0xff000000u)) : _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    const __m256i lo = _mm256_and_si256(v, nibble);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
    __m256i q = _mm256_setzero_si256();
    for (int h = 0; h < 16; ++h) {
      const __m256i row = _mm256_cmpeq_epi8(hi, _mm256_set1_epi8(static_cast<char>(h)));
      q = _mm256_blendv_epi8(q, _mm256_shuffle_epi8(rows[h], lo), row);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), _mm256_blendv_epi8(q, v, alpha));
  }
  lut_scalar(s + i, d + i, n - i, t, c);
}
#endif

// One table for every byte of n / c pixels.
void apply_table(const uint8_t* s, uint8_t* d, size_t n, const uint8_t* t, int c) {
#ifdef FI_X86_TARGETS
  static const bool vbmi = __builtin_cpu_supports("avx512vbmi");
  const std::string target = cpu_target();
  if (target == "x86-64-v4") return vbmi ? lut_vbmi(s, d, n, t, c) : lut_avx512(s, d, n, t, c);
  if (target == "x86-64-v3") return lut_avx2(s, d, n, t, c);
#endif
  lut_scalar(s, d, n, t, c);
}

}  // namespace

// Rows per part of an image quantised on several threads.
constexpr int kBandRows = 64;

namespace {

// 16-bit and float images: quantize_pixel on every pixel.
template <class Px>
void quantize_pixels(const Px* src, Dims d, Px* dst, int levels, bool dither) {
  const int threads = cpu_threads(), bands = std::max(1, std::min(threads, d.h / kBandRows));
  run_parallel(bands, threads, [&](int b) {
    for (int y = d.h * b / bands; y < d.h * (b + 1) / bands; ++y)
      for (int x = 0; x < d.w; ++x) {
        const size_t i = (static_cast<size_t>(y) * d.w + x) * d.c;
        quantize_pixel<Px>(src + i, dst + i, d.c, levels, x, y, dither);
      }
  });
}

void quantize_bytes(const uint8_t* src, Dims d, uint8_t* dst, int levels, bool dither) {
  const std::vector<uint8_t> table = tables(levels, dither);
  const size_t row = static_cast<size_t>(d.w) * d.c;
  const int threads = cpu_threads(), bands = std::max(1, std::min(threads, d.h / kBandRows));
  run_parallel(bands, threads, [&](int b) {
    const int y0 = d.h * b / bands, y1 = d.h * (b + 1) / bands;
    if (!dither)
      return apply_table(src + y0 * row, dst + y0 * row, (y1 - y0) * row, &table[0], d.c);
    const int colour = d.c == 4 ? 3 : d.c;
    for (int y = y0; y < y1; ++y)
      for (int x = 0; x < d.w; ++x) {
        const uint8_t* t = &table[((y % 8) * 8 + (x % 8)) * 256];
        const size_t i = y * row + static_cast<size_t>(x) * d.c;
        for (int c = 0; c < colour; ++c) dst[i + c] = t[src[i + c]];
        if (d.c == 4) dst[i + 3] = src[i + 3];  // alpha is kept, as in quantize_pixel
      }
  });
}

}  // namespace

void cpu_quantize(const void* src, Dims d, void* dst, int levels, bool dither) {
  with_pixel_type(d.type, [&](auto px) {
    typedef decltype(px) Px;
    const Px* s = static_cast<const Px*>(src);
    Px* o = static_cast<Px*>(dst);
    if constexpr (std::is_same_v<Px, uint8_t>)
      quantize_bytes(s, d, o, levels, dither);
    else
      quantize_pixels(s, d, o, levels, dither);
  });
}

}  // namespace fi
