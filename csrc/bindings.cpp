// The Python face of the kernels: argument checking and documentation live in
// python/fastimg; this file only converts types and releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "fastimg/cpu.h"
#include "fastimg/dlpack.h"
#include "fastimg/errors.h"
#include "fastimg/image.h"
#include "fastimg/status.h"
#include "fastimg/timing.h"

namespace py = pybind11;
using fi::Backend;
using fi::Dims;
using fi::Filter;
using fi::Image;

namespace {

// The kernels' exception types (fastimg.KernelError and its subclasses), made
// here so that each gets its Python bases; kept alive for the translator.
PyObject* kernel_error = nullptr;
PyObject* device_out_of_memory = nullptr;
PyObject* device_lost = nullptr;

void translate(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const fi::DeviceOutOfMemory& e) {
    PyErr_SetString(device_out_of_memory, e.what());
  } catch (const fi::DeviceLost& e) {
    PyErr_SetString(device_lost, e.what());
  } catch (const fi::KernelError& e) {
    PyErr_SetString(kernel_error, e.what());
  }
}

// Pixels cross as C-contiguous arrays of uint8, uint16 or float32; an array of
// another dtype or layout is rejected, not copied.
using Pixels = py::array;

fi::PixelType type_of(const py::array& a) {
  if (py::isinstance<py::array_t<uint8_t>>(a)) return fi::PixelType::U8;
  if (py::isinstance<py::array_t<uint16_t>>(a)) return fi::PixelType::U16;
  if (py::isinstance<py::array_t<float>>(a)) return fi::PixelType::F32;
  throw py::type_error("pixels must be uint8, uint16 or float32");
}

// numpy's name of a pixel type (an array interface's typestr).
const char* typestr(fi::PixelType t) {
  return t == fi::PixelType::U8 ? "|u1" : t == fi::PixelType::U16 ? "<u2" : "<f4";
}

fi::PixelType type_named(const std::string& name) {
  for (const auto t : {fi::PixelType::U8, fi::PixelType::U16, fi::PixelType::F32})
    if (name == typestr(t)) return t;
  throw py::type_error("pixels must be uint8, uint16 or float32, got " + name);
}

Dims dims_of(const Pixels& a) {
  if (!(a.flags() & py::array::c_style)) throw py::value_error("pixels must be C-contiguous");
  const fi::PixelType t = type_of(a);
  if (a.ndim() == 2) return {static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)), 1, t};
  if (a.ndim() == 3)
    return {static_cast<int>(a.shape(0)), static_cast<int>(a.shape(1)),
            static_cast<int>(a.shape(2)), t};
  throw py::value_error("image must have 2 or 3 dimensions");
}

uint8_t* bytes_of(Pixels& a) { return static_cast<uint8_t*>(a.mutable_data()); }
const uint8_t* bytes_of(const Pixels& a) { return static_cast<const uint8_t*>(a.data()); }

