// Schemas of the fused ops (the same strings as slowfast_fast/ops/_schemas.py; a test checks that),
// and the Python module stub so that `import slowfast_fast._C` loads this library.
// Kernels register themselves per device in csrc/cpu/ and csrc/cuda/; fake kernels and autograd
// are registered from Python (slowfast_fast/ops/_registration.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import slowfast_fast._C` only needs the library loaded: the ops register in static initialisers.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(slowfast_fast, m) {
  m.def(
      "lateral_concat(Tensor x_slow, Tensor x_fast, Tensor weight, int stride, int padding, "
      "Tensor? scale, Tensor? shift, bool relu) -> Tensor");
  m.def(
      "lateral_concat_grad_input(Tensor grad_out, Tensor x_fast, Tensor weight, Tensor? scale, "
      "Tensor? out, int stride, int padding) -> Tensor");
  m.def(
      "lateral_concat_grad_weight(Tensor grad_out, Tensor x_fast, Tensor weight, Tensor? scale, "
      "Tensor? out, int stride, int padding) -> (Tensor, Tensor, Tensor)");
  m.def("temporal_resample(Tensor x, float scale_factor) -> Tensor");
  m.def("temporal_resample_backward(Tensor grad_out, int t_in, float scale_factor) -> Tensor");
  m.def("pathway_split(Tensor x, float slow_scale, float fast_scale) -> (Tensor, Tensor)");
}
