// Torch bindings for faceapp's CUDA ops: argument checks, output allocation,
// dispatch to the launchers in faceapp_ops.cu. Semantics: faceapp_ops.h.
// Registered as torch.ops.faceapp_ops.* through TORCH_LIBRARY with lean ATen headers
// rather than pybind11's <torch/extension.h>: this file then compiles ~4x faster.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <limits>

#include "faceapp_ops.h"

namespace {

faceapp::DType to_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::ScalarType::Float: return faceapp::kFloat32;
    case at::ScalarType::Double: return faceapp::kFloat64;
    case at::ScalarType::Half: return faceapp::kFloat16;
    case at::ScalarType::BFloat16: return faceapp::kBFloat16;
    default: TORCH_CHECK(false, "faceapp ops support float32/float64/float16/bfloat16 tensors, got ", t.scalar_type());
  }
}

bool is_dense(const at::Tensor& t) {
  return t.is_contiguous() || t.is_contiguous(at::MemoryFormat::ChannelsLast) ||
         t.is_contiguous(at::MemoryFormat::ChannelsLast3d);
}

// An optional companion tensor of x: empty means absent; otherwise same device, dtype, shape, strides.
const void* companion(const at::Tensor& t, const at::Tensor& x, const char* name) {
  if (t.numel() == 0) return nullptr;
  TORCH_CHECK(t.device() == x.device() && t.scalar_type() == x.scalar_type(), name,
              " must be on x's device with x's dtype");
  TORCH_CHECK(t.sizes() == x.sizes(), name, " must have x's shape");
  // Same memory layout; the stride of a size-1 dimension is irrelevant (and arbitrary).
  for (int64_t i = 0; i < x.dim(); ++i)
    TORCH_CHECK(x.size(i) == 1 || t.stride(i) == x.stride(i), name, " must have x's memory layout");
  return t.data_ptr();
}

void check_cuda_result(int err, const char* op) {
  TORCH_CHECK(err == 0, op, " CUDA kernel launch failed: ", cudaGetErrorString(static_cast<cudaError_t>(err)));
}

}  // namespace

// bias_act(x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp) -> Tensor; see faceapp_ops.h.
at::Tensor bias_act(at::Tensor x, at::Tensor b, at::Tensor xref, at::Tensor yref,
                       at::Tensor dy, int64_t grad, int64_t dim, int64_t act, double alpha, double gain,
                       double clamp) {
  TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
  TORCH_CHECK(is_dense(x), "bias_act: x must be contiguous (or channels_last)");
  TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
  TORCH_CHECK(act >= faceapp::kLinear && act <= faceapp::kSwish, "bias_act: unknown activation ", act);
  TORCH_CHECK(b.numel() == 0 || (dim >= 0 && dim < x.dim()), "bias_act: dim out of range");
  TORCH_CHECK(b.numel() == 0 || (b.dim() == 1 && b.numel() == x.size(dim)),
              "bias_act: b must be 1-D with x.shape[dim] elements");
  TORCH_CHECK(b.numel() == 0 || (b.device() == x.device() && b.scalar_type() == x.scalar_type()),
              "bias_act: b must be on x's device with x's dtype");
  TORCH_CHECK(grad == 0 || clamp < 0 || yref.numel() > 0, "bias_act: the clamped gradient needs yref");

  at::Tensor bc = b.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty_like(x);  // keeps x's (dense) strides

  faceapp::BiasActParams p{};
  p.x = x.data_ptr();
  p.b = bc.numel() ? bc.data_ptr() : nullptr;
  p.xref = companion(xref, x, "bias_act: xref");
  p.yref = companion(yref, x, "bias_act: yref");
  p.dy = companion(dy, x, "bias_act: dy");
  p.y = y.data_ptr();
  p.size = x.numel();
  p.stepB = bc.numel() ? x.stride(dim) : 1;
  p.sizeB = bc.numel();
  p.grad = static_cast<int>(grad);
  p.act = static_cast<int>(act);
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;
  if (p.size == 0) return y;
  check_cuda_result(faceapp::launch_bias_act(p, to_dtype(x), c10::cuda::getCurrentCUDAStream().stream()),
                    "bias_act");
  return y;
}

// upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain) -> Tensor.
// x: [N, C, H, W] (any strides); f: [fh, fw] float32. See faceapp_ops.h.
at::Tensor upfirdn2d(at::Tensor x, at::Tensor f, int64_t upx, int64_t upy, int64_t downx, int64_t downy,
                        int64_t padx0, int64_t padx1, int64_t pady0, int64_t pady1, bool flip, double gain) {
  TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
  TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be 4-D [N, C, H, W]");
  TORCH_CHECK(f.dim() == 2 && f.numel() > 0, "upfirdn2d: f must be a non-empty 2-D filter");
  TORCH_CHECK(f.device() == x.device() && f.scalar_type() == at::ScalarType::Float,
              "upfirdn2d: f must be float32 on x's device");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up/down factors must be >= 1");
  const int64_t INT_LIM = std::numeric_limits<int>::max() / 8;
  TORCH_CHECK(x.size(0) <= INT_LIM && x.size(1) <= INT_LIM && x.size(2) * upy <= INT_LIM &&
                  x.size(3) * upx <= INT_LIM && f.size(0) <= INT_LIM && f.size(1) <= INT_LIM,
              "upfirdn2d: tensor too large");
  const int64_t fh = f.size(0), fw = f.size(1);
  const int64_t outW = (x.size(3) * upx + padx0 + padx1 - fw + downx) / downx;
  const int64_t outH = (x.size(2) * upy + pady0 + pady1 - fh + downy) / downy;
  TORCH_CHECK(outW >= 1 && outH >= 1, "upfirdn2d: the padding and filter leave an empty output");

  at::Tensor fc = f.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({x.size(0), x.size(1), outH, outW},
                                 x.options().memory_format(x.suggest_memory_format()));

  faceapp::Upfirdn2dParams p{};
  p.x = x.data_ptr();
  p.f = fc.data_ptr<float>();
  p.y = y.data_ptr();
  for (int i = 0; i < 4; ++i) {
    p.xStride[i] = x.stride(i);
    p.yStride[i] = y.stride(i);
  }
  p.n = static_cast<int>(x.size(0));
  p.c = static_cast<int>(x.size(1));
  p.inH = static_cast<int>(x.size(2));
  p.inW = static_cast<int>(x.size(3));
  p.outH = static_cast<int>(outH);
  p.outW = static_cast<int>(outW);
  p.fh = static_cast<int>(fh);
  p.fw = static_cast<int>(fw);
  p.upx = static_cast<int>(upx);
  p.upy = static_cast<int>(upy);
  p.downx = static_cast<int>(downx);
  p.downy = static_cast<int>(downy);
  p.padx0 = static_cast<int>(padx0);
  p.pady0 = static_cast<int>(pady0);
  p.flip = flip ? 1 : 0;
  p.gain = gain;
  if (y.numel() == 0) return y;
  check_cuda_result(faceapp::launch_upfirdn2d(p, to_dtype(x), c10::cuda::getCurrentCUDAStream().stream()),
                    "upfirdn2d");
  return y;
}

TORCH_LIBRARY(faceapp_ops, m) {
  m.def(
      "bias_act(Tensor x, Tensor b, Tensor xref, Tensor yref, Tensor dy, int grad, int dim, int act, "
      "float alpha, float gain, float clamp) -> Tensor");
  m.def(
      "upfirdn2d(Tensor x, Tensor f, int upx, int upy, int downx, int downy, int padx0, int padx1, "
      "int pady0, int pady1, bool flip, float gain) -> Tensor");
}

TORCH_LIBRARY_IMPL(faceapp_ops, CUDA, m) {
  m.impl("bias_act", &bias_act);
  m.impl("upfirdn2d", &upfirdn2d);
}
