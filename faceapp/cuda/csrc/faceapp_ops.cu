// CUDA kernels for faceapp's custom ops: fused bias + activation, and upfirdn2d.
// Parameters and semantics: faceapp_ops.h. Arithmetic runs in float (double for
// double tensors); half and bfloat16 are only the storage format.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "faceapp_ops.h"

namespace faceapp {
namespace {

// Storage type -> arithmetic type, with explicit conversions (no reliance on
// implicit __half operators, which depend on compile flags torch sets).
template <class T> struct Math { typedef float type; };
template <> struct Math<double> { typedef double type; };

template <class T> __device__ __forceinline__ typename Math<T>::type ld(const T* p, int64_t i) {
  return static_cast<typename Math<T>::type>(p[i]);
}
template <> __device__ __forceinline__ float ld<__half>(const __half* p, int64_t i) { return __half2float(p[i]); }
template <> __device__ __forceinline__ float ld<__nv_bfloat16>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}

template <class T> __device__ __forceinline__ void st(T* p, int64_t i, typename Math<T>::type v) {
  p[i] = static_cast<T>(v);
}
template <> __device__ __forceinline__ void st<__half>(__half* p, int64_t i, float v) { p[i] = __float2half(v); }
template <> __device__ __forceinline__ void st<__nv_bfloat16>(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16(v);
}

__device__ __forceinline__ float ex(float v) { return expf(v); }
__device__ __forceinline__ double ex(double v) { return exp(v); }
__device__ __forceinline__ float exm1(float v) { return expm1f(v); }
__device__ __forceinline__ double exm1(double v) { return expm1(v); }
__device__ __forceinline__ float lg1p(float v) { return log1pf(v); }
__device__ __forceinline__ double lg1p(double v) { return log1p(v); }
__device__ __forceinline__ float th(float v) { return tanhf(v); }
__device__ __forceinline__ double th(double v) { return tanh(v); }

// ------------------------------------------------------------------------------------------------
// bias_act. The activation is a template argument so each instance is a branch-free loop.

template <class S> __device__ __forceinline__ S sigmoid(S v) { return S(1) / (S(1) + ex(-v)); }

// Value (G = 0), first (G = 1) or second (G = 2) derivative of activation A.
// v = pre-activation (xref + b, or x + b when G = 0), r = saved output / gain.
template <int A, class S> __device__ __forceinline__ S act_eval(int G, S v, S r, S alpha) {
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

template <class T, int A> __global__ void bias_act_kernel(BiasActParams p) {
  typedef typename Math<T>::type S;
  const T* x = static_cast<const T*>(p.x);
  const T* b = static_cast<const T*>(p.b);
  const T* xref = static_cast<const T*>(p.xref);
  const T* yref = static_cast<const T*>(p.yref);
  const T* dy = static_cast<const T*>(p.dy);
  T* y = static_cast<T*>(p.y);
  const int G = p.grad;
  const S alpha = S(p.alpha), gain = S(p.gain), clamp = S(p.clamp);

  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.size;
       i += int64_t(blockDim.x) * gridDim.x) {
    S bias = b ? ld(b, (i / p.stepB) % p.sizeB) : S(0);
    S in = ld(x, i);
    S yr = yref ? ld(yref, i) : S(0);
    S out;
    if (G == 0) {
      out = act_eval<A, S>(0, in + bias, S(0), alpha);
    } else {
      S v = xref ? ld(xref, i) + bias : S(0);
      S r = gain != S(0) ? yr / gain : S(0);
      out = in * act_eval<A, S>(G, v, r, alpha);
    }
    out *= gain;
    if (dy) out *= ld(dy, i);
    if (clamp >= S(0)) {
      if (G == 0)
        out = out > clamp ? clamp : (out < -clamp ? -clamp : out);
      else if (!(yr > -clamp && yr < clamp))
        out = S(0);  // the clamp saturated this element: no gradient flows through it
    }
    st(y, i, out);
  }
}

template <class T> int run_bias_act(const BiasActParams& p, cudaStream_t stream) {
  const int block = 256;
  int64_t want = (p.size + block - 1) / block;
  int grid = int(want < 65536 ? (want > 0 ? want : 1) : 65536);  // grid-stride loop covers the rest
  switch (p.act) {
    case kLinear: bias_act_kernel<T, kLinear><<<grid, block, 0, stream>>>(p); break;
    case kRelu: bias_act_kernel<T, kRelu><<<grid, block, 0, stream>>>(p); break;
    case kLrelu: bias_act_kernel<T, kLrelu><<<grid, block, 0, stream>>>(p); break;
    case kTanh: bias_act_kernel<T, kTanh><<<grid, block, 0, stream>>>(p); break;
    case kSigmoid: bias_act_kernel<T, kSigmoid><<<grid, block, 0, stream>>>(p); break;
    case kElu: bias_act_kernel<T, kElu><<<grid, block, 0, stream>>>(p); break;
    case kSelu: bias_act_kernel<T, kSelu><<<grid, block, 0, stream>>>(p); break;
    case kSoftplus: bias_act_kernel<T, kSoftplus><<<grid, block, 0, stream>>>(p); break;
    case kSwish: bias_act_kernel<T, kSwish><<<grid, block, 0, stream>>>(p); break;
    default: return int(cudaErrorInvalidValue);
  }
  return int(cudaGetLastError());
}

// ------------------------------------------------------------------------------------------------
// upfirdn2d: one thread per output pixel, visiting only the filter taps that land on a
// real (not zero-inserted, not padded) input pixel. The filter is staged in shared
// memory, already in correlation order and scaled by the gain.

template <class T> __global__ void upfirdn2d_kernel(Upfirdn2dParams p, int64_t total) {
  typedef typename Math<T>::type S;
  extern __shared__ __align__(8) unsigned char smem_raw[];
  S* g = reinterpret_cast<S*>(smem_raw);  // [fh, fw]
  const int taps = p.fh * p.fw;
  for (int k = threadIdx.x; k < taps; k += blockDim.x) {
    // Convolution (the default) reads the taps rotated by 180 degrees.
    int src = p.flip ? k : taps - 1 - k;
    g[k] = S(p.f[src]) * S(p.gain);
  }
  __syncthreads();

  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const int upH = p.inH * p.upy, upW = p.inW * p.upx;  // size of the zero-inserted image

  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(blockDim.x) * gridDim.x) {
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
    int kyEnd = min(p.fh, upH - my);
    int kx0 = mx < 0 ? -mx : 0;
    r = (mx + kx0) % p.upx;
    if (r) kx0 += p.upx - r;
    int kxEnd = min(p.fw, upW - mx);

    const T* xp = x + n * p.xStride[0] + ch * p.xStride[1];
    S acc = S(0);
    for (int ky = ky0; ky < kyEnd; ky += p.upy) {
      const T* row = xp + int64_t((my + ky) / p.upy) * p.xStride[2];
      const S* grow = g + ky * p.fw;
      for (int kx = kx0; kx < kxEnd; kx += p.upx)
        acc += ld(row, int64_t((mx + kx) / p.upx) * p.xStride[3]) * grow[kx];
    }
    st(y, n * p.yStride[0] + ch * p.yStride[1] + oy * p.yStride[2] + ox * p.yStride[3], acc);
  }
}

