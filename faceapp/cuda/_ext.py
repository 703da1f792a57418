"""Lazy build, on-disk cache and implementation choice for the CUDA kernels.

Nothing here runs at import time. The extension (one module holding both ops,
so CI compiles two translation units, not four) is built by
``torch.utils.cpp_extension.load`` on the first call that needs it, into
``$FACEAPP_CACHE/torch_extensions/<name>-<hash of the sources and torch version>`` (default
``~/.cache/faceapp``): editing a source file gives a new directory, so a stale
build is never loaded, and an unchanged one is never rebuilt.

Choosing the implementation (``impl`` argument of every op):
  'ref'   pure PyTorch, always.
  'cuda'  the kernel; CudaOpsError if the tensor is not on a GPU or the build fails.
  'auto'  read $FACEAPP_CUDA_OPS ('auto' | 'ref' | 'cuda'); in auto mode use the
          kernel for CUDA tensors when it builds, otherwise the reference path.
          A failed build warns once and is not retried in this process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import warnings
from pathlib import Path
from types import ModuleType

from faceapp.errors import CudaOpsError

EXT_NAME = "faceapp_ops"
CSRC_DIR = Path(__file__).resolve().parent / "csrc"
SOURCES = ("faceapp_ops.cpp", "faceapp_ops.cu")
HEADERS = ("faceapp_ops.h", "faceapp_math.h")
ENV_VAR = "FACEAPP_CUDA_OPS"
_IMPLS = ("auto", "ref", "cuda")

_lock = threading.Lock()
_module: ModuleType | None = None
_build_error: str | None = None  # set after a failed build; auto mode then stays on ref


def source_hash() -> str:
    """Short hash of every kernel source and header, and of the torch build they compile
    against (its ABI): the cache key of the build."""
    import torch

    h = hashlib.sha256()
    h.update(f"torch {torch.__version__} cuda {torch.version.cuda}".encode())
    for name in SOURCES + HEADERS:
        h.update(name.encode())
        h.update((CSRC_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def default_build_dir() -> Path:
    """Where the extension is built and cached (created on demand, not here)."""
    root = os.environ.get("FACEAPP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "faceapp")
    return Path(root) / "torch_extensions" / f"{EXT_NAME}-{source_hash()}"


def _is_cuda_home(path: str | None) -> bool:
    return (
        bool(path)
        and (Path(path) / "bin" / "nvcc").exists()
        and (Path(path) / "include" / "cuda_runtime_api.h").exists()
    )


def _find_cuda_home() -> str | None:
    """The CUDA toolkit root (with nvcc and headers), or None when none is found."""
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        # nvcc may be a symlink or a wrapper script in /usr/local/bin, whose parent is no toolkit.
        cands.append(str(Path(nvcc).resolve().parent.parent))
    cands.append("/usr/local/cuda")
    for cand in cands:
        if _is_cuda_home(cand):
            return cand
    return None


def compile_extension(build_dir: str | os.PathLike | None = None, verbose: bool = False) -> ModuleType:
    """Compile (or load the cached build of) the extension and return a module holding its ops.

    The returned module's ``bias_act`` and ``upfirdn2d`` are ``torch.ops.faceapp_ops.*``.
    A process can load only one build of the library (the op names are global).

    Works without a GPU as long as nvcc is installed; without a GPU,
    $TORCH_CUDA_ARCH_LIST decides the target (default '9.0' here, where torch
    would otherwise fail to detect one). Raises CudaOpsError with the reason
    on failure.
    """
    cuda_home = _find_cuda_home()
    if cuda_home is None:
        raise CudaOpsError(
            "cannot build the faceapp CUDA ops: nvcc not found (set CUDA_HOME to your CUDA toolkit, "
            f"or set {ENV_VAR}=ref to use the pure PyTorch ops)"
        )
    try:
        import torch
        import torch.utils.cpp_extension as cpp_ext
    except Exception as e:  # pragma: no cover - torch is a hard dependency
        raise CudaOpsError(f"cannot build the faceapp CUDA ops: {e}") from e

    build_dir = Path(build_dir) if build_dir is not None else default_build_dir()
    build_dir.mkdir(parents=True, exist_ok=True)
    # cpp_extension guesses CUDA_HOME once, at its import, and can guess wrong (e.g. /usr/local
    # when nvcc is a wrapper in /usr/local/bin); point it at the toolkit found above.
    if not _is_cuda_home(getattr(cpp_ext, "CUDA_HOME", None)):
        cpp_ext.CUDA_HOME = cuda_home
    if "TORCH_CUDA_ARCH_LIST" not in os.environ and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
    try:
        # The library registers torch.ops.faceapp_ops.* when loaded (TORCH_LIBRARY), no pybind module.
        lib_path = cpp_ext.load(
            name=EXT_NAME,
            sources=[str(CSRC_DIR / s) for s in SOURCES],
            extra_include_paths=[str(CSRC_DIR)],
            extra_cflags=["-O2"],
            extra_cuda_cflags=["-O3"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=verbose,
        )
    except Exception as e:
        raise CudaOpsError(
            f"building the faceapp CUDA ops in {build_dir} failed: {e}. "
            f"Check your CUDA toolkit ({cuda_home}) matches torch {torch.version.cuda}, "
            f"or set {ENV_VAR}=ref to use the pure PyTorch ops."
        ) from e
    ops = getattr(torch.ops, EXT_NAME)
    mod = ModuleType(EXT_NAME, f"faceapp CUDA ops loaded from {lib_path}")
    mod.__file__ = str(lib_path) if lib_path else str(build_dir)
    mod.bias_act = ops.bias_act
    mod.upfirdn2d = ops.upfirdn2d
    return mod


def load() -> ModuleType:
    """The extension module, built on first use. Raises CudaOpsError if it cannot be built."""
    global _module, _build_error
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            if _build_error is not None:
                raise CudaOpsError(_build_error)
            try:
                _module = compile_extension()
            except CudaOpsError as e:
                _build_error = str(e)
                raise
    return _module


def _mode(impl: str) -> str:
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    if impl != "auto":
        return impl
    env = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if env not in _IMPLS:
        raise CudaOpsError(f"{ENV_VAR}={env!r} is not valid; use one of {', '.join(_IMPLS)}")
    return env


def use_kernel(impl: str, x) -> bool:
    """Decide whether an op on tensor ``x`` runs the CUDA kernel (True) or the reference path.

    Raises CudaOpsError in strict mode ('cuda') when the kernel cannot run.
    """
    mode = _mode(impl)
    if mode == "ref":
        return False
    if mode == "cuda":
        if not x.is_cuda:
            raise CudaOpsError(
                f"impl='cuda' (or {ENV_VAR}=cuda) needs a CUDA tensor, got one on {x.device}; "
                f"move the model and inputs to a GPU or use impl='auto'/'ref'"
            )
        load()
        return True
    # auto
    if not x.is_cuda:
        return False
    if _module is not None:
        return True
    if _build_error is not None:
        return False
    try:
        load()
    except CudaOpsError as e:
        warnings.warn(f"{e} Falling back to the reference PyTorch ops (slower).", RuntimeWarning, stacklevel=3)
        return False
    return True


def _reset_for_tests() -> None:
    """Forget the loaded module and any build failure (tests only)."""
    global _module, _build_error
    with _lock:
        _module = None
        _build_error = None
