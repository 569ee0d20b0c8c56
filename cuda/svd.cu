/* svd.cu: GaLore's SVD projector on the device through cuSOLVER (gesvd),
 * loaded at run time with dlopen: the library is 140 MB, so a machine
 * without it (or a bundle that does not carry it) still runs everything
 * else, and lib/galore.c then makes the projector on the host with LAPACK.
 * Row-major in and out, as lib/ is; cuSOLVER is column-major and wants
 * m >= n, so a row-major X (m_r, n_c) with m_r <= n_c is handed over as the
 * column-major X^T (n_c, m_r), whose right singular vectors (the rows of
 * VT) are X's left ones. */
#include <dlfcn.h>
#include <cusolverDn.h>

#include "blas_cuda.h"
#include "common.cuh"

typedef cusolverStatus_t (*create_fn)(cusolverDnHandle_t *);
typedef cusolverStatus_t (*stream_fn)(cusolverDnHandle_t, cudaStream_t);
typedef cusolverStatus_t (*bufsize_fn)(cusolverDnHandle_t, int, int, int *);
typedef cusolverStatus_t (*gesvd_fn)(cusolverDnHandle_t, signed char, signed char, int, int,
				     float *, int, float *, float *, int, float *, int, float *,
				     int, float *, int *);

static struct {
	int tried;
	void *lib;
	create_fn create;
	stream_fn set_stream;
	bufsize_fn bufsize;
	gesvd_fn gesvd;
	cusolverDnHandle_t h;
} cs;

/* One handle per process, made at the first call (GaLore refreshes every T
 * steps: a handle per call would cost more than the SVD of a small matrix). */
static int load(void)
{
	static const char *const names[] = {"libcusolver.so.12", "libcusolver.so.11",
					    "libcusolver.so"};
	if (cs.tried)
		return cs.h ? 0 : LMK_EUNSUP;
	cs.tried = 1;
	for (size_t i = 0; i < sizeof names / sizeof *names && !cs.lib; i++)
		cs.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
	if (!cs.lib)
		return LMK_EUNSUP;
	cs.create = (create_fn)dlsym(cs.lib, "cusolverDnCreate");
	cs.set_stream = (stream_fn)dlsym(cs.lib, "cusolverDnSetStream");
	cs.bufsize = (bufsize_fn)dlsym(cs.lib, "cusolverDnSgesvd_bufferSize");
	cs.gesvd = (gesvd_fn)dlsym(cs.lib, "cusolverDnSgesvd");
	if (!cs.create || !cs.set_stream || !cs.bufsize || !cs.gesvd ||
	    cs.create(&cs.h) != CUSOLVER_STATUS_SUCCESS) {
		cs.h = NULL;
		return LMK_EUNSUP;
	}
	return 0;
}

extern "C" int lmk_cuda_svd_available(void) { return load() == 0; }

/* out (m_r, r) row-major: the first r left singular vectors of the
 * row-major x (m_r, n_c), m_r <= n_c. */
