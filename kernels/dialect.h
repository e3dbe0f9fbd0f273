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
/* fp16 storage: half pointers with load/store conversions (core OpenCL, no cl_khr_fp16 needed). */
#define KP_HALF half
#define KP_LOAD_HALF(p, i) vload_half((i), (p))
#define KP_STORE_HALF(p, i, v) vstore_half((v), (i), (p))
/* y[i] += v atomically (split-K): a compare-and-swap loop, OpenCL 1.2 has no float atomics. */
inline void kp_atomic_add_f32(volatile __global float *p, float v)
{
    union { unsigned int u; float f; } old_, new_;
    do {
        old_.f = *p;
        new_.f = old_.f + v;
    } while (atomic_cmpxchg((volatile __global unsigned int *)p, old_.u, new_.u) != old_.u);
}
#define KP_ATOMIC_ADD_F32(p, i, v) kp_atomic_add_f32((p) + (i), (v))
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
/* fp16 storage as raw 16-bit words, converted without cuda_fp16.h (NVRTC needs no include path). */
#define KP_HALF unsigned short
#if defined(__HIP__)
KP_DEVICE_FN float kp_half_to_float(unsigned short h) { return (float)__builtin_bit_cast(_Float16, h); }
KP_DEVICE_FN unsigned short kp_float_to_half(float f) { return __builtin_bit_cast(unsigned short, (_Float16)f); }
#else
KP_DEVICE_FN float kp_half_to_float(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
KP_DEVICE_FN unsigned short kp_float_to_half(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
#endif
#define KP_LOAD_HALF(p, i) kp_half_to_float((p)[i])
#define KP_STORE_HALF(p, i, v) ((p)[i] = kp_float_to_half(v))
#define KP_ATOMIC_ADD_F32(p, i, v) atomicAdd((p) + (i), (v))
#endif

#define KP_ALIGN16 __attribute__((aligned(16)))

/* KP_UNROLL(n): unroll the next loop n times; n = 0 unrolls it fully. */
#define KP_PRAGMA_(x) _Pragma(#x)
#define KP_UNROLL_0 KP_PRAGMA_(unroll)
#define KP_UNROLL_1 KP_PRAGMA_(unroll 1)
#define KP_UNROLL_2 KP_PRAGMA_(unroll 2)
#define KP_UNROLL_4 KP_PRAGMA_(unroll 4)
#define KP_UNROLL_8 KP_PRAGMA_(unroll 8)
#define KP_UNROLL_SEL_(n) KP_UNROLL_##n
#define KP_UNROLL(n) KP_UNROLL_SEL_(n)

/* Tensor element type: KP_FP16=1 stores fp16 (accumulation stays fp32). */
#if defined(KP_FP16) && KP_FP16
#define KP_ELEM KP_HALF
#define KP_LOAD(p, i) KP_LOAD_HALF(p, i)
#define KP_STORE(p, i, v) KP_STORE_HALF(p, i, v)
#else
#define KP_ELEM float
#define KP_LOAD(p, i) ((p)[i])
#define KP_STORE(p, i, v) ((p)[i] = (v))
#endif

#endif /* KP_DIALECT_H */
