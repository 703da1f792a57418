// CUDA kernels for faceapp's custom ops: fused bias + activation, and upfirdn2d.
// The per-element arithmetic lives in faceapp_math.h (shared with the host test
// harness host_check.cpp); this file holds the launch loops and dtype dispatch.
// Arithmetic runs in float (double for double tensors); half and bfloat16 are
// storage formats only.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "faceapp_math.h"
#include "faceapp_ops.h"

namespace faceapp {
namespace math {
// Explicit conversions: torch builds with __CUDA_NO_HALF_CONVERSIONS__ and friends.
template <> struct Mem<__half> {
  static __device__ __forceinline__ float ld(const __half* p, int64_t i) { return __half2float(p[i]); }
  static __device__ __forceinline__ void st(__half* p, int64_t i, float v) { p[i] = __float2half(v); }
};
template <> struct Mem<__nv_bfloat16> {
  static __device__ __forceinline__ float ld(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
  static __device__ __forceinline__ void st(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16(v); }
};
}  // namespace math

namespace {

constexpr int kBlock = 256;
constexpr int64_t kMaxGrid = 65536;  // grid-stride loops cover the rest

int grid_for(int64_t n) {
  int64_t want = (n + kBlock - 1) / kBlock;
  return int(want < 1 ? 1 : (want < kMaxGrid ? want : kMaxGrid));
}

// ------------------------------------------------------------------------------------------------
// bias_act: the activation is a template argument so each instance is a branch-free loop.

template <class T, int A> __global__ void bias_act_kernel(BiasActParams p) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < p.size; i += int64_t(blockDim.x) * gridDim.x)
    math::bias_act_element<T, A>(p, i);
}

template <class T> int run_bias_act(const BiasActParams& p, cudaStream_t stream) {
  const int grid = grid_for(p.size);
  switch (p.act) {
    case kLinear: bias_act_kernel<T, kLinear><<<grid, kBlock, 0, stream>>>(p); break;
    case kRelu: bias_act_kernel<T, kRelu><<<grid, kBlock, 0, stream>>>(p); break;
    case kLrelu: bias_act_kernel<T, kLrelu><<<grid, kBlock, 0, stream>>>(p); break;
    case kTanh: bias_act_kernel<T, kTanh><<<grid, kBlock, 0, stream>>>(p); break;
    case kSigmoid: bias_act_kernel<T, kSigmoid><<<grid, kBlock, 0, stream>>>(p); break;
    case kElu: bias_act_kernel<T, kElu><<<grid, kBlock, 0, stream>>>(p); break;
    case kSelu: bias_act_kernel<T, kSelu><<<grid, kBlock, 0, stream>>>(p); break;
    case kSoftplus: bias_act_kernel<T, kSoftplus><<<grid, kBlock, 0, stream>>>(p); break;
    case kSwish: bias_act_kernel<T, kSwish><<<grid, kBlock, 0, stream>>>(p); break;
    default: return int(cudaErrorInvalidValue);
  }
  return int(cudaGetLastError());
}

// ------------------------------------------------------------------------------------------------
// upfirdn2d: one thread per output pixel; the (gain-scaled, correlation-ordered) filter
// is staged in shared memory once per block.

template <class T> __global__ void upfirdn2d_kernel(Upfirdn2dParams p, int64_t total) {
  typedef typename math::Acc<T>::type S;
  extern __shared__ __align__(8) unsigned char smem_raw[];
  S* g = reinterpret_cast<S*>(smem_raw);  // [fh, fw]
  for (int k = threadIdx.x; k < p.fh * p.fw; k += blockDim.x) math::upfirdn2d_tap<S>(p, g, k);
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(blockDim.x) * gridDim.x)
    math::upfirdn2d_element<T>(p, g, i);
}

template <class T> int run_upfirdn2d(const Upfirdn2dParams& p, cudaStream_t stream) {
  const int64_t total = int64_t(p.n) * p.c * p.outH * p.outW;
  if (total == 0) return 0;
  const size_t smem = size_t(p.fh) * p.fw * sizeof(typename math::Acc<T>::type);
  if (smem > 48 * 1024) {  // large filters need the opt-in shared memory size
    cudaError_t e =
        cudaFuncSetAttribute(upfirdn2d_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (e != cudaSuccess) return int(e);
  }
  upfirdn2d_kernel<T><<<grid_for(total), kBlock, smem, stream>>>(p, total);
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
