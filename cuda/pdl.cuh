/* pdl.cuh: programmatic dependent launch for the kernels of a decoding
 * step (gemv.cu, decode.cu), where a step is a chain of small kernels and
 * each one's launch latency, and its weights' first loads, can hide under
 * the tail of the kernel before it.
 * A kernel launched with pdl_launch may start before the previous kernel
 * on the stream has finished (once every block of that one has called
 * pdl_trigger, or finished); it must call pdl_wait before it reads what
 * earlier kernels wrote or writes anything, and may read constants (the
 * weights) before. pdl_wait returns once the previous kernel has completed
 * and its writes are visible (at once when launched plainly). Kernels
 * launched plainly after one of these wait for it as usual.
 * C++ only; sm_90 (griddepcontrol). */
#ifndef LMK_CUDA_PDL_CUH
#define LMK_CUDA_PDL_CUH

#include <cuda_runtime.h>

#include <utility>

/* Lets the next kernel on the stream launch (it still waits in pdl_wait). */
static __device__ __forceinline__ void pdl_trigger()
{
	asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

/* Waits for the kernels this one was allowed to overlap. */
static __device__ __forceinline__ void pdl_wait()
{
	asm volatile("griddepcontrol.wait;" ::: "memory");
}

/* kernel<<<grid, block, smem, st>>>(args...), allowed to overlap the
 * kernel before it (see above). Also under stream capture. */
template <typename... P, typename... A>
static cudaError_t pdl_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
			      cudaStream_t st, A &&...args)
{
	cudaLaunchAttribute at[1];
	at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
	at[0].val.programmaticStreamSerializationAllowed = 1;
	cudaLaunchConfig_t cfg = {};
	cfg.gridDim = grid;
	cfg.blockDim = block;
	cfg.dynamicSmemBytes = smem;
	cfg.stream = st;
	cfg.attrs = at;
	cfg.numAttrs = 1;
	return cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
}

#endif
