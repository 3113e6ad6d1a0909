#include "image.h"

#include <stdexcept>

namespace fi {
namespace {

const BackendOps& ops(Backend backend) { return backend == Backend::CPU ? kCpuOps : kCudaOps; }

}  // namespace

Image::Image(Dims dims, Backend backend) : Image(dims, backend, ops(backend).alloc(dims.bytes())) {}

Image Image::host_view(uint8_t* pixels, Dims dims) {
  return Image(dims, Backend::CPU, std::shared_ptr<uint8_t>(pixels, [](uint8_t*) {}));
}

Image Image::host_shared(std::shared_ptr<uint8_t> pixels, Dims dims) {
  return Image(dims, Backend::CPU, std::move(pixels));
}

Image Image::upload(const uint8_t* pixels, Dims dims, Backend backend) {
  Image img(dims, backend);
  ops(backend).upload(img.data_, pixels, dims.bytes());
  return img;
}

Image Image::copy_of(const uint8_t* pixels, Dims dims, Backend backend, uintptr_t producer) {
  Image img(dims, backend);
  ops(backend).copy_in(img.data_, pixels, dims.bytes(), producer);
  return img;
}

void Image::download(uint8_t* dst) const { ops(backend_).download(dst, data_, dims_.bytes()); }

void Image::separable_into(Image& dst, const PlanPtr& plan) const {
  const Stage& last = plan->stages.back();
  if (dst.backend_ != backend_ || dst.dims_.c != dims_.c || dst.dims_.type != dims_.type ||
      dst.dims_.w != last.horizontal.n_out || dst.dims_.h != last.vertical.n_out)
    throw std::invalid_argument("destination image does not match the operation");
  ops(backend_).separable(data_, dims_, dst.data_, plan);
}

void Image::resize_into(Image& dst, Filter filter) const {
  separable_into(dst, resize_plan(dims_.w, dims_.h, dst.dims_.w, dst.dims_.h, filter));
}

void Image::gaussian_blur_into(Image& dst, double sigma) const {
  // The coarse grid's error is a third of an 8-bit level: only 8-bit images take it.
  separable_into(dst, blur_plan(dims_.w, dims_.h, sigma, dims_.type == PixelType::U8));
}

void Image::quantize_into(Image& dst, int levels, bool dither) const {
  if (levels < 2 || levels > 256) throw std::invalid_argument("levels must be in 2..256");
  if (dst.backend_ != backend_ || !(dst.dims_ == dims_))
    throw std::invalid_argument("destination image does not match the operation");
  ops(backend_).quantize(data_, dims_, dst.data_, levels, dither);
}

Image Image::resize(int width, int height, Filter filter) const {
  Image dst({height, width, dims_.c, dims_.type}, backend_);
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

}  // namespace fi
