// Kernel parameters shared by faceapp_ops.cpp (torch bindings, checks) and
// faceapp_ops.cu (kernels). Plain structs only: the .cu includes no torch
// headers, which keeps its compile time low.
#pragma once
#include <cstdint>

namespace faceapp {

// Element types the kernels accept; the .cpp maps torch dtypes onto these.
enum DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Activation numbers; must match ActivationSpec.cuda_idx in bias_act.py.
enum Act : int {
  kLinear = 1, kRelu = 2, kLrelu = 3, kTanh = 4, kSigmoid = 5,
  kElu = 6, kSelu = 7, kSoftplus = 8, kSwish = 9
};

// grad = 0: y    = clamp(act(x + b) * gain)
// grad = 1: out  = x * act'(xref + b) * gain            (x holds dL/dy; zero where yref was clamped)
// grad = 2: out  = x * act''(xref + b) * gain * dy      (x holds dL/d(dx); second derivative)
// act' / act'' are evaluated from yref (the saved output) or xref + b (the saved input),
// as the activation's "ref" says. Absent tensors are nullptr.
struct BiasActParams {
  const void* x;
  const void* b;
  const void* xref;
  const void* yref;
  const void* dy;
  void* y;
  int64_t size;   // number of elements of x
  int64_t stepB;  // memory stride of the bias dimension
  int64_t sizeB;  // number of bias elements (0 = no bias)
  int grad;
  int act;
  double alpha;
  double gain;
  double clamp;  // < 0: no clamp
};

// y[n, c, oy, ox] = gain * sum_{ky, kx} u[oy*downy - py0 + ky, ox*downx - px0 + kx] * g[ky, kx]
// where u is x upsampled by zero insertion and g is f (flip_filter) or f rotated by 180 degrees.
struct Upfirdn2dParams {
  const void* x;
  const float* f;  // [fh, fw], contiguous
  void* y;
  int64_t xStride[4];  // element strides of x (n, c, h, w)
  int64_t yStride[4];  // element strides of y
  int n, c, inH, inW, outH, outW, fh, fw;
  int upx, upy, downx, downy, padx0, pady0;
  int flip;
  double gain;
};

// Launchers (faceapp_ops.cu). Return a CUDA error code (0 = success).
int launch_bias_act(const BiasActParams& p, DType dtype, void* stream);
int launch_upfirdn2d(const Upfirdn2dParams& p, DType dtype, void* stream);

}  // namespace faceapp
