// The Python extension module gaussian_kl_cuda._C. It has no functions:
// importing it loads the shared library, whose static initialisers register
// the ops with the dispatcher (TORCH_LIBRARY / TORCH_LIBRARY_IMPL). Only
// setup.py builds this file; libtorch users link the CMake library instead.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "Native kernels of gaussian_kl_cuda, registered as torch.ops.gaussian_kl.*",
      -1,
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}
