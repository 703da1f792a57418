"""Custom ops for StyleGAN2: fused bias + activation, and upfirdn2d resampling.

Each op has one public function with an ``impl`` argument:
  'auto' (default)  the CUDA kernel for CUDA tensors when it builds, else pure PyTorch;
  'ref'             pure PyTorch (any device; gradients of any order by autograd);
  'cuda'            the kernel, or CudaOpsError.
$FACEAPP_CUDA_OPS ('auto' | 'ref' | 'cuda') overrides 'auto' process-wide.

The kernel is compiled on first CUDA use (never at import) and cached under
$FACEAPP_CACHE (default ~/.cache/faceapp); ``build_extensions()`` builds it now.
"""

from __future__ import annotations

from types import ModuleType

from faceapp.cuda import bias_act, upfirdn2d


def build_extensions(verbose: bool = False, build_dir=None) -> dict[str, ModuleType]:
    """Compile (or load from the cache) the CUDA kernels now.

    Needs nvcc but no GPU. ``build_dir`` defaults to the source-hash-keyed cache
    directory (see ``faceapp.cuda._ext``). Returns ``{'bias_act': module, 'upfirdn2d': module}``
    (both ops live in one compiled module); if the ops are already loaded in this
    process, returns that module. Raises CudaOpsError on failure.
    """
    from faceapp.cuda import _ext

    with _ext._lock:
        if _ext._module is None:
            # Whatever directory it came from, this build is what the ops use from now on:
            # a process can hold only one build of the op library.
            _ext._module = _ext.compile_extension(build_dir=build_dir, verbose=verbose)
            _ext._build_error = None
        mod = _ext._module
    return {"bias_act": mod, "upfirdn2d": mod}


__all__ = ["bias_act", "upfirdn2d", "build_extensions"]
