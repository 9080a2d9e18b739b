// omniflux._omniflux: the C++ half of the Python package (python/omniflux/ is the other half, and
// docs/python.md the user's page). It binds the pipelines and a few components with torch's own
// pybind11, whose at::Tensor caster hands the user's torch.Tensor to the engine as the same
// TensorImpl (no copy, same device and dtype) and back.
//
// Every long call releases the GIL, takes the pipeline's gate (one call at a time per pipeline;
// other threads wait, a call from inside the pipeline's own callback is refused), and reports
// progress through one Python callable that may return False to cancel. Each callback also runs
// the interpreter's signal handlers, so Ctrl-C stops the work within one step or token and
// surfaces as KeyboardInterrupt once the engine has returned.
#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ATen/ops/from_blob.h>
#include <torch/csrc/utils/pybind.h>

#include "omniflux/build_info.h"
#include "omniflux/error.h"
#include "omniflux/io/image.h"
#include "omniflux/io/image_tensor.h"
#include "omniflux/models/clip_text.h"
#include "omniflux/models/flux_dit.h"
#include "omniflux/models/flux_vae.h"
#include "omniflux/models/t5_encoder.h"
#include "omniflux/pipelines/flux.h"
#include "omniflux/pipelines/uniworld.h"
#include "omniflux/pipelines/xomni.h"
#include "omniflux/runtime.h"

namespace py = pybind11;
using omniflux::Error;

namespace {

// ---- runtime options ------------------------------------------------------------------------------

omniflux::RuntimeOptions runtime(const std::string& device, const std::string& dtype, const std::string& offload,
                                 double max_vram, std::optional<int> threads, bool decode_graphs) {
  omniflux::RuntimeOptions rt;
  rt.device = device;
  rt.dtype = dtype;
  rt.offload = omniflux::parse_offload(offload);
  rt.max_vram_gb = max_vram;
  rt.decode_graphs = decode_graphs;
  if (threads) rt.num_threads = *threads;
  rt.validate();
  // threads=None leaves the process's thread count (shared with the user's torch) as it is.
  if (threads) omniflux::set_num_threads(*threads);
  return rt;
}

// ---- images -----------------------------------------------------------------------------------------

// The Python side (omniflux/_images.py) has already turned PIL images, numpy arrays and tensors
// into [H, W, 3] tensors; image_from_tensor checks them once more, and its errors name the
// argument here.
omniflux::Image image_in(const at::Tensor& t, const std::string& where) {
  try {
    return omniflux::image_from_tensor(t);
  } catch (const Error& e) {
    throw Error(e.what_part(), where, e.expected(), e.got());
  }
}

std::vector<omniflux::Image> images_in(const std::vector<at::Tensor>& tensors) {
  std::vector<omniflux::Image> out;
  out.reserve(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) out.push_back(image_in(tensors[i], "images[" + std::to_string(i) + "]"));
  return out;
}

// The engine's pixels as a uint8 [H, W, 3] CPU tensor that owns them: no copy.
at::Tensor image_tensor(omniflux::Image&& image) {
  auto* rgb = new std::vector<uint8_t>(std::move(image.rgb));
  return at::from_blob(
      rgb->data(), {image.height, image.width, 3}, [rgb](void*) { delete rgb; }, at::TensorOptions().dtype(at::kByte));
}

// ---- the gate: one call at a time per pipeline ------------------------------------------------------

struct Gate {
  std::mutex mutex;
  std::atomic<std::thread::id> owner{};
};

// Held while the engine runs; constructed with the GIL released so that a waiting thread never
// blocks the running one's callbacks.
class GateLock {
 public:
  explicit GateLock(Gate& g) : gate_(g) {
    if (gate_.owner.load() == std::this_thread::get_id())
      throw Error("the pipeline is already running on this thread (called from its own callback)", "pipeline",
                  "a call after the running one returns", "a nested call");
    lock_ = std::unique_lock<std::mutex>(gate_.mutex);
    gate_.owner.store(std::this_thread::get_id());
  }
  ~GateLock() { gate_.owner.store(std::thread::id{}); }

 private:
  Gate& gate_;
  std::unique_lock<std::mutex> lock_;
};

// ---- progress, cancellation, Ctrl-C ---------------------------------------------------------------

// Bridges the engine's callbacks to one Python callable(stage, step, total) -> False to cancel
// (None or anything else continues). Lives on the caller's stack while the GIL is released.
class Progress {
 public:
  explicit Progress(py::object fn) : fn_(std::move(fn)) {}

