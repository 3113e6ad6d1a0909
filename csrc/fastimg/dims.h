// The shape of an image: packed rows of h x w pixels of c 8-bit channels.
#pragma once

#include <cstddef>

namespace fi {

struct Dims {
  int h = 0;
  int w = 0;
  int c = 0;
  size_t bytes() const { return static_cast<size_t>(h) * w * c; }
  bool operator==(const Dims& o) const { return h == o.h && w == o.w && c == o.c; }
};

}  // namespace fi