template <class T> int run_upfirdn2d(const Upfirdn2dParams& p, cudaStream_t stream) {
  const int block = 256;
  int64_t total = int64_t(p.n) * p.c * p.outH * p.outW;
  if (total == 0) return 0;
  int64_t want = (total + block - 1) / block;
  int grid = int(want < 65536 ? want : 65536);
  size_t smem = size_t(p.fh) * p.fw * sizeof(typename Math<T>::type);
  if (smem > 48 * 1024) {
    cudaError_t e = cudaFuncSetAttribute(upfirdn2d_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         int(smem));
    if (e != cudaSuccess) return int(e);
  }
  upfirdn2d_kernel<T><<<grid, block, smem, stream>>>(p, total);
  return int(cudaGetLastError());
}

}  // namespace

int launch_bias_act(const BiasActParams& p, DType dtype, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: return run_bias_act<float>(p, s);
    case kFloat64: return run_bias_act<double>(p, s);
    case kFloat16: return run_bias_act<__half>(p, s);
    case kBFloat16: return run_bias_act<__nv_bfloat16>(p, s);
  }
  return int(cudaErrorInvalidValue);
}

int launch_upfirdn2d(const Upfirdn2dParams& p, DType dtype, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case kFloat32: return run_upfirdn2d<float>(p, s);
    case kFloat64: return run_upfirdn2d<double>(p, s);
    case kFloat16: return run_upfirdn2d<__half>(p, s);
    case kBFloat16: return run_upfirdn2d<__nv_bfloat16>(p, s);
  }
  return int(cudaErrorInvalidValue);
}

}  // namespace faceapp