  bool operator()(const std::string& stage, int64_t step, int64_t total) {
    if (error_) return false;
    py::gil_scoped_acquire gil;
    try {
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (!fn_.is_none() && fn_(stage, step, total).ptr() == Py_False) return false;
    } catch (...) {
      error_ = std::current_exception();  // raised once the engine has returned
      return false;
    }
    return true;
  }
  // Python text stream (chat): on_text(piece) for each complete UTF-8 piece.
  bool text(const py::object& on_text, const std::string& piece) {
    if (error_) return false;
    if (on_text.is_none()) return true;
    py::gil_scoped_acquire gil;
    try {
      on_text(py::str(piece));
    } catch (...) {
      error_ = std::current_exception();
      return false;
    }
    return true;
  }
  // With the GIL held, after the engine returned: re-raise what a callback raised.
  void rethrow() {
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  py::object fn_;
  std::exception_ptr error_;
};

// Runs `work` with the GIL released under the gate, then re-raises a callback's exception.
template <class F>
auto run_gated(Gate& gate, Progress& progress, F&& work) {
  std::optional<decltype(work())> result;
  {
    py::gil_scoped_release nogil;
    GateLock lock(gate);
    result.emplace(work());
  }
  progress.rethrow();
  return std::move(*result);
}

py::object image_out(std::optional<omniflux::Image>&& image) {
  if (!image) return py::none();
  return py::cast(image_tensor(std::move(*image)));
}

// ---- chat turns from Python: [(role, [str | Tensor, ...]), ...] (omniflux/_chat.py builds them) -----

std::vector<omniflux::ChatTurn> turns_in(const std::vector<std::pair<std::string, std::vector<py::object>>>& turns) {
  std::vector<omniflux::ChatTurn> out;
  for (size_t i = 0; i < turns.size(); ++i) {
    const auto& [role, parts] = turns[i];
    omniflux::ChatTurn t{role, {}};
    for (size_t j = 0; j < parts.size(); ++j) {
      const py::object& p = parts[j];
      if (py::isinstance<py::str>(p))
        t.parts.push_back(omniflux::ChatPart::make_text(p.cast<std::string>()));
      else
        t.parts.push_back(omniflux::ChatPart::make_image(
            image_in(p.cast<at::Tensor>(), "messages[" + std::to_string(i) + "].content[" + std::to_string(j) + "]")));
    }
    out.push_back(std::move(t));
  }
  return out;
}

struct ChatArgs {
  int64_t max_new_tokens;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k;
  std::vector<std::string> stop;
  uint64_t seed;
};

omniflux::ChatOptions chat_options(const ChatArgs& a) {
  omniflux::ChatOptions o;
  o.max_new_tokens = a.max_new_tokens;
  o.temperature = a.temperature;
  o.top_p = a.top_p;
  o.min_p = a.min_p;
  o.repetition_penalty = a.repetition_penalty;
  o.top_k = a.top_k;
  o.stop = a.stop;
  o.seed = a.seed;
  return o;
}

py::object chat_result(const std::optional<omniflux::ChatAnswer>& a) {
  if (!a) return py::none();
  return py::make_tuple(a->text, a->prompt_tokens, a->completion_tokens, omniflux::sampling::finish_reason_name(a->finish));
}

// ---- the bound pipelines ----------------------------------------------------------------------------

struct PyFlux {
  omniflux::FluxPipeline pipe;
  std::shared_ptr<Gate> gate = std::make_shared<Gate>();
};
struct PyUniWorld {
  omniflux::UniWorldPipeline pipe;
  std::shared_ptr<Gate> gate = std::make_shared<Gate>();
};
struct PyXOmni {
  omniflux::XOmniPipeline pipe;
  std::shared_ptr<Gate> gate = std::make_shared<Gate>();
};

// UniWorld's and X-Omni's chat(turns, options, on_text, callback): the same binding for both.
template <class Py>
py::object chat(Py& self, const std::vector<std::pair<std::string, std::vector<py::object>>>& turns,
                const ChatArgs& args, py::object on_text, py::object callback) {
  auto t = turns_in(turns);
  Progress progress(std::move(callback));
  auto o = chat_options(args);
  return chat_result(run_gated(*self.gate, progress, [&] {
    return self.pipe.chat(t, o, [&](const std::string& piece) { return progress.text(on_text, piece); }, std::ref(progress));
  }));
}

// The Error translator: omniflux.Error (defined in Python, omniflux/_errors.py) with the four parts.
py::object* g_error_type = nullptr;

}  // namespace

PYBIND11_MODULE(_omniflux, m) {
  m.doc() = "The compiled half of omniflux; use the `omniflux` package.";
  const auto info = omniflux::build_info();
  m.attr("__version__") = info.version;
  m.attr("torch_version") = info.torch_version;  // omniflux/__init__.py checks it against torch's

  // Leaked on purpose: the type must outlive every translation, including during interpreter exit.
  g_error_type = new py::object(py::module_::import("omniflux._errors").attr("Error"));
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      py::object exc = (*g_error_type)(e.what_part(), e.where(), e.expected(), e.got());
      PyErr_SetObject(g_error_type->ptr(), exc.ptr());
    }
  });

  m.def("_error_message", [](const std::string& what, const std::string& where, const std::string& expected,
                              const std::string& got) { return std::string(Error(what, where, expected, got).what()); });
  m.def("build_info", &omniflux::build_info_text, "What this build holds (version, LibTorch, CUDA), as text.");
  m.def("set_num_threads", &omniflux::set_num_threads, py::arg("n"),
        "CPU threads of everything that computes (LibTorch, MKL, OpenBLAS); 0 = all hardware threads.");
  m.def("load_image", [](const std::string& path) { return image_tensor(omniflux::load_image(path)); },
        py::arg("path"), "Decodes a PNG, JPEG or WebP file as the command-line tools do: uint8 [H, W, 3].");
  m.def("encode_png",
        [](const at::Tensor& image, const std::vector<std::pair<std::string, std::string>>& text) {
          auto bytes = omniflux::encode_png(image_in(image, "image"), text);
          return py::bytes(reinterpret_cast<const char*>(bytes.data()), bytes.size());
        },
        py::arg("image"), py::arg("text") = std::vector<std::pair<std::string, std::string>>{},
        "The PNG the command-line tools write for a uint8 [H, W, 3] image, with tEXt chunks.");

