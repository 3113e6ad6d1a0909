// An image held by one backend: host memory for the CPU, device memory for
// CUDA. Operations return a new image on the same backend, so a chain such as
// upload -> resize -> blur -> download crosses the bus twice in all.
#pragma once

#include <cstdint>
#include <memory>

#include "backend.h"
#include "dims.h"
#include "errors.h"
#include "plan.h"

namespace fi {

class Image {
 public:
  Image(Dims dims, Backend backend);  // uninitialised pixels
  // Wraps caller-owned host pixels without copying; they must outlive the view.
  static Image host_view(uint8_t* pixels, Dims dims);
  // Shares host pixels whose owner the pointer's deleter releases.
  static Image host_shared(std::shared_ptr<uint8_t> pixels, Dims dims);
  static Image upload(const uint8_t* pixels, Dims dims, Backend backend);
  // A copy of pixels already in the backend's memory (BackendOps::copy_in).
  static Image copy_of(const uint8_t* pixels, Dims dims, Backend backend, uintptr_t producer);

  Dims dims() const { return dims_; }
  Backend backend() const { return backend_; }
  // The pixels, in the backend's memory, kept alive by the pointer.
  const std::shared_ptr<uint8_t>& data() const { return data_; }
  void download(uint8_t* dst) const;

  Image resize(int width, int height, Filter filter) const;
  Image gaussian_blur(double sigma) const;
  Image quantize(int levels, bool dither) const;

  // The same operations writing into an existing image of the right size and
  // backend; the allocating forms above call these.
  void resize_into(Image& dst, Filter filter) const;
  void gaussian_blur_into(Image& dst, double sigma) const;
  void quantize_into(Image& dst, int levels, bool dither) const;
  // Any chain of separable stages (resize and blur are one or two).
  void separable_into(Image& dst, const PlanPtr& plan) const;

 private:
  Image(Dims dims, Backend backend, std::shared_ptr<uint8_t> data)
      : dims_(dims), backend_(backend), data_(std::move(data)) {}

  Dims dims_;
  Backend backend_;
  std::shared_ptr<uint8_t> data_;
};

}  // namespace fi