static int left_rowmajor(lmk_cuda_backend *b, float *out, const float *x, int mr, int nc, int r)
{
	/* column-major A = x^T (nc, mr): m = nc >= n = mr */
	const int m = nc, n = mr;
	int lwork = 0;
	if (cs.set_stream(cs.h, b->stream) != CUSOLVER_STATUS_SUCCESS ||
	    cs.bufsize(cs.h, m, n, &lwork) != CUSOLVER_STATUS_SUCCESS)
		return lmk_err(LMK_EDEVICE, "cusolver: gesvd workspace query failed for %d x %d", m, n);
	/* scratch: A (m n), S (n), VT (n n), work (lwork), rwork (n), info */
	size_t need = (size_t)m * n + (size_t)n + (size_t)n * n + (size_t)lwork + (size_t)n + 4;
	float *a = (float *)lmk_cuda_scratch(b, need * sizeof(float));
	if (!a)
		return lmk_errcode();
	float *s = a + (size_t)m * n, *vt = s + n, *work = vt + (size_t)n * n, *rwork = work + lwork;
	int *info = (int *)(rwork + n);
	LMK_CK(cudaMemcpyAsync(a, x, (size_t)m * n * sizeof(float), cudaMemcpyDeviceToDevice,
			       b->stream));
	if (cs.gesvd(cs.h, 'N', 'A', m, n, a, m, s, NULL, 1, vt, n, work, lwork, rwork, info) !=
	    CUSOLVER_STATUS_SUCCESS)
		return lmk_err(LMK_EDEVICE, "cusolver: gesvd failed for %d x %d", m, n);
	int hinfo = 0;
	LMK_CK(cudaMemcpyAsync(&hinfo, info, sizeof hinfo, cudaMemcpyDeviceToHost, b->stream));
	LMK_CK(cudaStreamSynchronize(b->stream));
	if (hinfo != 0)
		return lmk_err(LMK_ENUM, "cusolver: gesvd did not converge (info %d): a NaN or "
			       "infinite gradient?", hinfo);
	/* left vector k of x is row k of VT: out[j][k] = VT[k + j n] */
	LMK_CK(cudaMemcpy2DAsync(out, (size_t)r * sizeof(float), vt, (size_t)n * sizeof(float),
				 (size_t)r * sizeof(float), (size_t)mr, cudaMemcpyDeviceToDevice,
				 b->stream));
	return 0;
}

/* Row-major transpose (rows, cols) -> (cols, rows) through cuBLAS geam. */
static int transpose(lmk_cuda_backend *b, float *dst, const float *src, int rows, int cols)
{
	const float one = 1.0f, zero = 0.0f;
	LMK_CK(cublasSetStream(b->blas, b->stream));
	/* column-major view: src is (cols, rows) ld cols; dst = src^T (rows, cols) ld rows */
	LMK_CK(cublasSgeam(b->blas, CUBLAS_OP_T, CUBLAS_OP_N, rows, cols, &one, src, cols, &zero,
			   dst, rows, dst, rows));
	return 0;
}

extern "C" int lmk_cuda_svd_projector(void *be, float *out, const float *g, int rows, int cols,
				      int r, int left)
{
	lmk_cuda_backend *b = LMK_BE(be);
	if (load() < 0)
		return lmk_err(LMK_EUNSUP, "cusolver is not available (no libcusolver.so.12)");
	if (r < 1 || r > (rows < cols ? rows : cols))
		return lmk_err(LMK_EINVAL, "svd projector: rank %d for %d x %d", r, rows, cols);
	if (left && rows <= cols)
		return left_rowmajor(b, out, g, rows, cols, r);
	/* otherwise through the transpose: the left vectors of g^T (cols, rows)
	 * are g's right ones; a left projector of a tall g the same way */
	float *t = NULL, *p = NULL;
	LMK_CK(cudaMallocAsync((void **)&t, (size_t)rows * cols * sizeof(float), b->stream));
	int rc = transpose(b, t, g, rows, cols);
	if (rc == 0 && !left && cols <= rows) {
		/* Q (r, cols) = P'^T with P' (cols, r) the left vectors of g^T */
		if (cudaMallocAsync((void **)&p, (size_t)cols * r * sizeof(float), b->stream) != cudaSuccess)
			rc = lmk_err(LMK_ENOMEM, "svd projector: cannot allocate %d x %d", cols, r);
		if (rc == 0)
			rc = left_rowmajor(b, p, t, cols, rows, r);
		if (rc == 0)
			rc = transpose(b, out, p, cols, r);
		if (p)
			cudaFreeAsync(p, b->stream);
	} else if (rc == 0) {
		rc = lmk_err(LMK_EUNSUP, "svd projector: side %s of a %d x %d matrix is not GaLore's",
			     left ? "left" : "right", rows, cols);
	}
	cudaFreeAsync(t, b->stream);
	return rc;
}
