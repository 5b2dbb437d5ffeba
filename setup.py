"""Build gaussian_kl_cuda._C.

CUDA kernels are compiled when a CUDA toolkit and a CUDA build of torch are
present. Overrides: FORCE_CUDA=1 (require them, fail otherwise), USE_CUDA=0
(CPU only). TORCH_CUDA_ARCH_LIST is respected; the default is sm_80 and
sm_90 machine code plus sm_90 PTX. Install with --no-build-isolation (an
isolated build would pull a second torch and link against it).
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _is_toolkit(home):
    return bool(home) and os.path.isfile(os.path.join(home, "bin", "nvcc")) and os.path.isfile(
        os.path.join(home, "include", "cuda_runtime.h")
    )


def find_cuda_home():
    """CUDA_HOME / CUDA_PATH, then the nvcc on PATH, then /usr/local/cuda.

    The nvcc first on PATH may be a wrapper script (e.g. /usr/local/bin/nvcc
    that execs the real one), in which case torch's guess (dirname of dirname
    of nvcc) is wrong: we only accept a directory that has bin/nvcc and
    include/cuda_runtime.h.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if _is_toolkit(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if _is_toolkit(home):
            return home
        # A wrapper script: look for the toolkit path it names.
        try:
            with open(nvcc, "r", errors="ignore") as f:
                text = f.read(4096)
            for tok in text.replace('"', " ").replace("'", " ").split():
                if tok.endswith("/bin/nvcc"):
                    home = os.path.dirname(os.path.dirname(tok))
                    if _is_toolkit(home):
                        return home
        except OSError:
            pass
    for home in ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True):
        if _is_toolkit(home):
            return home
    return None


def resolve_config():
    import torch

    cuda_home = find_cuda_home()
    if cuda_home:
        # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
        os.environ["CUDA_HOME"] = cuda_home
    force = os.environ.get("FORCE_CUDA", "0") == "1"
    use = os.environ.get("USE_CUDA", "1") != "0"
    torch_cuda = torch.version.cuda is not None
    if force and not use:
        sys.exit("setup.py: FORCE_CUDA=1 and USE_CUDA=0 contradict each other")
    if force and not (cuda_home and torch_cuda):
        sys.exit(
            "setup.py: FORCE_CUDA=1 but "
            + ("no CUDA toolkit was found (set CUDA_HOME)" if not cuda_home else "")
            + (" and " if not cuda_home and not torch_cuda else "")
            + ("torch %s is a CPU-only build" % torch.__version__ if not torch_cuda else "")
        )
    with_cuda = use and cuda_home is not None and torch_cuda
    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
    print(
        "gaussian_kl_cuda build: torch %s (CUDA %s), CUDA_HOME=%s, CUDA kernels: %s%s"
        % (
            torch.__version__,
            torch.version.cuda,
            cuda_home,
            "yes" if with_cuda else "no",
            ", TORCH_CUDA_ARCH_LIST=%s" % os.environ["TORCH_CUDA_ARCH_LIST"] if with_cuda else "",
        ),
        flush=True,
    )
    return with_cuda


WITH_CUDA = None  # resolved by extensions()


def extensions():
    global WITH_CUDA
    with_cuda = WITH_CUDA = resolve_config()
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/ops/*.cpp") + rel("csrc/cpu/*.cpp")
    # -fopenmp: at::parallel_for is header code; without it it runs serially.
    # -fno-trapping-math lets gcc if-convert (and so vectorise) the selects of
    # csrc/math/; it changes no result. -fno-math-errno likewise.
    # C++20, as CMakeLists.txt: torch 2.14's headers need it (std::strong_ordering,
    # requires-clauses), and torch 2.13's compile with it.
    cxx = ["-std=c++20", "-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    link = ["-fopenmp"]
    if with_cuda:
        sources += rel("csrc/cuda/*.cpp") + rel("csrc/cuda/*.cu")
        ext = CUDAExtension(
            "gaussian_kl_cuda._C",
            sources,
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=link,
        )
    else:
        ext = CppExtension(
            "gaussian_kl_cuda._C",
            sources,
            extra_compile_args={"cxx": cxx},
            extra_link_args=link,
        )
    return [ext]


def cmdclass():
    import torch
    from torch.utils.cpp_extension import BuildExtension

    class BuildExt(BuildExtension.with_options(use_ninja=True)):
        """Objects in a build folder that outlives the install: pip's
        editable install hands build_ext a fresh temporary folder each time,
        so every `pip install -e .` recompiled everything. Ninja (with the
        compiler's header dependencies) rebuilds only what changed; one
        folder per Python, torch and flavour, so two venvs never share one."""

        def finalize_options(self):
            super().finalize_options()
            tag = "%s-torch%s-%s" % (sys.implementation.cache_tag, torch.__version__, "cuda" if WITH_CUDA else "cpu")
            self.build_temp = os.path.join(ROOT, "build", "temp-" + tag)

    return {"build_ext": BuildExt}


# Name, version, description, license, Python and torch requirements:
# pyproject.toml's [project] table.
setup(
    packages=find_packages(include=["gaussian_kl_cuda", "gaussian_kl_cuda.*"]),
    ext_modules=extensions(),
    cmdclass=cmdclass(),
    zip_safe=False,
)
