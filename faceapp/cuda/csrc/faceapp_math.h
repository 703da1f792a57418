// Per-element math of faceapp's kernels, as __host__ __device__ functions: the CUDA
// kernels (faceapp_ops.cu) are thin loops around these, and host_check.cpp runs the
// very same code on the CPU so the tests can check the kernel arithmetic without a GPU.
#pragma once
#include <cstdint>

#include "faceapp_ops.h"

#ifdef __CUDACC__
#define FACEAPP_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define FACEAPP_HD inline
#endif

namespace faceapp {
namespace math {

// Storage type -> arithmetic type (half and bfloat16 compute in float).
template <class T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

// Loads and stores; faceapp_ops.cu specialises them for __half and __nv_bfloat16.
template <class T> struct Mem {
  static FACEAPP_HD typename Acc<T>::type ld(const T* p, int64_t i) { return static_cast<typename Acc<T>::type>(p[i]); }
  static FACEAPP_HD void st(T* p, int64_t i, typename Acc<T>::type v) { p[i] = static_cast<T>(v); }
};

FACEAPP_HD float ex(float v) { return expf(v); }
FACEAPP_HD double ex(double v) { return exp(v); }
FACEAPP_HD float exm1(float v) { return expm1f(v); }
FACEAPP_HD double exm1(double v) { return expm1(v); }
FACEAPP_HD float lg1p(float v) { return log1pf(v); }
FACEAPP_HD double lg1p(double v) { return log1p(v); }
FACEAPP_HD float th(float v) { return tanhf(v); }
FACEAPP_HD double th(double v) { return tanh(v); }
FACEAPP_HD int imin(int a, int b) { return a < b ? a : b; }

template <class S> FACEAPP_HD S sigmoid(S v) { return S(1) / (S(1) + ex(-v)); }

// Value (G = 0), first (G = 1) or second (G = 2) derivative of activation A.
// v = pre-activation (input + bias), r = the saved output divided by the gain.
// 'y'-reference activations express their derivatives through r, so the backward
// pass needs only the output; linear and swish use v.
template <int A, class S> FACEAPP_HD S act_eval(int G, S v, S r, S alpha) {
  const S one = S(1);
  const S seluScale = S(1.0507009873554804934193349852946);
  const S seluAlpha = S(1.6732632423543772848170429916717);
  switch (A) {
    case kLinear:
      return G == 0 ? v : (G == 1 ? one : S(0));
    case kRelu:
      return G == 0 ? (v > S(0) ? v : S(0)) : (G == 1 ? (r > S(0) ? one : S(0)) : S(0));
    case kLrelu:
      return G == 0 ? (v > S(0) ? v : v * alpha) : (G == 1 ? (r > S(0) ? one : alpha) : S(0));
    case kTanh:
      if (G == 0) return th(v);
      return G == 1 ? one - r * r : (one - r * r) * (S(-2) * r);
    case kSigmoid:
      if (G == 0) return sigmoid(v);
      return G == 1 ? r * (one - r) : r * (one - r) * (one - S(2) * r);
    case kElu:
      if (G == 0) return v >= S(0) ? v : exm1(v);
      return G == 1 ? (r >= S(0) ? one : r + one) : (r >= S(0) ? S(0) : r + one);
    case kSelu:
      if (G == 0) return v >= S(0) ? seluScale * v : seluScale * seluAlpha * exm1(v);
      return G == 1 ? (r >= S(0) ? seluScale : r + seluScale * seluAlpha)
                    : (r >= S(0) ? S(0) : r + seluScale * seluAlpha);
    case kSoftplus: {
      // log(1 + e^v) overflows e^v for large v, where it equals v to working precision.
      if (G == 0) return v > S(20) ? v : lg1p(ex(v));
      S e = ex(-r);  // 1 - sigmoid(v)
      return G == 1 ? one - e : e * (one - e);
    }
    case kSwish: {
      S s = sigmoid(v);
      if (G == 0) return v * s;
      return G == 1 ? s + v * s * (one - s) : s * (one - s) * (S(2) + v * (one - S(2) * s));
    }
  }
  return S(0);
}

// Element i of bias_act (see BiasActParams in faceapp_ops.h).
template <class T, int A> FACEAPP_HD void bias_act_element(const BiasActParams& p, int64_t i) {
  typedef typename Acc<T>::type S;
  const T* b = static_cast<const T*>(p.b);
  const T* xref = static_cast<const T*>(p.xref);
  const T* yref = static_cast<const T*>(p.yref);
  const T* dy = static_cast<const T*>(p.dy);
  const S alpha = S(p.alpha), gain = S(p.gain), clamp = S(p.clamp);

  S bias = b ? Mem<T>::ld(b, (i / p.stepB) % p.sizeB) : S(0);
  S in = Mem<T>::ld(static_cast<const T*>(p.x), i);
  S yr = yref ? Mem<T>::ld(yref, i) : S(0);
  S out;
  if (p.grad == 0) {
    out = act_eval<A, S>(0, in + bias, S(0), alpha);
  } else {
    S v = xref ? Mem<T>::ld(xref, i) + bias : S(0);
    S r = gain != S(0) ? yr / gain : S(0);
    out = in * act_eval<A, S>(p.grad, v, r, alpha);
  }
  out *= gain;
  if (dy) out *= Mem<T>::ld(dy, i);
  if (clamp >= S(0)) {
    if (p.grad == 0)
      out = out > clamp ? clamp : (out < -clamp ? -clamp : out);
    else if (!(yr > -clamp && yr < clamp))
      out = S(0);  // the clamp saturated this element: no gradient flows through it
  }
  Mem<T>::st(static_cast<T*>(p.y), i, out);
}

// Fill g ([fh, fw]) with the taps in correlation order, scaled by the gain:
// convolution (the default) reads the filter rotated by 180 degrees.
template <class S> FACEAPP_HD void upfirdn2d_tap(const Upfirdn2dParams& p, S* g, int k) {
  const int taps = p.fh * p.fw;
  g[k] = S(p.f[p.flip ? k : taps - 1 - k]) * S(p.gain);
}

// Output element i (linear index over [N, C, outH, outW]) of upfirdn2d, visiting only
// the taps that land on a real input pixel (not a zero-inserted one, not padding).
template <class T> FACEAPP_HD void upfirdn2d_element(const Upfirdn2dParams& p, const typename Acc<T>::type* g,
                                                     int64_t i) {
  typedef typename Acc<T>::type S;
  int ox = int(i % p.outW);
  int64_t t = i / p.outW;
  int oy = int(t % p.outH);
  t /= p.outH;
  int ch = int(t % p.c);
  int n = int(t / p.c);

  // Top-left corner of the filter footprint in zero-inserted coordinates.
  int my = oy * p.downy - p.pady0;
  int mx = ox * p.downx - p.padx0;

  // First tap that hits a real pixel: inside the image and on the up-sampling grid.
  int ky0 = my < 0 ? -my : 0;
  int r = (my + ky0) % p.upy;
  if (r) ky0 += p.upy - r;
  int kyEnd = imin(p.fh, p.inH * p.upy - my);
  int kx0 = mx < 0 ? -mx : 0;
  r = (mx + kx0) % p.upx;
  if (r) kx0 += p.upx - r;
  int kxEnd = imin(p.fw, p.inW * p.upx - mx);

  const T* xp = static_cast<const T*>(p.x) + n * p.xStride[0] + ch * p.xStride[1];
  S acc = S(0);
  for (int ky = ky0; ky < kyEnd; ky += p.upy) {
    const T* row = xp + int64_t((my + ky) / p.upy) * p.xStride[2];
    const S* grow = g + ky * p.fw;
    for (int kx = kx0; kx < kxEnd; kx += p.upx) acc += Mem<T>::ld(row, int64_t((mx + kx) / p.upx) * p.xStride[3]) * grow[kx];
  }
  Mem<T>::st(static_cast<T*>(p.y), n * p.yStride[0] + ch * p.yStride[1] + oy * p.yStride[2] + ox * p.yStride[3],
             acc);
}

}  // namespace math
}  // namespace faceapp