// Runs `op` from src into dst on `backend` (on the CPU with up to `threads`
// threads); on CUDA the pixels go up once and come down once.
template <class Op>
void apply(const Pixels& src, Pixels& dst, Backend backend, Op op, int threads = 1) {
  const Dims in = dims_of(src), out = dims_of(dst);
  if (in.type != out.type) throw py::type_error("src and dst must have the same dtype");
  const uint8_t* s = bytes_of(src);
  uint8_t* d = bytes_of(dst);
  py::gil_scoped_release nogil;
  if (backend == Backend::CPU) {
    const fi::CpuThreads use(threads);
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

// Stages described as ("resize", width, height, filter) or ("blur", sigma)
// steps from an image of in_w x in_h; intermediates stay unrounded floats.
fi::PlanPtr plan_of(const py::list& steps, int w, int h) {
  std::vector<fi::Stage> stages;
  for (const py::handle step : steps) {
    const auto t = step.cast<py::tuple>();
    const auto kind = t[0].cast<std::string>();
    if (kind == "resize") {
      const int nw = t[1].cast<int>(), nh = t[2].cast<int>();
      const auto f = t[3].cast<Filter>();
      stages.push_back({fi::resize_pass(w, nw, f), fi::resize_pass(h, nh, f)});
      w = nw;
      h = nh;
    } else if (kind == "blur") {
      for (auto& s : fi::gaussian_stages(w, h, t[1].cast<double>())) stages.push_back(std::move(s));
    } else {
      throw py::value_error("a step is (\"resize\", width, height, filter) or (\"blur\", sigma)");
    }
  }
  if (stages.empty()) throw py::value_error("no steps");
  return fi::make_plan(std::move(stages));
}

// An image's pixels lent out through DLPack: the tensor keeps them alive
// until its consumer (or, unconsumed, the capsule) calls the deleter.
struct Lent {
  fi::dl::ManagedTensor tensor{};
  std::shared_ptr<uint8_t> pixels;
  int64_t shape[3] = {};
};

void drop_unconsumed(PyObject* capsule) {
  if (PyCapsule_IsValid(capsule, "used_dltensor")) return;  // its consumer owns it now
  auto* m = static_cast<fi::dl::ManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
  if (m == nullptr) return PyErr_WriteUnraisable(capsule);
  m->deleter(m);
}

py::capsule lend(const Image& img, const std::vector<int64_t>& shape) {
  if (shape.size() < 2 || shape.size() > 3) throw py::value_error("shape must have 2 or 3 sides");
  auto lent = std::make_unique<Lent>();
  lent->pixels = img.data();
  std::copy(shape.begin(), shape.end(), lent->shape);
  fi::dl::Tensor& t = lent->tensor.dl_tensor;
  t.data = lent->pixels.get();
  t.device = {img.backend() == Backend::CPU ? fi::dl::kCPU : fi::dl::kCUDA, 0};
  t.ndim = static_cast<int32_t>(shape.size());
  const fi::PixelType type = img.dims().type;
  t.dtype = {type == fi::PixelType::F32 ? fi::dl::kFloat : fi::dl::kUInt,
             static_cast<uint8_t>(8 * fi::pixel_bytes(type)), 1};
  t.shape = lent->shape;
  lent->tensor.manager_ctx = lent.get();
  lent->tensor.deleter = [](fi::dl::ManagedTensor* m) {
    delete static_cast<Lent*>(m->manager_ctx);
  };
  PyObject* capsule = PyCapsule_New(&lent->tensor, "dltensor", drop_unconsumed);
  if (capsule == nullptr) throw py::error_already_set();
  lent.release();  // the capsule's now
  return py::reinterpret_steal<py::capsule>(capsule);
}

// Another library's tensor taken from its "dltensor" capsule, described as
// __cuda_array_interface__ describes an array; dropping this releases it.
class Borrowed {
 public:
  explicit Borrowed(const py::capsule& capsule) {
    m_ = static_cast<fi::dl::ManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
    if (m_ == nullptr) throw py::error_already_set();
    if (PyCapsule_SetName(capsule.ptr(), "used_dltensor") != 0) throw py::error_already_set();
  }
  Borrowed(const Borrowed&) = delete;
  Borrowed& operator=(const Borrowed&) = delete;
  ~Borrowed() {
    if (m_->deleter != nullptr) m_->deleter(m_);
  }

  py::dict interface() const {
    const fi::dl::Tensor& t = m_->dl_tensor;
    const size_t item = t.dtype.bits / 8;
    py::list shape, strides;
    for (int i = 0; i < t.ndim; ++i) {
      shape.append(t.shape[i]);
      if (t.strides != nullptr) strides.append(t.strides[i] * static_cast<int64_t>(item));
    }
    const char kind = t.dtype.code == fi::dl::kInt                           ? 'i'
                      : t.dtype.code == fi::dl::kUInt                        ? 'u'
                      : t.dtype.code == fi::dl::kFloat && t.dtype.lanes == 1 ? 'f'
                                                                             : 'V';
    py::dict d;
    d["data"] = py::make_tuple(reinterpret_cast<uintptr_t>(t.data) + t.byte_offset, false);
    d["shape"] = py::tuple(shape);
    d["strides"] = t.strides != nullptr ? py::object(py::tuple(strides)) : py::none();
    d["typestr"] = std::string(item == 1 ? "|" : "<") + kind + std::to_string(item);
    d["device"] = py::make_tuple(t.device.device_type, t.device.device_id);
    return d;
  }

 private:
  fi::dl::ManagedTensor* m_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastimg native kernels (use the fastimg package, not this module)";

  kernel_error = PyErr_NewExceptionWithDoc(
      "fastimg.KernelError",
      "A kernel backend failed (a CUDA error); the message names the call and source line.",
      PyExc_RuntimeError, nullptr);
  const py::tuple oom_bases =
      py::make_tuple(py::handle(kernel_error), py::handle(PyExc_MemoryError));
  device_out_of_memory = PyErr_NewExceptionWithDoc(
      "fastimg.DeviceOutOfMemory",
      "The GPU ran out of memory. Transient: nothing is broken, a later call may succeed.",
      oom_bases.ptr(), nullptr);
  device_lost = PyErr_NewExceptionWithDoc(
      "fastimg.DeviceLost",
      "The GPU failed with a sticky error (illegal address, ECC, lost device): CUDA is unusable "
      "for the rest of the process, which goes on with the CPU backend.",
      kernel_error, nullptr);
  if (!kernel_error || !device_out_of_memory || !device_lost) throw py::error_already_set();
  m.attr("KernelError") = py::reinterpret_borrow<py::object>(kernel_error);
  m.attr("DeviceOutOfMemory") = py::reinterpret_borrow<py::object>(device_out_of_memory);
  m.attr("DeviceLost") = py::reinterpret_borrow<py::object>(device_lost);
  py::register_exception_translator(translate);

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
    d["emulated"] = s.emulated;
    d["available"] = s.available;
    d["lost"] = s.lost;
    d["device"] = s.device;
    d["reason"] = s.reason;
    return d;
  });

  m.def("cuda_lost", [] { return fi::cuda_status().lost; });
  m.def("cpu_target", [] { return std::string(fi::cpu_target()); });
  m.def("cuda_time_kernels", &fi::cuda_time_kernels, py::arg("on"));
  m.def("cuda_kernel_ms", &fi::cuda_kernel_ms);

  m.def(
      "resize",
      [](const Pixels& src, Pixels& dst, Filter f, Backend b, int threads) {
        apply(
            src, dst, b, [f](const Image& s, Image& d) { s.resize_into(d, f); }, threads);
      },
      py::arg("src"), py::arg("dst"), py::arg("filter"), py::arg("backend"),
      py::arg("threads") = 1);
  m.def(
      "gaussian_blur",
      [](const Pixels& src, Pixels& dst, double sigma, Backend b, int threads) {
        apply(
            src, dst, b, [sigma](const Image& s, Image& d) { s.gaussian_blur_into(d, sigma); },
            threads);
      },
      py::arg("src"), py::arg("dst"), py::arg("sigma"), py::arg("backend"), py::arg("threads") = 1);
  m.def(
      "quantize",
      [](const Pixels& src, Pixels& dst, int levels, bool dither, Backend b, int threads) {
        apply(
            src, dst, b, [=](const Image& s, Image& d) { s.quantize_into(d, levels, dither); },
            threads);
      },
      py::arg("src"), py::arg("dst"), py::arg("levels"), py::arg("dither"), py::arg("backend"),
      py::arg("threads") = 1);
  // Several resize and blur steps as one chain of stages (the tests use it
  // for chains of three and more, which no public call makes).
  m.def(
      "separable",
      [](const Pixels& src, Pixels& dst, const py::list& steps, Backend b, int threads) {
        const Dims in = dims_of(src);
        const fi::PlanPtr plan = plan_of(steps, in.w, in.h);
        apply(
            src, dst, b, [&plan](const Image& s, Image& d) { s.separable_into(d, plan); }, threads);
      },
      py::arg("src"), py::arg("dst"), py::arg("steps"), py::arg("backend"), py::arg("threads") = 1);

  py::class_<Borrowed>(m, "DLPackView").def_property_readonly("interface", &Borrowed::interface);
  m.def(
      "dlpack_view", [](const py::capsule& c) { return std::make_unique<Borrowed>(c); },
      py::arg("capsule"));
  // A copy of another library's device array, made on the device.
  m.def(
      "image_from_device",
      [](uintptr_t pointer, const std::tuple<int, int, int>& dims, const std::string& dtype,
         uintptr_t stream) {
        const Dims d{std::get<0>(dims), std::get<1>(dims), std::get<2>(dims), type_named(dtype)};
        py::gil_scoped_release nogil;
        return Image::copy_of(reinterpret_cast<const uint8_t*>(pointer), d, Backend::CUDA, stream);
      },
      py::arg("pointer"), py::arg("dims"), py::arg("dtype"), py::arg("stream"));

  py::class_<Image>(m, "Image")
      .def(py::init([](const Pixels& a, Backend b, bool copy) {
             const Dims d = dims_of(a);
             if (!copy && b == Backend::CPU) {
               // The image keeps the array alive; it may be released on a
               // thread that does not hold the GIL.
               auto* owner = new py::object(a);
               std::shared_ptr<uint8_t> p(const_cast<uint8_t*>(bytes_of(a)), [owner](uint8_t*) {
                 py::gil_scoped_acquire gil;
                 delete owner;
               });
               return Image::host_shared(std::move(p), d);
             }
             const uint8_t* p = bytes_of(a);
             py::gil_scoped_release nogil;
             return Image::upload(p, d, b);
           }),
           py::arg("pixels"), py::arg("backend"), py::arg("copy") = true)
      .def_property_readonly("dims",
                             [](const Image& i) {
                               const Dims d = i.dims();
                               return py::make_tuple(d.h, d.w, d.c);
                             })
      .def_property_readonly("backend", &Image::backend)
      .def_property_readonly("typestr", [](const Image& i) { return typestr(i.dims().type); })
      .def_property_readonly(
          "data_ptr", [](const Image& i) { return reinterpret_cast<uintptr_t>(i.data().get()); })
      .def("lend", &lend, py::arg("shape"))
      .def("resize", &Image::resize, py::arg("width"), py::arg("height"), py::arg("filter"),
           py::call_guard<py::gil_scoped_release>())
      .def("gaussian_blur", &Image::gaussian_blur, py::arg("sigma"),
           py::call_guard<py::gil_scoped_release>())
      .def("quantize", &Image::quantize, py::arg("levels"), py::arg("dither"),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "download",
          [](const Image& i, Pixels& dst) {
            if (dst.nbytes() != static_cast<py::ssize_t>(i.dims().bytes()) ||
                type_of(dst) != i.dims().type || !(dst.flags() & py::array::c_style))
              throw py::value_error("destination has the wrong size or dtype");
            uint8_t* d = bytes_of(dst);
            py::gil_scoped_release nogil;
            i.download(d);
          },
          py::arg("dst"));
}