#define OMNIFLUX_RUNTIME_ARGS                                                                        \
  py::arg("device") = "cpu", py::arg("dtype") = "auto", py::arg("offload") = "none", py::arg("max_vram") = 0.0, \
      py::arg("threads") = py::none(), py::arg("decode_graphs") = false

  // ---- FLUX.1-dev ----
  py::class_<PyFlux>(m, "Flux")
      .def_static(
          "load",
          [](const std::string& folder, const std::string& device, const std::string& dtype, const std::string& offload,
             double max_vram, std::optional<int> threads,
             bool decode_graphs) {
            auto rt = runtime(device, dtype, offload, max_vram, threads, decode_graphs);
            py::gil_scoped_release nogil;
            return PyFlux{omniflux::FluxPipeline::load(folder, rt)};
          },
          py::arg("folder"), OMNIFLUX_RUNTIME_ARGS)
      .def(
          "generate",
          [](PyFlux& self, const std::string& prompt, std::optional<std::string> prompt_2,
             std::optional<std::string> negative_prompt, int64_t width, int64_t height, int64_t steps, double guidance,
             double true_cfg_scale, int64_t max_sequence_length, uint64_t seed, py::object callback) {
            omniflux::FluxOptions o;
            o.prompt = prompt;
            o.prompt_2 = std::move(prompt_2);
            o.negative_prompt = std::move(negative_prompt);
            o.width = width;
            o.height = height;
            o.steps = steps;
            o.guidance = guidance;
            o.true_cfg_scale = true_cfg_scale;
            o.max_sequence_length = max_sequence_length;
            o.seed = seed;
            Progress progress(std::move(callback));
            return image_out(run_gated(*self.gate, progress, [&] { return self.pipe.generate(o, std::ref(progress)); }));
          },
          py::arg("prompt"), py::arg("prompt_2"), py::arg("negative_prompt"), py::arg("width"), py::arg("height"),
          py::arg("steps"), py::arg("guidance"), py::arg("true_cfg_scale"), py::arg("max_sequence_length"),
          py::arg("seed"), py::arg("callback"));

  // ---- UniWorld-V1 ----
  py::class_<PyUniWorld>(m, "UniWorld")
      .def_static(
          "load",
          [](const std::string& model, const std::string& flux, const std::string& siglip, const std::string& device,
             const std::string& dtype, const std::string& offload, double max_vram, std::optional<int> threads,
             bool decode_graphs) {
            auto rt = runtime(device, dtype, offload, max_vram, threads, decode_graphs);
            py::gil_scoped_release nogil;
            return PyUniWorld{omniflux::UniWorldPipeline::load(model, flux, siglip, rt)};
          },
          py::arg("model"), py::arg("flux"), py::arg("siglip"), OMNIFLUX_RUNTIME_ARGS)
      .def(
          "run",
          [](PyUniWorld& self, const std::string& prompt, const std::vector<at::Tensor>& images, int64_t width,
             int64_t height, bool snap_to_ratio, int64_t steps, double guidance, uint64_t seed, bool use_t5,
             const std::string& task, int64_t max_new_tokens, py::object callback) -> py::object {
            omniflux::UniWorldOptions o;
            o.prompt = prompt;
            o.images = images_in(images);
            o.width = width;
            o.height = height;
            o.snap_to_ratio = snap_to_ratio;
            o.steps = steps;
            o.guidance = guidance;
            o.seed = seed;
            o.use_t5 = use_t5;
            o.task = omniflux::parse_uniworld_task(task);
            o.max_new_tokens = max_new_tokens;
            Progress progress(std::move(callback));
            auto r = run_gated(*self.gate, progress, [&] { return self.pipe.run(o, std::ref(progress)); });
            if (!r) return py::none();
            if (auto* text = std::get_if<std::string>(&*r)) return py::str(*text);
            return py::cast(image_tensor(std::move(std::get<omniflux::Image>(*r))));
          },
          py::arg("prompt"), py::arg("images"), py::arg("width"), py::arg("height"), py::arg("snap_to_ratio"),
          py::arg("steps"), py::arg("guidance"), py::arg("seed"), py::arg("use_t5"), py::arg("task"),
          py::arg("max_new_tokens"), py::arg("callback"))
      .def(
          "chat",
          &chat<PyUniWorld>,
          py::arg("turns"), py::arg("options"), py::arg("on_text"), py::arg("callback"))
      .def_static("output_size", [](int64_t width, int64_t height, const std::vector<std::pair<int, int>>& image_sizes,
                                    bool snap_to_ratio) {
        omniflux::UniWorldOptions o;
        o.width = width;
        o.height = height;
        o.snap_to_ratio = snap_to_ratio;
        for (auto [w, h] : image_sizes) o.images.push_back(omniflux::Image{w, h, {}});
        return omniflux::UniWorldPipeline::output_size(o);  // (height, width)
      });

  py::class_<ChatArgs>(m, "ChatOptions")
      .def(py::init<int64_t, std::optional<double>, std::optional<double>, std::optional<double>, std::optional<double>,
                    std::optional<int64_t>, std::vector<std::string>, uint64_t>(),
           py::arg("max_new_tokens"), py::arg("temperature"), py::arg("top_p"), py::arg("min_p"),
           py::arg("repetition_penalty"), py::arg("top_k"), py::arg("stop"), py::arg("seed"));

  // ---- X-Omni ----
  py::class_<omniflux::XOmniCodes>(m, "ImageCodes", "X-Omni image codes: a rows x cols grid, row-major, and the decoder's prompt.")
      .def(py::init([](std::string prompt, int64_t rows, int64_t cols, std::vector<int64_t> codes) {
             return omniflux::XOmniCodes{std::move(prompt), rows, cols, std::move(codes)};
           }),
           py::arg("prompt"), py::arg("rows"), py::arg("cols"), py::arg("codes"))
      .def_readwrite("prompt", &omniflux::XOmniCodes::prompt)
      .def_readwrite("rows", &omniflux::XOmniCodes::rows)
      .def_readwrite("cols", &omniflux::XOmniCodes::cols)
      .def_readwrite("codes", &omniflux::XOmniCodes::codes)
      .def("__repr__", [](const omniflux::XOmniCodes& c) {
        return "ImageCodes(rows=" + std::to_string(c.rows) + ", cols=" + std::to_string(c.cols) + ", " +
               std::to_string(c.codes.size()) + " codes)";
      });

  py::class_<PyXOmni>(m, "XOmni")
      .def_static(
          "load",
          [](const std::string& model, const std::string& flux, const std::string& device, const std::string& dtype,
             const std::string& offload, double max_vram, std::optional<int> threads,
             bool decode_graphs) {
            auto rt = runtime(device, dtype, offload, max_vram, threads, decode_graphs);
            py::gil_scoped_release nogil;
            return PyXOmni{omniflux::XOmniPipeline::load(model, flux, rt)};
          },
          py::arg("model"), py::arg("flux"), OMNIFLUX_RUNTIME_ARGS)
      .def(
          "generate_codes",
          [](PyXOmni& self, const std::string& prompt, int64_t width, int64_t height, double cfg_scale,
             const std::string& negative_prompt, std::optional<double> temperature, std::optional<int64_t> top_k,
             std::optional<double> top_p, std::optional<double> min_p, uint64_t seed, py::object callback) -> py::object {
            omniflux::XOmniOptions o;
            o.prompt = prompt;
            o.width = width;
            o.height = height;
            o.cfg_scale = cfg_scale;
            o.negative_prompt = negative_prompt;
            if (temperature) o.sampling.temperature = *temperature;
            if (top_k) o.sampling.top_k = *top_k;
            if (top_p) o.sampling.top_p = *top_p;
            if (min_p) o.sampling.min_p = *min_p;
            o.seed = seed;
            Progress progress(std::move(callback));
            auto codes = run_gated(*self.gate, progress, [&] {
              return self.pipe.generate_codes(o, std::ref(progress));
            });
            return codes ? py::cast(std::move(*codes)) : py::none();
          },
          py::arg("prompt"), py::arg("width"), py::arg("height"), py::arg("cfg_scale"), py::arg("negative_prompt"),
          py::arg("temperature"), py::arg("top_k"), py::arg("top_p"), py::arg("min_p"), py::arg("seed"),
          py::arg("callback"))
      .def(
          "decode",
          [](PyXOmni& self, const omniflux::XOmniCodes& codes, std::optional<int64_t> steps, std::optional<double> cfg_scale,
             std::optional<double> cfg_scale_2, uint64_t seed, py::object callback) {
            omniflux::XOmniDecodeOptions o;
            o.steps = steps;
            o.cfg_scale = cfg_scale;
            o.cfg_scale_2 = cfg_scale_2;
            o.seed = seed;
            Progress progress(std::move(callback));
            return image_out(run_gated(*self.gate, progress, [&] { return self.pipe.decode_codes(codes, o, std::ref(progress)); }));
          },
          py::arg("codes"), py::arg("steps"), py::arg("cfg_scale"), py::arg("cfg_scale_2"), py::arg("seed"),
          py::arg("callback"))
      .def(
          "chat_image",
          [](PyXOmni& self, const at::Tensor& image, const std::string& question, int64_t max_new_tokens,
             py::object on_text, py::object callback) -> py::object {
            auto im = image_in(image, "image");
            Progress progress(std::move(callback));
            auto a = run_gated(*self.gate, progress, [&] {
              return self.pipe.chat(im, question, [&](const std::string& piece) { return progress.text(on_text, piece); },
                                    max_new_tokens, std::ref(progress));
            });
            return a ? py::object(py::str(*a)) : py::object(py::none());
          },
          py::arg("image"), py::arg("question"), py::arg("max_new_tokens"), py::arg("on_text"), py::arg("callback"))
      .def(
          "chat",
          &chat<PyXOmni>,
          py::arg("turns"), py::arg("options"), py::arg("on_text"), py::arg("callback"))
      .def_property_readonly("has_decoder", [](const PyXOmni& self) { return self.pipe.has_decoder(); });

  // ---- components (omniflux.models): torch tensors in and out, no pipeline around them ----
  py::module_ models = m.def_submodule("models", "Single components on torch tensors.");
  auto dtype_of = [](c10::ScalarType t) {
    return py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(torch::getTHPDtype(t)));
  };
  py::class_<omniflux::FluxTransformer>(models, "FluxTransformer")
      .def_static(
          "load",
          [](const std::string& folder, const std::string& device, const std::string& dtype) {
            auto rt = runtime(device, dtype, "none", 0, std::nullopt, false);
            py::gil_scoped_release nogil;
            return omniflux::FluxTransformer::load(folder, rt);
          },
          py::arg("folder"), py::arg("device") = "cpu", py::arg("dtype") = "auto")
      .def(
          "forward",
          // diffusers FluxTransformer2DModel.forward's argument names.
          [](const omniflux::FluxTransformer& dit, const at::Tensor& hidden_states, const at::Tensor& encoder_hidden_states,
             const at::Tensor& pooled_projections, const at::Tensor& timestep, const at::Tensor& img_ids,
             const at::Tensor& txt_ids, std::optional<at::Tensor> guidance) {
            omniflux::FluxDiTInputs in;
            in.hidden_states = hidden_states;
            in.encoder_hidden_states = encoder_hidden_states;
            in.pooled_projections = pooled_projections;
            in.timestep = timestep;
            in.img_ids = img_ids;
            in.txt_ids = txt_ids;
            if (guidance) in.guidance = *guidance;
            return dit.forward(in);
          },
          py::arg("hidden_states"), py::arg("encoder_hidden_states"), py::arg("pooled_projections"),
          py::arg("timestep"), py::arg("img_ids"), py::arg("txt_ids"), py::arg("guidance") = py::none(),
          py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("dtype", [dtype_of](const omniflux::FluxTransformer& d) { return dtype_of(d.dtype()); });
  py::class_<omniflux::FluxVae>(models, "FluxVae")
      .def_static(
          "load",
          [](const std::string& folder, const std::string& device, const std::string& dtype) {
            auto rt = runtime(device, dtype, "none", 0, std::nullopt, false);
            py::gil_scoped_release nogil;
            return omniflux::FluxVae::load(folder, rt);
          },
          py::arg("folder"), py::arg("device") = "cpu", py::arg("dtype") = "auto")
      .def("decode", &omniflux::FluxVae::decode, py::arg("z"), py::call_guard<py::gil_scoped_release>())
      .def(
          "encode",
          [](const omniflux::FluxVae& v, const at::Tensor& image) {
            auto d = v.encode(image);
            return std::make_pair(d.mean, d.logvar);
          },
          py::arg("image"), py::call_guard<py::gil_scoped_release>())
      .def("scale_latents", &omniflux::FluxVae::scale_latents, py::arg("z"))
      .def("unscale_latents", &omniflux::FluxVae::unscale_latents, py::arg("latents"))
      .def_property_readonly("dtype", [dtype_of](const omniflux::FluxVae& v) { return dtype_of(v.dtype()); });
  py::class_<omniflux::ClipTextModel>(models, "ClipTextModel")
      .def_static(
          "load",
          [](const std::string& folder, const std::string& device, const std::string& dtype) {
            auto rt = runtime(device, dtype, "none", 0, std::nullopt, false);
            py::gil_scoped_release nogil;
            return omniflux::ClipTextModel::load(folder, rt);
          },
          py::arg("folder"), py::arg("device") = "cpu", py::arg("dtype") = "auto")
      .def(
          "forward",
          [](const omniflux::ClipTextModel& c, const at::Tensor& ids) {
            auto o = c.forward(ids);
            return std::make_pair(o.last_hidden_state, o.pooler_output);
          },
          py::arg("input_ids"), py::call_guard<py::gil_scoped_release>());
  py::class_<omniflux::T5Encoder>(models, "T5Encoder")
      .def_static(
          "load",
          [](const std::string& folder, const std::string& device, const std::string& dtype) {
            auto rt = runtime(device, dtype, "none", 0, std::nullopt, false);
            py::gil_scoped_release nogil;
            return omniflux::T5Encoder::load(folder, rt);
          },
          py::arg("folder"), py::arg("device") = "cpu", py::arg("dtype") = "auto")
      .def("forward", &omniflux::T5Encoder::forward, py::arg("input_ids"), py::call_guard<py::gil_scoped_release>());
#undef OMNIFLUX_RUNTIME_ARGS

  // ---- timing hooks for tools/dev/bench/python_overhead.py: the engine calls the bound methods
  // make, on the same pipeline objects, timed in C++ with no Python in between (milliseconds) ----
  auto ms_since = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  m.def("_time_uniworld_generate", [ms_since](PyUniWorld& self, const std::string& prompt, int64_t width, int64_t height,
                                              int64_t steps, uint64_t seed) {
    omniflux::UniWorldOptions o;
    o.prompt = prompt;
    o.width = width;
    o.height = height;
    o.steps = steps;
    o.seed = seed;
    o.task = omniflux::UniWorldTask::Image;
    py::gil_scoped_release nogil;
    GateLock lock(*self.gate);
    const auto t0 = std::chrono::steady_clock::now();
    (void)self.pipe.run(o);
    return ms_since(t0);
  });
  m.def("_time_xomni_chat", [ms_since](PyXOmni& self, const at::Tensor& image, const std::string& question,
                                       int64_t max_new_tokens) {
    const auto im = image_in(image, "image");
    py::gil_scoped_release nogil;
    GateLock lock(*self.gate);
    const auto t0 = std::chrono::steady_clock::now();
    (void)self.pipe.chat(im, question, {}, max_new_tokens);
    return ms_since(t0);
  });
}
