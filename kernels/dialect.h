/* kptune portable dialect: one kernel source for NVRTC (CUDA via CuPy), hipRTC
 * (HIP via a ROCm build of CuPy) and OpenCL C (PyOpenCL).
 *
 * Kernels are written in the common subset of C99 and CUDA C++, with these
 * macros for everything that differs. Launch geometry is given as groups x
 * local size in each dimension; OpenCL's global size is their product.
 * Tuning parameters arrive as -D defines; problem sizes as int arguments.
 */
#ifndef KP_DIALECT_H
#define KP_DIALECT_H

#if defined(__OPENCL_VERSION__)
#define KP_KERNEL __kernel
/* The work-group size a kernel is always launched with: lets the compiler budget registers. */
#define KP_KERNEL_GROUP_SIZE(n) __kernel __attribute__((reqd_work_group_size((n), 1, 1)))
#define KP_GLOBAL __global
#define KP_LOCAL __local
#define KP_LOCAL_PTR __local /* address space of a pointer into local memory */
#define KP_RESTRICT restrict
#define KP_DEVICE_FN inline
#define KP_BARRIER() barrier(CLK_LOCAL_MEM_FENCE)
#define KP_GROUP_ID(d) ((int)get_group_id(d))
#define KP_LOCAL_ID(d) ((int)get_local_id(d))
#define KP_LOCAL_SIZE(d) ((int)get_local_size(d))
#define KP_NUM_GROUPS(d) ((int)get_num_groups(d))
#define KP_FMA(a, b, c) fma((a), (b), (c))
#define KP_LOAD_FLOAT2(p) vload2(0, (p))
#define KP_LOAD_FLOAT4(p) vload4(0, (p))
#define KP_ZERO_FLOAT2 ((float2)(0.0f))
#define KP_ZERO_FLOAT4 ((float4)(0.0f))
#define KP_LDS4(p) (*(__local const float4 *)(p))
#define KP_LDS2(p) (*(__local const float2 *)(p))
#else /* CUDA and HIP */
#define KP_KERNEL extern "C" __global__
#define KP_KERNEL_GROUP_SIZE(n) extern "C" __global__ __launch_bounds__(n)
#define KP_GLOBAL
#define KP_LOCAL __shared__
#define KP_LOCAL_PTR
#define KP_RESTRICT __restrict__
#define KP_DEVICE_FN __device__ __forceinline__
#define KP_BARRIER() __syncthreads()
#define KP_GROUP_ID(d) ((int)((d) == 0 ? blockIdx.x : (d) == 1 ? blockIdx.y : blockIdx.z))
#define KP_LOCAL_ID(d) ((int)((d) == 0 ? threadIdx.x : (d) == 1 ? threadIdx.y : threadIdx.z))
#define KP_LOCAL_SIZE(d) ((int)((d) == 0 ? blockDim.x : (d) == 1 ? blockDim.y : blockDim.z))
#define KP_NUM_GROUPS(d) ((int)((d) == 0 ? gridDim.x : (d) == 1 ? gridDim.y : gridDim.z))
#define KP_FMA(a, b, c) fmaf((a), (b), (c))
#define KP_LOAD_FLOAT2(p) (*(const float2 *)(p))
#define KP_LOAD_FLOAT4(p) (*(const float4 *)(p))
#define KP_ZERO_FLOAT2 make_float2(0.0f, 0.0f)
#define KP_ZERO_FLOAT4 make_float4(0.0f, 0.0f, 0.0f, 0.0f)
#define KP_LDS4(p) (*(const float4 *)(p))
#define KP_LDS2(p) (*(const float2 *)(p))
#endif

#define KP_ALIGN16 __attribute__((aligned(16)))

#endif /* KP_DIALECT_H */
