// The shape of an image: packed rows of h x w pixels of c channels, each
// channel a value of one pixel type.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fi {

enum class PixelType { U8, U16, F32 };

inline size_t pixel_bytes(PixelType t) {
  return t == PixelType::U8 ? 1 : t == PixelType::U16 ? 2 : 4;
}

// Calls f(Px{}) with the C++ type of `t`: the one place where the pixel
// types are told apart; each backend's operations are templates on Px.
template <class F>
decltype(auto) with_pixel_type(PixelType t, F&& f) {
  if (t == PixelType::U16) return f(uint16_t{});
  if (t == PixelType::F32) return f(float{});
  return f(uint8_t{});
}

struct Dims {
  int h = 0;
  int w = 0;
  int c = 0;
  PixelType type = PixelType::U8;
  size_t bytes() const { return static_cast<size_t>(h) * w * c * pixel_bytes(type); }
  bool operator==(const Dims& o) const {
    return h == o.h && w == o.w && c == o.c && type == o.type;
  }
};

}  // namespace fi
