// The Python face of the kernels: argument checking and documentation live in
// python/fastimg; this file only converts types and releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "fastimg/image.h"

namespace py = pybind11;
using fi::Backend;
using fi::Dims;
using fi::Filter;
using fi::Image;

namespace {

// No forcecast: an array of the wrong dtype or layout is rejected, not copied.
using U8Array = py::array_t<uint8_t, py::array::c_style>;

Dims dims_of(const U8Array& a) {
  if (a.ndim() == 2) return {static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)), 1};
  if (a.ndim() == 3)
    return {static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)), static_cast<int>(a.shape(2))};
  throw py::value_error("image must have 2 or 3 dimensions");
}

// Runs `op` from src into dst on `backend`; on CUDA the pixels go up once and
// come down once.
template <class Op>
void apply(const U8Array& src, U8Array& dst, Backend backend, Op op) {
  const Dims in = dims_of(src), out = dims_of(dst);
  const uint8_t* s = src.data();
  uint8_t* d = dst.mutable_data();
  py::gil_scoped_release nogil;
  if (backend == Backend::CPU) {
    const Image si = Image::host_view(const_cast<uint8_t*>(s), in);
    Image di = Image::host_view(d, out);
    op(si, di);
  } else {
    const Image si = Image::upload(s, in, backend);
    Image di(out, backend);
    op(si, di);
    di.download(d);
  }
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastimg native kernels (use the fastimg package, not this module)";

  py::enum_<Backend>(m, "Backend").value("cpu", Backend::CPU).value("cuda", Backend::CUDA);
  py::enum_<Filter>(m, "Filter")
      .value("box", Filter::Box)
      .value("bilinear", Filter::Bilinear)
      .value("bicubic", Filter::Bicubic)
      .value("lanczos3", Filter::Lanczos3);

  m.def("cuda_status", [] {
    const fi::CudaStatus s = fi::cuda_status();
    py::dict d;
    d["compiled"] = s.compiled;
    d["available"] = s.available;
    d["device"] = s.device;
    d["reason"] = s.reason;
    return d;
  });

  m.def("resize", [](const U8Array& src, U8Array& dst, Filter f, Backend b) {
    apply(src, dst, b, [f](const Image& s, Image& d) { s.resize_into(d, f); });
  });
  m.def("gaussian_blur", [](const U8Array& src, U8Array& dst, double sigma, Backend b) {
    apply(src, dst, b, [sigma](const Image& s, Image& d) { s.gaussian_blur_into(d, sigma); });
  });
  m.def("quantize", [](const U8Array& src, U8Array& dst, int levels, bool dither, Backend b) {
    apply(src, dst, b, [=](const Image& s, Image& d) { s.quantize_into(d, levels, dither); });
  });

  py::class_<Image>(m, "Image")
      .def(py::init([](const U8Array& a, Backend b, bool copy) {
             const Dims d = dims_of(a);
             if (!copy && b == Backend::CPU) {
               // The image keeps the array alive; it may be released on a
               // thread that does not hold the GIL.
               auto* owner = new py::object(a);
               std::shared_ptr<uint8_t> p(const_cast<uint8_t*>(a.data()), [owner](uint8_t*) {
                 py::gil_scoped_acquire gil;
                 delete owner;
               });
               return Image::host_shared(std::move(p), d);
             }
             const uint8_t* p = a.data();
             py::gil_scoped_release nogil;
             return Image::upload(p, d, b);
           }),
           py::arg("pixels"), py::arg("backend"), py::arg("copy") = true)
      .def_property_readonly("dims", [](const Image& i) {
        const Dims d = i.dims();
        return py::make_tuple(d.h, d.w, d.c);
      })
      .def_property_readonly("backend", &Image::backend)
      .def("resize", &Image::resize, py::call_guard<py::gil_scoped_release>())
      .def("gaussian_blur", &Image::gaussian_blur, py::call_guard<py::gil_scoped_release>())
      .def("quantize", &Image::quantize, py::call_guard<py::gil_scoped_release>())
      .def("download", [](const Image& i, U8Array& dst) {
        if (dst.size() != static_cast<py::ssize_t>(i.dims().bytes()))
          throw py::value_error("destination has the wrong size");
        uint8_t* d = dst.mutable_data();
        py::gil_scoped_release nogil;
        i.download(d);
      });
}
