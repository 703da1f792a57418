// Test harness, not part of the extension: runs the kernels' per-element code
// (faceapp_math.h) on the CPU, so tests/test_cuda_ops.py can check the kernel
// arithmetic and the autograd wiring around it on machines without a GPU.
// Build: c++ -O1 -std=c++17 -shared -fPIC host_check.cpp -o host_check.so
#include <cstdint>

#include "faceapp_math.h"

namespace {

template <class T, int A> void bias_act_loop(const faceapp::BiasActParams& p) {
  for (int64_t i = 0; i < p.size; ++i) faceapp::math::bias_act_element<T, A>(p, i);
}

template <class T> int bias_act_typed(const faceapp::BiasActParams& p) {
  using namespace faceapp;
  switch (p.act) {
    case kLinear: bias_act_loop<T, kLinear>(p); return 0;
    case kRelu: bias_act_loop<T, kRelu>(p); return 0;
    case kLrelu: bias_act_loop<T, kLrelu>(p); return 0;
    case kTanh: bias_act_loop<T, kTanh>(p); return 0;
    case kSigmoid: bias_act_loop<T, kSigmoid>(p); return 0;
    case kElu: bias_act_loop<T, kElu>(p); return 0;
    case kSelu: bias_act_loop<T, kSelu>(p); return 0;
    case kSoftplus: bias_act_loop<T, kSoftplus>(p); return 0;
    case kSwish: bias_act_loop<T, kSwish>(p); return 0;
  }
  return 1;
}

template <class T> void upfirdn2d_typed(const faceapp::Upfirdn2dParams& p) {
  typedef typename faceapp::math::Acc<T>::type S;
  const int taps = p.fh * p.fw;
  S* g = new S[taps];
  for (int k = 0; k < taps; ++k) faceapp::math::upfirdn2d_tap<S>(p, g, k);
  const int64_t total = int64_t(p.n) * p.c * p.outH * p.outW;
  for (int64_t i = 0; i < total; ++i) faceapp::math::upfirdn2d_element<T>(p, g, i);
  delete[] g;
}

}  // namespace

extern "C" {

// dtype: 0 = float32, 1 = float64 (faceapp::DType). Absent tensors: nullptr. Returns 0 on success.
int faceapp_host_bias_act(int dtype, const void* x, const void* b, const void* xref, const void* yref,
                          const void* dy, void* y, int64_t size, int64_t stepB, int64_t sizeB, int grad, int act,
                          double alpha, double gain, double clamp) {
  faceapp::BiasActParams p{};
  p.x = x;
  p.b = b;
  p.xref = xref;
  p.yref = yref;
  p.dy = dy;
  p.y = y;
  p.size = size;
  p.stepB = stepB;
  p.sizeB = sizeB;
  p.grad = grad;
  p.act = act;
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;
  if (dtype == faceapp::kFloat32) return bias_act_typed<float>(p);
  if (dtype == faceapp::kFloat64) return bias_act_typed<double>(p);
  return 2;
}

int faceapp_host_upfirdn2d(int dtype, const void* x, const float* f, void* y, const int64_t* xStride,
                           const int64_t* yStride, const int* dims, double gain) {
  // dims: n, c, inH, inW, outH, outW, fh, fw, upx, upy, downx, downy, padx0, pady0, flip
  faceapp::Upfirdn2dParams p{};
  p.x = x;
  p.f = f;
  p.y = y;
  for (int i = 0; i < 4; ++i) {
    p.xStride[i] = xStride[i];
    p.yStride[i] = yStride[i];
  }
  p.n = dims[0];
  p.c = dims[1];
  p.inH = dims[2];
  p.inW = dims[3];
  p.outH = dims[4];
  p.outW = dims[5];
  p.fh = dims[6];
  p.fw = dims[7];
  p.upx = dims[8];
  p.upy = dims[9];
  p.downx = dims[10];
  p.downy = dims[11];
  p.padx0 = dims[12];
  p.pady0 = dims[13];
  p.flip = dims[14];
  p.gain = gain;
  if (dtype == faceapp::kFloat32) upfirdn2d_typed<float>(p);
  else if (dtype == faceapp::kFloat64) upfirdn2d_typed<double>(p);
  else return 2;
  return 0;
}

}  // extern "C"
