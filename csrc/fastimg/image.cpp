#include "image.h"

#include <cstring>
#include <stdexcept>

namespace fi {
namespace {

#ifndef FASTIMG_WITH_CUDA
[[noreturn]] void no_cuda() { throw std::runtime_error("fastimg was built without CUDA support"); }
#endif

std::shared_ptr<uint8_t> allocate(size_t bytes, Backend backend) {
  if (backend == Backend::CPU)
    return std::shared_ptr<uint8_t>(new uint8_t[bytes], std::default_delete<uint8_t[]>());
#ifdef FASTIMG_WITH_CUDA
  return cuda_alloc(bytes);
#else
  no_cuda();
#endif
}

}  // namespace

Image::Image(Dims dims, Backend backend) : Image(dims, backend, allocate(dims.bytes(), backend)) {}

Image Image::host_view(uint8_t* pixels, Dims dims) {
  return Image(dims, Backend::CPU, std::shared_ptr<uint8_t>(pixels, [](uint8_t*) {}));
}

Image Image::host_shared(std::shared_ptr<uint8_t> pixels, Dims dims) {
  return Image(dims, Backend::CPU, std::move(pixels));
}

Image Image::upload(const uint8_t* pixels, Dims dims, Backend backend) {
  Image img(dims, backend);
  if (backend == Backend::CPU) {
    std::memcpy(img.data_.get(), pixels, dims.bytes());
  } else {
#ifdef FASTIMG_WITH_CUDA
    cuda_upload(img.data_, pixels, dims.bytes());
#else
    no_cuda();
#endif
  }
  return img;
}

void Image::download(uint8_t* dst) const {
  if (backend_ == Backend::CPU) {
    std::memcpy(dst, data_.get(), dims_.bytes());
  } else {
#ifdef FASTIMG_WITH_CUDA
    cuda_download(dst, data_, dims_.bytes());
#else
    no_cuda();
#endif
  }
}

void Image::separable_into(Image& dst, const PlanPtr& plan) const {
  const Stage& last = plan->stages.back();
  if (dst.backend_ != backend_ || dst.dims_.c != dims_.c || dst.dims_.w != last.horizontal.n_out ||
      dst.dims_.h != last.vertical.n_out)
    throw std::invalid_argument("destination image does not match the operation");
  if (backend_ == Backend::CPU) {
    cpu_separable(data_.get(), dims_, dst.data_.get(), plan->stages);
  } else {
#ifdef FASTIMG_WITH_CUDA
    cuda_separable(data_, dims_, dst.data_, plan);
#else
    no_cuda();
#endif
  }
}

void Image::resize_into(Image& dst, Filter filter) const {
  separable_into(dst, resize_plan(dims_.w, dims_.h, dst.dims_.w, dst.dims_.h, filter));
}

void Image::gaussian_blur_into(Image& dst, double sigma) const {
  separable_into(dst, blur_plan(dims_.w, dims_.h, sigma));
}

void Image::quantize_into(Image& dst, int levels, bool dither) const {
  if (levels < 2 || levels > 256) throw std::invalid_argument("levels must be in 2..256");
  if (dst.backend_ != backend_ || !(dst.dims_ == dims_))
    throw std::invalid_argument("destination image does not match the operation");
  if (backend_ == Backend::CPU) {
    cpu_quantize(data_.get(), dims_, dst.data_.get(), levels, dither);
  } else {
#ifdef FASTIMG_WITH_CUDA
    cuda_quantize(data_, dims_, dst.data_, levels, dither);
#else
    no_cuda();
#endif
  }
}

Image Image::resize(int width, int height, Filter filter) const {
  Image dst({height, width, dims_.c}, backend_);
  resize_into(dst, filter);
  return dst;
}

Image Image::gaussian_blur(double sigma) const {
  Image dst(dims_, backend_);
  gaussian_blur_into(dst, sigma);
  return dst;
}

Image Image::quantize(int levels, bool dither) const {
  Image dst(dims_, backend_);
  quantize_into(dst, levels, dither);
  return dst;
}

#ifndef FASTIMG_WITH_CUDA
CudaStatus cuda_status() {
  CudaStatus s;
  s.reason = "fastimg was built without CUDA support (no nvcc at build time, or FASTIMG_CUDA=OFF)";
  return s;
}
#endif

}  // namespace fi
