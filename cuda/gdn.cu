/* gdn.cu: Gated DeltaNet and its log-linear version on the GPU (gdn_cuda.h).
 * The recurrence of lib/gdn.c, split by value column: column c of every
 * level state S^(l) (Dk x Dv) evolves on its own given k_t, beta_t, a_t and
 * v_t[c], so a group of 8 lanes owns one column, each lane rows g, g+8, ...
 * (rows padded to a multiple of 8 with k = q = 0), and the only sums a
 * column needs (kᵀS, qᵀS) are shuffles inside the group.
 * State layout of a block: element (l, row g+8i, column of thread tid) at
 * (l*rpl + i)*bd + tid (bd threads), so that each thread touches only its own
 * elements (no synchronisation for the state) and a warp's accesses are
 * consecutive. Shape letters as in lib/gdn.h.
 * The chunked kernels come in two sets: float32 on CUDA cores (any head
 * dims, log-linear, float32), and for plain GDN in BF16 with Dk, Dv in
 * {64, 128} the tensor-core kernels (section "tensor cores" below). */
#include "common.cuh"
#include "gdn_cuda.h"
#include "mma.cuh"

#define GDN_G 8     /* lanes per column */
#define GDN_TT 16   /* tokens per tile of the forward */
#define GDN_RMAX 16 /* rows per lane: Dk <= 128 */

/* The sum over the 8 lanes of a column group (all 32 lanes call it). */
static __device__ __forceinline__ float gsum8(float x)
{
	x += __shfl_xor_sync(0xffffffffu, x, 1);
	x += __shfl_xor_sync(0xffffffffu, x, 2);
	x += __shfl_xor_sync(0xffffffffu, x, 4);
	return x;
}

/* The sum over the 4 column groups of a warp, per lane position. */
static __device__ __forceinline__ float csum4(float x)
{
	x += __shfl_xor_sync(0xffffffffu, x, 8);
	x += __shfl_xor_sync(0xffffffffu, x, 16);
	return x;
}

/* Level l holds keys for query t: level 0 always, l >= 1 when bit l-1 of t
 * is set (lib/gdn.c, live). */
static __device__ __forceinline__ bool glive(int64_t t, int l)
{
	return l == 0 || ((t >> (l - 1)) & 1);
}

static __device__ __forceinline__ int gctz(int64_t t) { return __ffsll((long long)t) - 1; }

/* lmk_fenwick_level on the device */
static __device__ __forceinline__ int lmk_fenwick_level_d(int64_t t, int64_t s)
{
	unsigned long long x = (unsigned long long)(t ^ s);
	return x ? 64 - __clzll((long long)x) : 0;
}

#define GDN_RECURRENT 1 /* LMK_GDN_RECURRENT of lib/gdn.h */

/* One step of the recurrence at position t for the thread's elements of S
 * (stride st between them): the carry of the binary counter (log-linear),
 * the transitions of the live levels, the new token's k vᵀ. kk (rpl*8) is
 * the token's k, vc its value in this thread's column. */
static __device__ __forceinline__ void state_step(float *S, int st, int rpl, int nlev, int ll,
						  int64_t t, const float *kk, float a, float bb,
						  float vc, int g)
{
	if (ll && t > 0) {
		int j = gctz(t);
		for (int i = 0; i < rpl; i++) {
			float s = 0;
			for (int l = 0; l <= j; l++) {
				s += S[(l * rpl + i) * st];
				S[(l * rpl + i) * st] = 0;
			}
			S[((j + 1) * rpl + i) * st] += s;
		}
	}
	for (int l = ll ? 1 : 0; l < (ll ? nlev : 1); l++) {
		if (ll && !glive(t, l))
			continue;
		float p = 0;
		for (int i = 0; i < rpl; i++)
			p += kk[g + GDN_G * i] * S[(l * rpl + i) * st];
		p = gsum8(p);
		for (int i = 0; i < rpl; i++) {
			float *x = &S[(l * rpl + i) * st];
			*x = a * (*x - bb * kk[g + GDN_G * i] * p);
		}
	}
	for (int i = 0; i < rpl; i++) {
		float kv = bb * kk[g + GDN_G * i] * vc;
		float *x = &S[i * st];
		*x = ll ? kv : *x + kv;
	}
}

/* ------------------------------------------------------------ forward */

/* grid (B*H, column blocks), bd = cpb*8 threads. Positions are t0 + t;
 * state (B,H,nlev,Dk,Dv) is read first and written last when not NULL
 * (decoding). lam holds NL >= the live levels; levels >= NL read as 0. */
template <class T>
__global__ void gdn_fwd_kernel(T *out /*(B,Tn,H,Dv)*/, const T *q /*(B,Tn,H,Dk)*/,
			       const T *k /*(B,Tn,H,Dk)*/, const T *v /*(B,Tn,H,Dv)*/,
			       const T *la /*(B,Tn,H) or NULL*/, const T *be /*(B,Tn,H)*/,
			       const T *lam /*(B,Tn,H,NL) or NULL*/,
			       float *state /*(B,H,nlev,Dk,Dv) or NULL*/, int64_t Tn, int64_t H,
			       int Dk, int Dv, int64_t NL, int nlev, int rpl, int cpb, int64_t t0,
			       float scale)
{
	extern __shared__ float sh[];
	const int bd = blockDim.x, tid = threadIdx.x, g = tid % GDN_G, cl = tid / GDN_G;
	const int c = blockIdx.y * cpb + cl;
	const int64_t bh = blockIdx.x, b = bh / H, h = bh % H;
	const int ll = lam != NULL, dkp = rpl * GDN_G;
	float *S = sh;                                  /* (nlev,rpl,bd) */
	float *tk = S + (size_t)nlev * rpl * bd;        /* (TT,dkp) */
	float *tq = tk + GDN_TT * dkp;                  /* (TT,dkp) */
	float *tv = tq + GDN_TT * dkp;                  /* (TT,cpb) */
	float *ta = tv + GDN_TT * cpb;                  /* (TT) */
	float *tb = ta + GDN_TT;                        /* (TT) */
	float *tl = tb + GDN_TT;                        /* (TT,nlev) */
	for (int l = 0; l < nlev; l++)
		for (int i = 0; i < rpl; i++) {
			int r = g + GDN_G * i;
			float x = 0;
			if (state && r < Dk && c < Dv)
				x = state[((bh * nlev + l) * Dk + r) * Dv + c];
			S[(l * rpl + i) * bd + tid] = x;
		}
	for (int64_t tb0 = 0; tb0 < Tn; tb0 += GDN_TT) {
		int n = Tn - tb0 < GDN_TT ? (int)(Tn - tb0) : GDN_TT;
		__syncthreads(); /* the previous tile has been read */
		for (int e = tid; e < GDN_TT * dkp; e += bd) {
			int tt = e / dkp, r = e % dkp;
			float kx = 0, qx = 0;
			if (tt < n && r < Dk) {
				int64_t idx = ((b * Tn + tb0 + tt) * H + h) * Dk + r;
				kx = tof(k[idx]);
				qx = tof(q[idx]);
			}
			tk[e] = kx;
			tq[e] = qx;
		}
		for (int e = tid; e < GDN_TT * cpb; e += bd) {
			int tt = e / cpb, cc = blockIdx.y * cpb + e % cpb;
			float x = 0;
			if (tt < n && cc < Dv)
				x = tof(v[((b * Tn + tb0 + tt) * H + h) * Dv + cc]);
			tv[e] = x;
		}
		for (int e = tid; e < GDN_TT; e += bd) {
			float a = 1, bb = 0;
			if (e < n) {
				int64_t idx = (b * Tn + tb0 + e) * H + h;
				if (la)
					a = expf(tof(la[idx]));
				bb = tof(be[idx]);
			}
			ta[e] = a;
			tb[e] = bb;
		}
		if (ll)
			for (int e = tid; e < GDN_TT * nlev; e += bd) {
				int tt = e / nlev, l = e % nlev;
				float x = 0;
				if (tt < n && l < NL)
					x = tof(lam[((b * Tn + tb0 + tt) * H + h) * NL + l]);
				tl[e] = x;
			}
		__syncthreads();
		for (int tt = 0; tt < n; tt++) {
			int64_t t = t0 + tb0 + tt;
			const float *kk = tk + tt * dkp, *qq = tq + tt * dkp;
			state_step(S + tid, bd, rpl, nlev, ll, t, kk, ta[tt], tb[tt], tv[tt * cpb + cl],
				   g);
			float o = 0;
			for (int l = 0; l < (ll ? nlev : 1); l++) {
				if (ll && !glive(t, l))
					continue;
				float s = 0;
				for (int i = 0; i < rpl; i++)
					s += qq[g + GDN_G * i] * S[(l * rpl + i) * bd + tid];
				o += (ll ? tl[tt * nlev + l] : 1.0f) * s;
			}
			o = gsum8(o);
			if (g == 0 && c < Dv)
				out[((b * Tn + tb0 + tt) * H + h) * Dv + c] = fromf<T>(scale * o);
		}
	}
	if (state)
		for (int l = 0; l < nlev; l++)
			for (int i = 0; i < rpl; i++) {
				int r = g + GDN_G * i;
				if (r < Dk && c < Dv)
					state[((bh * nlev + l) * Dk + r) * Dv + c] =
						S[(l * rpl + i) * bd + tid];
			}
}

static int levels_of(int64_t T)
{
	return T <= 1 ? 1 : 1 + (64 - __builtin_clzll((unsigned long long)(T - 1)));
}

static int check_dims(const char *who, int64_t Dk, int64_t Dv)
{
	if (Dk < 1 || Dk > GDN_RMAX * GDN_G || Dv < 1 || Dv > 128)
		return lmk_err(LMK_EUNSUP, "%s: head dims Dk %lld, Dv %lld: the cuda kernels take "
			       "1..128", who, (long long)Dk, (long long)Dv);
	return 0;
}

static int rows_per_lane(int64_t Dk)
{
	int r = 1;
	while (r * GDN_G < Dk)
		r *= 2;
	return r;
}

template <class T>
static int fwd_launch(lmk_cuda_backend *b, T *out, const T *q, const T *k, const T *v,
		      const T *la, const T *be, const T *lam, float *state, int64_t B, int64_t Tn,
		      int64_t H, int64_t Dk, int64_t Dv, int64_t NL, int nlev, int64_t t0,
		      float scale)
{
	int rpl = rows_per_lane(Dk), dkp = rpl * GDN_G;
	int dvp = (int)((Dv + 3) / 4 * 4);
	int cpb = lam ? 8 : 16;
	if (cpb > dvp)
		cpb = dvp;
	int bd = cpb * GDN_G;
	size_t smem = sizeof(float) * ((size_t)nlev * rpl * bd +
				       (size_t)GDN_TT * (2 * dkp + cpb + 2 + nlev));
	if (smem > 200 * 1024)
		return lmk_err(LMK_EUNSUP, "gdn: %d levels of %lldx%lld states do not fit in "
			       "shared memory", nlev, (long long)Dk, (long long)Dv);
	if (smem > 48 * 1024)
		LMK_CK(cudaFuncSetAttribute(gdn_fwd_kernel<T>,
					    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
	dim3 grid((unsigned)(B * H), (unsigned)((Dv + cpb - 1) / cpb));
	gdn_fwd_kernel<T><<<grid, bd, smem, b->stream>>>(out, q, k, v, la, be, lam, state, Tn, H,
							  (int)Dk, (int)Dv, NL, nlev, rpl, cpb,
							  t0, scale);
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_gdn_step(void *be, lmk_dtype dt, float *S, void *out, const void *q,
				 const void *k, const void *v, const void *loga, const void *beta,
				 const void *lam, int64_t B, int64_t H, int64_t Dk, int64_t Dv,
				 int64_t NL, int nlev, int64_t t, float scale)
{
	if (check_dims("gdn step", Dk, Dv) < 0)
		return LMK_EUNSUP;
	LMK_DT_SWITCH(dt, "gdn step",
		      return fwd_launch<T>(LMK_BE(be), (T *)out, (const T *)q, (const T *)k,
					   (const T *)v, (const T *)loga, (const T *)beta,
					   (const T *)lam, S, B, 1, H, Dk, Dv, NL, nlev, t, scale));
	return 0;
}

/* ----------------------------------------------------------- backward */

/* The gradients of the backward, one per input. */
struct gdn_grads {
	gacc q, k, v, la, be, lam;
};

/* Loads token t into shared memory: k, q (dkp, zero padded), v, dout (cpb,
 * zero padded), lam (nlev), a and beta (sab[0], sab[1]). */
template <class T>
static __device__ void load_token(float *kk, float *qq, float *vv, float *dd, float *lm,
				  float *sab, const T *q, const T *k, const T *v, const T *dout,
				  const T *la, const T *be, const T *lam, int64_t b, int64_t h,
				  int64_t t, int64_t Tn, int64_t H, int Dk, int Dv, int64_t NL,
				  int nlev, int dkp, int cpb, bool full)
{
	const int tid = threadIdx.x, bd = blockDim.x;
	const int64_t bt = (b * Tn + t) * H + h;
	for (int e = tid; e < dkp; e += bd) {
		kk[e] = e < Dk ? tof(k[bt * Dk + e]) : 0.0f;
		if (full)
			qq[e] = e < Dk ? tof(q[bt * Dk + e]) : 0.0f;
	}
	for (int e = tid; e < cpb; e += bd) {
		vv[e] = e < Dv ? tof(v[bt * Dv + e]) : 0.0f;
		if (full)
			dd[e] = e < Dv ? tof(dout[bt * Dv + e]) : 0.0f;
	}
	if (full && lam)
		for (int e = tid; e < nlev; e += bd)
			lm[e] = e < NL ? tof(lam[bt * NL + e]) : 0.0f;
	if (tid == 0) {
		sab[0] = la ? expf(tof(la[bt])) : 1.0f;
		sab[1] = tof(be[bt]);
	}
}

/* One block per head, bd = cpb*8 threads covering every column (cpb = Dv
 * rounded up to 4). scr holds, per head, nw checkpoints, a window of W
 * states and the state gradient: (nw + W + 1) (nlev,rpl,bd) floats. */
template <class T>
__global__ void __launch_bounds__(1024)
gdn_bwd_kernel(gdn_grads gr, const T *dout /*(B,Tn,H,Dv)*/, const T *q /*(B,Tn,H,Dk)*/,
	       const T *k /*(B,Tn,H,Dk)*/, const T *v /*(B,Tn,H,Dv)*/,
	       const T *la /*(B,Tn,H) or NULL*/, const T *be /*(B,Tn,H)*/,
	       const T *lam /*(B,Tn,H,NL) or NULL*/, float *scr, int64_t Tn, int64_t H, int Dk,
	       int Dv, int64_t NL, int nlev, int rpl, int64_t W, float scale)
{
	extern __shared__ float sh[];
	const int bd = blockDim.x, tid = threadIdx.x, g = tid % GDN_G, c = tid / GDN_G;
	const int lane = tid % 32, warp = tid / 32, nwarp = bd / 32;
	const int cpb = bd / GDN_G, dkp = rpl * GDN_G, ll = lam != NULL, nsc = 2 + nlev;
	const int64_t bh = blockIdx.x, b = bh / H, h = bh % H;
	float *kk = sh, *qq = kk + dkp, *vv = qq + dkp, *dd = vv + cpb, *lm = dd + cpb;
	float *sab = lm + nlev, *rq = sab + 2, *rk = rq + nwarp * dkp, *rs = rk + nwarp * dkp;
	const int64_t SZ = (int64_t)nlev * rpl * bd, nw = (Tn + W - 1) / W;
	float *ck = scr + bh * (nw + W + 1) * SZ, *win = ck + nw * SZ, *dS = win + W * SZ;

	/* checkpoints at window starts (win holds the running state) */
	for (int64_t e = 0; e < SZ / bd; e++)
		win[e * bd + tid] = 0;
	for (int64_t t = 0; t < Tn; t++) {
		if (t % W == 0)
			for (int64_t e = 0; e < SZ / bd; e++)
				ck[(t / W) * SZ + e * bd + tid] = win[e * bd + tid];
		__syncthreads();
		load_token<T>(kk, qq, vv, dd, lm, sab, q, k, v, dout, la, be, lam, b, h, t, Tn, H,
			      Dk, Dv, NL, nlev, dkp, cpb, false);
		__syncthreads();
		state_step(win + tid, bd, rpl, nlev, ll, t, kk, sab[0], sab[1], vv[c], g);
	}
	for (int64_t e = 0; e < SZ / bd; e++)
		dS[e * bd + tid] = 0;
	for (int64_t wi = nw - 1; wi >= 0; wi--) {
		int64_t t0 = wi * W, t1 = t0 + W < Tn ? t0 + W : Tn;
		/* win[s] = the state before step t0 + s */
		for (int64_t e = 0; e < SZ / bd; e++)
			win[e * bd + tid] = ck[wi * SZ + e * bd + tid];
		for (int64_t t = t0; t + 1 < t1; t++) {
			float *dst = win + (t + 1 - t0) * SZ;
			for (int64_t e = 0; e < SZ / bd; e++)
				dst[e * bd + tid] = win[(t - t0) * SZ + e * bd + tid];
			__syncthreads();
			load_token<T>(kk, qq, vv, dd, lm, sab, q, k, v, dout, la, be, lam, b, h, t,
				      Tn, H, Dk, Dv, NL, nlev, dkp, cpb, false);
			__syncthreads();
			state_step(dst + tid, bd, rpl, nlev, ll, t, kk, sab[0], sab[1], vv[c], g);
		}
		for (int64_t t = t1 - 1; t >= t0; t--) {
			__syncthreads();
			load_token<T>(kk, qq, vv, dd, lm, sab, q, k, v, dout, la, be, lam, b, h, t,
				      Tn, H, Dk, Dv, NL, nlev, dkp, cpb, true);
			__syncthreads();
			const float a = sab[0], bb = sab[1], vc = vv[c], doc = scale * dd[c];
			const float *So = win + (t - t0) * SZ + tid;
			float *D = dS + tid;
			float xq[GDN_RMAX], xk[GDN_RMAX], N[GDN_RMAX];
#pragma unroll
			for (int i = 0; i < GDN_RMAX; i++)
				xq[i] = xk[i] = 0;
			float pa = 0, pb = 0;
			const int j = ll && t > 0 ? gctz(t) : -1;
			for (int l = 0; l < (ll ? nlev : 1); l++) {
				if (ll && !glive(t, l))
					continue;
				const bool trans = !ll || l > 0, input = !ll || l == 0;
				/* N: this level's state before the transition */
#pragma unroll
				for (int i = 0; i < GDN_RMAX; i++) {
					N[i] = 0;
					if (i < rpl && trans) {
						N[i] = So[(l * rpl + i) * bd];
						if (ll && l == j + 1)
							for (int m = 0; m <= j; m++)
								N[i] += So[(m * rpl + i) * bd];
					}
				}
				float p = 0;
				if (trans) {
#pragma unroll
					for (int i = 0; i < GDN_RMAX; i++)
						if (i < rpl)
							p += kk[g + GDN_G * i] * N[i];
					p = gsum8(p);
				}
				/* the output's gradient through S_new = a (N - b k pᵀ) + b k vᵀ */
				const float w = ll ? lm[l] : 1.0f;
				float yl = 0;
#pragma unroll
				for (int i = 0; i < GDN_RMAX; i++)
					if (i < rpl) {
						float ki = kk[g + GDN_G * i], qi = qq[g + GDN_G * i];
						float sn = trans ? a * (N[i] - bb * ki * p) : 0.0f;
						if (input)
							sn += bb * ki * vc;
						xq[i] += w * sn * doc;
						yl += qi * sn * doc;
						D[(l * rpl + i) * bd] += w * qi * doc;
					}
				if (ll) {
					yl = warp_sum(yl);
					if (lane == 0)
						rs[warp * nsc + 2 + l] = yl;
				}
				if (input) { /* beta k vᵀ */
					float rv = 0;
#pragma unroll
					for (int i = 0; i < GDN_RMAX; i++)
						if (i < rpl) {
							float di = D[i * bd];
							rv += kk[g + GDN_G * i] * di;
							xk[i] += bb * di * vc;
						}
					rv = gsum8(rv);
					if (g == 0) {
						if (gr.v.p && c < Dv)
							gadd(gr.v, ((b * Tn + t) * H + h) * Dv + c, bb * rv);
						pb += rv * vc;
					}
				}
				if (trans) { /* Y = a (N - b k pᵀ): dY is D */
					float r = 0, dyn = 0;
#pragma unroll
					for (int i = 0; i < GDN_RMAX; i++)
						if (i < rpl) {
							float di = D[(l * rpl + i) * bd];
							r += kk[g + GDN_G * i] * di;
							dyn += di * N[i];
						}
					r = gsum8(r);
					pa += dyn;
					if (g == 0) {
						pa -= bb * r * p;
						pb -= a * r * p;
					}
#pragma unroll
					for (int i = 0; i < GDN_RMAX; i++)
						if (i < rpl) {
							float ki = kk[g + GDN_G * i];
							float *di = &D[(l * rpl + i) * bd];
							xk[i] -= a * bb * (*di * p + N[i] * r);
							*di = a * (*di - bb * ki * r);
						}
				}
			}
			if (ll && t > 0) /* the carry's backward */
				for (int i = 0; i < rpl; i++) {
					float G = D[((j + 1) * rpl + i) * bd];
					for (int m = 0; m <= j; m++)
						D[(m * rpl + i) * bd] = G;
				}
			/* sums over the columns, in a fixed order */
#pragma unroll
			for (int i = 0; i < GDN_RMAX; i++)
				if (i < rpl) {
					float sq = csum4(xq[i]), sk = csum4(xk[i]);
					if (lane < GDN_G) {
						rq[warp * dkp + g + GDN_G * i] = sq;
						rk[warp * dkp + g + GDN_G * i] = sk;
					}
				}
			pa = warp_sum(pa);
			pb = warp_sum(pb);
			if (lane == 0) {
				rs[warp * nsc] = pa;
				rs[warp * nsc + 1] = pb;
			}
			__syncthreads();
			const int64_t bt = (b * Tn + t) * H + h;
			for (int e = tid; e < Dk; e += bd) {
				float sq = 0, sk = 0;
				for (int w2 = 0; w2 < nwarp; w2++) {
					sq += rq[w2 * dkp + e];
					sk += rk[w2 * dkp + e];
				}
				if (gr.q.p)
					gadd(gr.q, bt * Dk + e, sq);
				if (gr.k.p)
					gadd(gr.k, bt * Dk + e, sk);
			}
			if (tid == 0) {
				float da = 0, db = 0;
				for (int w2 = 0; w2 < nwarp; w2++) {
					da += rs[w2 * nsc];
					db += rs[w2 * nsc + 1];
				}
				if (gr.la.p)
					gadd(gr.la, bt, da * a);
				if (gr.be.p)
					gadd(gr.be, bt, db);
			}
			if (ll && gr.lam.p)
				for (int l = tid; l < nlev; l += bd) {
					if (!glive(t, l))
						continue;
					float s = 0;
					for (int w2 = 0; w2 < nwarp; w2++)
						s += rs[w2 * nsc + 2 + l];
					gadd(gr.lam, bt * NL + l, s);
				}
		}
	}
}

/* ============================================================ chunked */

/* The chunked form of lib/gdn.c (chunk_prep, head_chunked,
 * head_chunked_bwd) with chunks of GC tokens, in float32 on CUDA cores:
 *  prep  (grid chunks x heads): per chunk g, Tm, P, A and the chunk record
 *        wk = Tm diag(b gamma) K, wv = Tm diag(b) V, qe = diag(gamma) Q - P wk,
 *        kd_j = exp(g_n - g_j) k_j, the intra-chunk output oi and gamma_n;
 *  state (grid heads x column blocks): the states through the chunks in
 *        order: o = oi + scale sum_L w_L qe S_L, then S_L = gamma_n S_L -
 *        kdᵀ (wk S_L) (+ kdᵀ wv: the chunk's own part);
 *  backward (plain only): the entering states (state with sin), the
 *        leaving-state gradients in reverse (bstate), then every chunk's
 *        local gradients at once (local), gathers only, so that each
 *        gradient element is written by one thread. */
#define GC 64

static __host__ __device__ inline int64_t rec_size(int Dk, int Dv)
{
	return (int64_t)GC * (3 * Dk + 2 * Dv) + 4;
}

/* out(m, n) = sum_k A(m, k) B(k, n) for m < M, n < N, handed to st(m, n,
 * value); 4 x 4 outputs a thread, so that each operand read feeds four
 * products; k runs in order (deterministic). Threads of a warp take
 * neighbouring column quads of the same rows: A's reads are broadcasts,
 * B's consecutive. All threads of the block call it. */
template <class FA, class FB, class FS>
static __device__ __forceinline__ void gemm44(int M, int N, int K, FA A, FB B, FS st)
{
	const int tn = (N + 3) / 4, tiles = (M + 3) / 4 * tn;
	for (int t = threadIdx.x; t < tiles; t += blockDim.x) {
		const int m0 = t / tn * 4, n0 = t % tn * 4;
		float acc[4][4];
#pragma unroll
		for (int r = 0; r < 4; r++)
#pragma unroll
			for (int c = 0; c < 4; c++)
				acc[r][c] = 0;
		for (int k = 0; k < K; k++) {
			float a[4], b[4];
#pragma unroll
			for (int r = 0; r < 4; r++)
				a[r] = m0 + r < M ? A(m0 + r, k) : 0.0f;
#pragma unroll
			for (int c = 0; c < 4; c++)
				b[c] = n0 + c < N ? B(k, n0 + c) : 0.0f;
#pragma unroll
			for (int r = 0; r < 4; r++)
#pragma unroll
				for (int c = 0; c < 4; c++)
					acc[r][c] += a[r] * b[c];
		}
#pragma unroll
		for (int r = 0; r < 4; r++)
#pragma unroll
			for (int c = 0; c < 4; c++)
				if (m0 + r < M && n0 + c < N)
					st(m0 + r, n0 + c, acc[r][c]);
	}
}

/* Loads a chunk (n tokens, token tok0 + i*H for row i) into shared memory
 * and builds its matrices: Ks, Qs (GC, ldk) with zero rows past n, g (the
 * in-chunk cumulative log decay, constant past n), gam = exp(g), bet (0
 * past n), KKe_ij = exp(g_i - g_j) k_i.k_j (j < i), P_ij = exp(g_i - g_j)
 * q_i.k_j (j <= i), Tm = (I + diag(bet) KKe)^-1 (column s by thread s: a
 * column of a unit lower triangular inverse needs only its own entries). */
template <class T>
static __device__ void chunk_setup(float *Ks, float *Qs, float *g, float *gam, float *bet,
				   float *KKe, float *P, float *Tm, const T *q, const T *k,
				   const T *la, const T *be, int64_t tok0, int64_t H, int Dk, int n)
{
	const int tid = threadIdx.x, bd = blockDim.x, ldk = Dk + 1;
	for (int e = tid; e < GC * Dk; e += bd) {
		int i = e / Dk, d = e % Dk;
		float kx = 0, qx = 0;
		if (i < n) {
			int64_t idx = (tok0 + (int64_t)i * H) * Dk + d;
			kx = tof(k[idx]);
			qx = tof(q[idx]);
		}
		Ks[i * ldk + d] = kx;
		Qs[i * ldk + d] = qx;
	}
	for (int i = tid; i < GC; i += bd)
		bet[i] = i < n ? tof(be[tok0 + (int64_t)i * H]) : 0.0f;
	if (tid == 0) {
		float acc = 0;
		for (int i = 0; i < GC; i++) {
			if (i < n && la)
				acc += tof(la[tok0 + (int64_t)i * H]);
			g[i] = acc;
		}
	}
	__syncthreads();
	for (int i = tid; i < GC; i += bd)
		gam[i] = expf(g[i]);
	auto kT = [&](int d, int j) { return Ks[j * ldk + d]; };
	gemm44(
		GC, GC, Dk, [&](int i, int d) { return Ks[i * ldk + d]; }, kT,
		[&](int i, int j, float x) { KKe[i * GC + j] = j < i ? expf(g[i] - g[j]) * x : 0.0f; });
	gemm44(
		GC, GC, Dk, [&](int i, int d) { return Qs[i * ldk + d]; }, kT,
		[&](int i, int j, float x) { P[i * GC + j] = j <= i ? expf(g[i] - g[j]) * x : 0.0f; });
	__syncthreads();
	for (int s = tid; s < GC; s += bd)
		for (int i = 0; i < GC; i++) {
			float x = i == s ? 1.0f : 0.0f;
			if (i > s) {
				float acc = 0;
				for (int j = s; j < i; j++)
					acc += bet[i] * KKe[i * GC + j] * Tm[j * GC + s];
				x = -acc;
			}
			Tm[i * GC + s] = x;
		}
	__syncthreads();
}

static size_t setup_floats(int Dk) { return (size_t)2 * GC * (Dk + 1) + 3 * GC + 3 * GC * GC; }

/* grid (chunks, B*H), 256 threads: the chunk record (see above) at
 * rec + (bh*nch + ci) * rec_size: wk (GC,Dk), wv (GC,Dv), qe (GC,Dk),
 * kd (GC,Dk), oi (GC,Dv), gamma_n. */
template <class T>
__global__ void gdn_chunk_prep(float *rec, const T *q /*(B,Tn,H,Dk)*/, const T *k /*(B,Tn,H,Dk)*/,
			       const T *v /*(B,Tn,H,Dv)*/, const T *la /*(B,Tn,H) or NULL*/,
			       const T *be /*(B,Tn,H)*/, const T *lam /*(B,Tn,H,NL) or NULL*/,
			       int64_t Tn, int64_t H, int Dk, int Dv, int64_t NL, int nch,
			       float scale)
{
	extern __shared__ float sh[];
	const int tid = threadIdx.x, bd = blockDim.x, ldk = Dk + 1, ci = blockIdx.x;
	const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, t0 = (int64_t)ci * GC;
	const int n = Tn - t0 < GC ? (int)(Tn - t0) : GC;
	const int64_t tok0 = (b * Tn + t0) * H + h;
	float *Ks = sh, *Qs = Ks + GC * ldk, *g = Qs + GC * ldk, *gam = g + GC, *bet = gam + GC;
	float *KKe = bet + GC, *P = KKe + GC * GC, *Tm = P + GC * GC;
	chunk_setup<T>(Ks, Qs, g, gam, bet, KKe, P, Tm, q, k, la, be, tok0, H, Dk, n);
	float *A = KKe; /* KKe is not read after Tm */
	gemm44(
		GC, GC, GC, [&](int i, int j) { return P[i * GC + j]; },
		[&](int j, int s2) { return Tm[j * GC + s2]; },
		[&](int i, int s2, float x) {
			float a = s2 <= i && i < n ? x * bet[s2] : 0.0f;
			if (lam && s2 <= i && i < n)
				a *= tof(lam[(tok0 + (int64_t)i * H) * NL +
					     lmk_fenwick_level_d(t0 + i, t0 + s2)]);
			A[i * GC + s2] = a;
		});
	__syncthreads();
	float *R = rec + ((int64_t)bh * nch + ci) * rec_size(Dk, Dv);
	float *wk = R, *wv = wk + GC * Dk, *qe = wv + GC * Dv, *kd = qe + GC * Dk, *oi = kd + GC * Dk;
	const float gl = g[n - 1];
	auto tm = [&](int j, int s2) { return Tm[j * GC + s2]; };
	gemm44(
		GC, Dk, GC, tm, [&](int s2, int d) { return bet[s2] * gam[s2] * Ks[s2 * ldk + d]; },
		[&](int j, int d, float x) { wk[j * Dk + d] = x; });
	for (int e = tid; e < GC * Dk; e += bd) {
		int j = e / Dk, d = e % Dk;
		kd[e] = expf(gl - g[j]) * Ks[j * ldk + d];
	}
	auto vv = [&](int s2, int c) {
		return s2 < n ? tof(v[(tok0 + (int64_t)s2 * H) * Dv + c]) : 0.0f;
	};
	gemm44(
		GC, Dv, GC, [&](int j, int s2) { return Tm[j * GC + s2] * bet[s2]; }, vv,
		[&](int j, int c, float x) { wv[j * Dv + c] = x; });
	gemm44(
		GC, Dv, GC, [&](int i, int s2) { return A[i * GC + s2]; }, vv,
		[&](int i, int c, float x) { oi[i * Dv + c] = scale * x; });
	if (tid == 0)
		oi[GC * Dv] = expf(gl);
	__syncthreads(); /* wk is read back */
	gemm44(
		GC, Dk, GC, [&](int i, int j) { return P[i * GC + j]; },
		[&](int j, int d) { return wk[j * Dk + d]; },
		[&](int i, int d, float x) { qe[i * Dk + d] = gam[i] * Qs[i * ldk + d] - x; });
}

/* Register tiles of the state passes (bd = 256 threads, cb of 8 or 16
 * columns, so that bd/cb divides GC): a thread owns column cc = tid % cb
 * and the rows tid/cb + r*(bd/cb), so that each operand read from shared
 * memory feeds 2 to 8 products instead of one. */

/* acc[r] = sum_d A[i*Dk + d] X[d*cb + cc], i = tid/cb + r*(bd/cb) < GC:
 * (GC,Dk) times (Dk,cb). */
static __device__ __forceinline__ void tile_rows(float *acc /*[4]*/, const float *A,
						 const float *X, int Dk, int cb)
{
	const int cc = threadIdx.x % cb, i0 = threadIdx.x / cb, RS = blockDim.x / cb;
#pragma unroll
	for (int r = 0; r < 4; r++)
		acc[r] = 0;
	for (int d = 0; d < Dk; d++) {
		float x = X[d * cb + cc];
#pragma unroll
		for (int r = 0; r < 4; r++)
			if (r * RS < GC)
				acc[r] += A[(i0 + r * RS) * Dk + d] * x;
	}
}

/* acc[r] += sgn sum_j Bm[j*Dk + d] Y[j*cb + cc], d = tid/cb + r*(bd/cb) <
 * Dk: (GC,Dk)ᵀ times (GC,cb). */
static __device__ __forceinline__ void tile_cols(float *acc /*[8]*/, const float *Bm,
						 const float *Y, int Dk, int cb, float sgn)
{
	const int cc = threadIdx.x % cb, d0 = threadIdx.x / cb, DS = blockDim.x / cb;
	for (int j = 0; j < GC; j++) {
		float y = sgn * Y[j * cb + cc];
#pragma unroll
		for (int r = 0; r < 8; r++) {
			int d = d0 + r * DS;
			if (d < Dk)
				acc[r] += Bm[j * Dk + d] * y;
		}
	}
}

/* grid (B*H, column blocks of cb), 256 threads: the states through the
 * chunks, (nlevc,Dk,cb) in shared memory. out (may be NULL) gets the
 * outputs; sin (may be NULL) the states entering each chunk (after the
 * log-linear carry), (B*H, nch, nlevc, Dk, Dv). Log-linear: level L >= 1 of chunk ci is weighted by
 * lam[lc + L] (lc = log2 GC). */
template <class T>
__global__ void gdn_chunk_state(T *out /*(B,Tn,H,Dv)*/, float *sin, const float *rec,
				const T *lam /*(B,Tn,H,NL) or NULL*/, int64_t Tn, int64_t H, int Dk,
				int Dv, int64_t NL, int nch, int nlevc, int cb, float scale)
{
	extern __shared__ float sh[];
	const int tid = threadIdx.x, bd = blockDim.x, ll = lam != NULL, lc = 6;
	const int64_t bh = blockIdx.x, b = bh / H, h = bh % H;
	const int c0 = blockIdx.y * cb;
	const int64_t DC = (int64_t)Dk * cb;
	float *Sg = sh, *qe = Sg + nlevc * DC, *wk = qe + GC * Dk, *kd = wk + GC * Dk;
	float *wvs = kd + GC * Dk, *ois = wvs + GC * cb, *Y = ois + GC * cb, *lw = Y + GC * cb;
	float *gnp = lw + GC * nlevc;
	for (int64_t e = tid; e < nlevc * DC; e += bd)
		Sg[e] = 0;
	for (int ci = 0; ci < nch; ci++) {
		const int64_t t0 = (int64_t)ci * GC, tok0 = (b * Tn + t0) * H + h;
		const int n = Tn - t0 < GC ? (int)(Tn - t0) : GC;
		const float *R = rec + ((int64_t)bh * nch + ci) * rec_size(Dk, Dv);
		__syncthreads();
		if (ll && ci > 0) {
			int j = gctz(ci);
			for (int64_t e = tid; e < DC; e += bd) {
				float s = 0;
				for (int l = 0; l <= j; l++) {
					s += Sg[l * DC + e];
					Sg[l * DC + e] = 0;
				}
				Sg[(j + 1) * DC + e] += s;
			}
		}
		for (int e = tid; e < GC * Dk; e += bd) {
			wk[e] = R[e];
			qe[e] = R[GC * (Dk + Dv) + e];
			kd[e] = R[GC * (2 * Dk + Dv) + e];
		}
		for (int e = tid; e < GC * cb; e += bd) {
			int j = e / cb, c = c0 + e % cb;
			wvs[e] = c < Dv ? R[GC * Dk + j * Dv + c] : 0.0f;
			ois[e] = c < Dv ? R[GC * (3 * Dk + Dv) + j * Dv + c] : 0.0f;
		}
		if (ll)
			for (int e = tid; e < GC * nlevc; e += bd) {
				int i = e / nlevc, L = e % nlevc;
				lw[e] = i < n && lc + L < NL
						? tof(lam[(tok0 + (int64_t)i * H) * NL + lc + L])
						: 0.0f;
			}
		if (tid == 0)
			gnp[0] = R[GC * (3 * Dk + 2 * Dv)];
		__syncthreads();
		if (sin)
			for (int64_t e = tid; e < nlevc * DC; e += bd) {
				int L = (int)(e / DC), d = (int)(e % DC / cb), c = c0 + (int)(e % cb);
				if (c < Dv)
					sin[(((int64_t)bh * nch + ci) * nlevc + L) * Dk * Dv +
					    (int64_t)d * Dv + c] = Sg[e];
			}
		const int cc = tid % cb, i0 = tid / cb, RS = bd / cb, d0 = tid / cb, DS = bd / cb;
		if (out) {
			float o[4], a[4];
#pragma unroll
			for (int r = 0; r < 4; r++)
				o[r] = r * RS < GC ? ois[(i0 + r * RS) * cb + cc] : 0.0f;
			for (int L = ll ? 1 : 0; L < (ll ? nlevc : 1); L++) {
				if (ll && !glive(ci, L))
					continue;
				tile_rows(a, qe, Sg + L * DC, Dk, cb);
#pragma unroll
				for (int r = 0; r < 4; r++)
					if (r * RS < GC)
						o[r] += scale * (ll ? lw[(i0 + r * RS) * nlevc + L] : 1.0f) * a[r];
			}
#pragma unroll
			for (int r = 0; r < 4; r++) {
				int i = i0 + r * RS;
				if (r * RS < GC && i < n && c0 + cc < Dv)
					out[(tok0 + (int64_t)i * H) * Dv + c0 + cc] = fromf<T>(o[r]);
			}
		}
		if (ci == nch - 1)
			break;
		const float gn = gnp[0];
		for (int L = ll ? 1 : 0; L < (ll ? nlevc : 1); L++) {
			if (ll && !glive(ci, L))
				continue;
			float *S = Sg + L * DC, a[4], acc[8];
			__syncthreads(); /* S and Y are free */
			tile_rows(a, wk, S, Dk, cb);
#pragma unroll
			for (int r = 0; r < 4; r++)
				if (r * RS < GC)
					Y[(i0 + r * RS) * cb + cc] =
						(ll ? 0.0f : wvs[(i0 + r * RS) * cb + cc]) - a[r];
			__syncthreads();
#pragma unroll
			for (int r = 0; r < 8; r++)
				acc[r] = d0 + r * DS < Dk ? gn * S[(d0 + r * DS) * cb + cc] : 0.0f;
			tile_cols(acc, kd, Y, Dk, cb, 1.0f);
#pragma unroll
			for (int r = 0; r < 8; r++)
				if (d0 + r * DS < Dk)
					S[(d0 + r * DS) * cb + cc] = acc[r];
		}
		if (ll) {
			float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
			tile_cols(acc, kd, wvs, Dk, cb, 1.0f);
#pragma unroll
			for (int r = 0; r < 8; r++)
				if (d0 + r * DS < Dk)
					Sg[(d0 + r * DS) * cb + cc] = acc[r];
		}
	}
}

static size_t state_floats(int Dk, int nlevc, int cb)
{
	return (size_t)nlevc * Dk * cb + 3 * GC * Dk + 3 * GC * cb + GC * nlevc + 4;
}

/* grid (B*H, column blocks of cb), 256 threads: the gradients of the states
 * leaving each chunk, in reverse, into dsl (B*H, nch, nlevc, Dk, Dv). A
 * transition level (the state of plain GDN; live levels >= 1 for
 * log-linear) enters with gamma_n dS - wkᵀ (kd dS) + scale qeᵀ (w dout),
 * w its lam weight (1 for plain); log-linear levels 0..j of the carry into
 * chunk ci (j = ctz ci) take level j+1's gradient. */
template <class T>
__global__ void gdn_chunk_bstate(float *dsl, const float *rec, const T *dout /*(B,Tn,H,Dv)*/,
				 const T *lam /*(B,Tn,H,NL) or NULL*/, int64_t Tn, int64_t H,
				 int Dk, int Dv, int64_t NL, int nch, int nlevc, int cb, float scale)
{
	extern __shared__ float sh[];
	const int tid = threadIdx.x, bd = blockDim.x, ll = lam != NULL, lc = 6;
	const int64_t bh = blockIdx.x, b = bh / H, h = bh % H;
	const int c0 = blockIdx.y * cb;
	const int64_t DC = (int64_t)Dk * cb, DD = (int64_t)Dk * Dv;
	float *dS = sh, *qe = dS + nlevc * DC, *wk = qe + GC * Dk, *kd = wk + GC * Dk;
	float *dos = kd + GC * Dk, *Z = dos + GC * cb, *Wd = Z + GC * cb, *lw = Wd + GC * cb;
	float *gnp = lw + GC * nlevc;
	const int cc = tid % cb, i0 = tid / cb, RS = bd / cb, d0 = tid / cb, DS = bd / cb;
	for (int64_t e = tid; e < nlevc * DC; e += bd)
		dS[e] = 0;
	for (int ci = nch - 1; ci >= 0; ci--) {
		const int64_t t0 = (int64_t)ci * GC, tok0 = (b * Tn + t0) * H + h;
		const int n = Tn - t0 < GC ? (int)(Tn - t0) : GC;
		const float *R = rec + ((int64_t)bh * nch + ci) * rec_size(Dk, Dv);
		__syncthreads();
		for (int64_t e = tid; e < nlevc * DC; e += bd) {
			int L = (int)(e / DC), d = (int)(e % DC / cb), c = c0 + (int)(e % cb);
			if (c < Dv)
				dsl[(((int64_t)bh * nch + ci) * nlevc + L) * DD + (int64_t)d * Dv + c] =
					dS[e];
		}
		if (ci == 0)
			break;
		for (int e = tid; e < GC * Dk; e += bd) {
			wk[e] = R[e];
			qe[e] = R[GC * (Dk + Dv) + e];
			kd[e] = R[GC * (2 * Dk + Dv) + e];
		}
		for (int e = tid; e < GC * cb; e += bd) {
			int i = e / cb, c = c0 + e % cb;
			dos[e] = i < n && c < Dv ? scale * tof(dout[(tok0 + (int64_t)i * H) * Dv + c])
						 : 0.0f;
		}
		if (ll)
			for (int e = tid; e < GC * nlevc; e += bd) {
				int i = e / nlevc, L = e % nlevc;
				lw[e] = i < n && lc + L < NL
						? tof(lam[(tok0 + (int64_t)i * H) * NL + lc + L])
						: 0.0f;
			}
		if (tid == 0)
			gnp[0] = R[GC * (3 * Dk + 2 * Dv)];
		for (int L = ll ? 1 : 0; L < (ll ? nlevc : 1); L++) {
			if (ll && !glive(ci, L))
				continue;
			float *D = dS + L * DC, a[4], acc[8];
			__syncthreads(); /* loads done; Z and Wd free */
			tile_rows(a, kd, D, Dk, cb);
#pragma unroll
			for (int r = 0; r < 4; r++)
				if (r * RS < GC) {
					int j = i0 + r * RS;
					Z[j * cb + cc] = a[r];
					Wd[j * cb + cc] = (ll ? lw[j * nlevc + L] : 1.0f) * dos[j * cb + cc];
				}
			__syncthreads();
#pragma unroll
			for (int r = 0; r < 8; r++)
				acc[r] = d0 + r * DS < Dk ? gnp[0] * D[(d0 + r * DS) * cb + cc] : 0.0f;
			tile_cols(acc, qe, Wd, Dk, cb, 1.0f);
			tile_cols(acc, wk, Z, Dk, cb, -1.0f);
#pragma unroll
			for (int r = 0; r < 8; r++)
				if (d0 + r * DS < Dk)
					D[(d0 + r * DS) * cb + cc] = acc[r];
		}
		if (ll) {
			int j = gctz(ci);
			__syncthreads();
			for (int64_t e = tid; e < DC; e += bd)
				for (int l = 0; l <= j; l++)
					dS[l * DC + e] = dS[(j + 1) * DC + e];
		}
	}
}

static size_t bstate_floats(int Dk, int nlevc, int cb)
{
	return (size_t)nlevc * Dk * cb + 3 * GC * Dk + 3 * GC * cb + GC * nlevc + 4;
}

/* grid (chunks, B*H), 256 threads: the gradients of the chunk's tokens
 * given its entering states sin and leaving-state gradients dsl (both
 * (B*H, nch, nlevc, Dk, Dv)), through the chunk's matrices
 * (head_chunked_bwd of lib/gdn.c as gathers, so that each gradient element
 * is written by one thread). Level 0 of dsl is the chunk's own part (wv);
 * the transition levels are the state (plain) or the live levels >= 1.
 * loc holds the chunk's private (GC,Dv) Y, Zd (= dWv), Z and (GC,Dk) dQe,
 * dWk, dKd. */
template <class T>
__global__ void gdn_chunk_local(gdn_grads gr, float *loc, const float *rec, const float *sin,
				const float *dsl, const T *dout /*(B,Tn,H,Dv)*/,
				const T *q /*(B,Tn,H,Dk)*/, const T *k /*(B,Tn,H,Dk)*/,
				const T *v /*(B,Tn,H,Dv)*/, const T *la /*(B,Tn,H) or NULL*/,
				const T *be /*(B,Tn,H)*/, const T *lam /*(B,Tn,H,NL) or NULL*/,
				int64_t Tn, int64_t H, int Dk, int Dv, int64_t NL, int nch, int nlevc,
				float scale)
{
	extern __shared__ float sh[];
	const int tid = threadIdx.x, bd = blockDim.x, ldk = Dk + 1, ci = blockIdx.x;
	const int ll = lam != NULL, lc = 6;
	const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, t0 = (int64_t)ci * GC;
	const int n = Tn - t0 < GC ? (int)(Tn - t0) : GC;
	const int64_t tok0 = (b * Tn + t0) * H + h, DD = (int64_t)Dk * Dv;
	float *Ks = sh, *Qs = Ks + GC * ldk, *g = Qs + GC * ldk, *gam = g + GC, *bet = gam + GC;
	float *KKe = bet + GC, *P = KKe + GC * GC, *Tm = P + GC * GC;
	float *PT = Tm + GC * GC, *dA = PT + GC * GC, *dP = dA + GC * GC, *dTm = dP + GC * GC;
	float *ZV = dTm + GC * GC, *KW = ZV + GC * GC, *dbe = KW + GC * GC, *rowd = dbe + GC;
	float *dg = rowd + GC, *red = dg + GC, *scal = red + 32;
	chunk_setup<T>(Ks, Qs, g, gam, bet, KKe, P, Tm, q, k, la, be, tok0, H, Dk, n);
	const float *R = rec + ((int64_t)bh * nch + ci) * rec_size(Dk, Dv);
	const float *wk = R, *wv = R + GC * Dk, *qe = R + GC * (Dk + Dv);
	const float *Sin0 = sin + ((int64_t)bh * nch + ci) * nlevc * DD;
	const float *dSl0 = dsl + ((int64_t)bh * nch + ci) * nlevc * DD;
	float *L0 = loc + ((int64_t)bh * nch + ci) * ((int64_t)GC * (3 * Dk + 3 * Dv));
	float *Y = L0, *Zd = Y + GC * Dv, *Z = Zd + GC * Dv, *dQe = Z + GC * Dv, *dWk = dQe + GC * Dk,
	      *dKd = dWk + GC * Dk;
	const float gl = g[n - 1];
#define DO(i, e) ((i) < n ? scale * tof(dout[(tok0 + (int64_t)(i) * H) * Dv + (e)]) : 0.0f)
#define VV(i, e) ((i) < n ? tof(v[(tok0 + (int64_t)(i) * H) * Dv + (e)]) : 0.0f)
#define LAM(i, l) tof(lam[(tok0 + (int64_t)(i) * H) * NL + (l)])
	/* intra: PT = P Tm; raw = dout vᵀ (in KW, for dlam); dA = lam-weighted raw */
	auto DOf = [&](int i, int c) {
		return i < n ? scale * tof(dout[(tok0 + (int64_t)i * H) * Dv + c]) : 0.0f;
	};
	auto VVf = [&](int i, int c) { return i < n ? tof(v[(tok0 + (int64_t)i * H) * Dv + c]) : 0.0f; };
	auto LW = [&](int i, int s) {
		return ll ? tof(lam[(tok0 + (int64_t)i * H) * NL + lmk_fenwick_level_d(t0 + i, t0 + s)])
			  : 1.0f;
	};
	gemm44(
		GC, GC, GC, [&](int i, int j) { return P[i * GC + j]; },
		[&](int j, int s) { return Tm[j * GC + s]; },
		[&](int i, int s, float x) { PT[i * GC + s] = s <= i && i < n ? x : 0.0f; });
	gemm44(
		GC, GC, Dv, DOf, [&](int c, int s) { return VVf(s, c); },
		[&](int i, int s, float x) {
			bool in = s <= i && i < n;
			KW[i * GC + s] = in ? x : 0.0f;
			dA[i * GC + s] = in ? x * LW(i, s) : 0.0f;
		});
	/* the own part Sc = kdᵀ wv: dKd = wv dSl_0ᵀ, dWv = Zd = kd dSl_0 */
	gemm44(
		GC, Dv, Dk, [&](int j, int d) { return Ks[j * ldk + d]; },
		[&](int d, int c) { return dSl0[(int64_t)d * Dv + c]; },
		[&](int j, int c, float x) { Zd[j * Dv + c] = expf(gl - g[j]) * x; });
	gemm44(
		GC, Dk, Dv, [&](int j, int c) { return wv[j * Dv + c]; },
		[&](int c, int d) { return dSl0[(int64_t)d * Dv + c]; },
		[&](int j, int d, float x) { dKd[j * Dk + d] = x; });
	for (int e = tid; e < GC * Dk; e += bd) {
		dWk[e] = 0;
		dQe[e] = 0;
	}
	if (tid == 0)
		scal[0] = 0;
	__syncthreads();
	/* the transition levels: S' = gamma_n S - kdᵀ (wk S), o += w qeᵀ S */
	for (int L = ll ? 1 : 0; L < (ll ? nlevc : 1); L++) {
		if (ll && !glive(ci, L))
			continue;
		const float *Sin = Sin0 + L * DD, *dSl = dSl0 + L * DD;
		auto SinT = [&](int c, int d) { return Sin[(int64_t)d * Dv + c]; };
		gemm44(
			GC, Dv, Dk, [&](int j, int d) { return wk[j * Dk + d]; },
			[&](int d, int c) { return Sin[(int64_t)d * Dv + c]; },
			[&](int j, int c, float x) { Y[j * Dv + c] = x; });
		gemm44(
			GC, Dv, Dk, [&](int j, int d) { return Ks[j * ldk + d]; },
			[&](int d, int c) { return dSl[(int64_t)d * Dv + c]; },
			[&](int j, int c, float x) { Z[j * Dv + c] = expf(gl - g[j]) * x; });
		float part = 0;
		for (int64_t e = tid; e < DD; e += bd)
			part += Sin[e] * dSl[e];
		part = block_sum(part, red); /* synchronises: Y, Z are written */
		if (tid == 0)
			scal[0] += part;
		gemm44(
			GC, Dk, Dv, [&](int j, int c) { return Y[j * Dv + c]; },
			[&](int c, int d) { return dSl[(int64_t)d * Dv + c]; },
			[&](int j, int d, float x) { dKd[j * Dk + d] -= x; });
		gemm44(
			GC, Dk, Dv, [&](int j, int c) { return Z[j * Dv + c]; }, SinT,
			[&](int j, int d, float x) { dWk[j * Dk + d] -= x; });
		gemm44(GC, Dk, Dv, DOf, SinT, [&](int i, int d, float x) {
			dQe[i * Dk + d] += (ll && i < n ? LAM(i, lc + L) : 1.0f) * x;
		});
		if (ll && gr.lam.p) { /* dlam_i[lc+L] = (qe Sin)_i . dout_i, (qe Sin) in Y */
			__syncthreads();
			gemm44(
				GC, Dv, Dk, [&](int i, int d) { return qe[i * Dk + d]; },
				[&](int d, int c) { return Sin[(int64_t)d * Dv + c]; },
				[&](int i, int c, float x) { Y[i * Dv + c] = x; });
			__syncthreads();
			for (int i = tid; i < n; i += bd) {
				float s = 0;
				for (int c = 0; c < Dv; c++)
					s += Y[i * Dv + c] * DOf(i, c);
				gadd(gr.lam, (tok0 + (int64_t)i * H) * NL + lc + L, s);
			}
		}
		__syncthreads();
	}
	/* qe = diag(gamma) Q - P wk: dWk -= Pᵀ dQe; intra dlam; dv */
	gemm44(
		GC, Dk, GC, [&](int j, int i) { return P[i * GC + j]; },
		[&](int i, int d) { return dQe[i * Dk + d]; },
		[&](int j, int d, float x) { dWk[j * Dk + d] -= x; });
	if (ll && gr.lam.p)
		for (int i = tid; i < n; i += bd) {
			float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
			for (int s = 0; s <= i; s++)
				acc[lmk_fenwick_level_d(t0 + i, t0 + s)] +=
					bet[s] * PT[i * GC + s] * KW[i * GC + s];
			for (int l = 0; l <= lc; l++)
				if (l < NL && (l == 0 || (int64_t)1 << (l - 1) <= i))
					gadd(gr.lam, (tok0 + (int64_t)i * H) * NL + l, acc[l]);
		}
	/* ZV = lam-weighted beta PT (what dv reads) */
	for (int e = tid; e < GC * GC; e += bd) {
		int i = e / GC, s = e % GC;
		ZV[e] = s <= i && i < n ? LW(i, s) * bet[s] * PT[e] : 0.0f;
	}
	__syncthreads();
	/* dv_s = sum_i ZV_is dout_i + beta_s sum_j Tm_js Zd_j */
	if (gr.v.p)
		gemm44(
			GC, Dv, 2 * GC,
			[&](int s, int kk) {
				return kk < GC ? ZV[kk * GC + s] : bet[s] * Tm[(kk - GC) * GC + s];
			},
			[&](int kk, int c) { return kk < GC ? DOf(kk, c) : Zd[(kk - GC) * Dv + c]; },
			[&](int s, int c, float x) {
				if (s < n)
					gadd(gr.v, (tok0 + (int64_t)s * H) * Dv + c, x);
			});
	__syncthreads();
	/* dP = (dA diag(beta)) Tmᵀ - dQe wkᵀ (j <= i); ZV = Zd vᵀ, KW = dWk Ksᵀ
	 * and PdA = Pᵀ dA (into dTm) for dTm */
	gemm44(
		GC, GC, GC + Dk,
		[&](int i, int kk) { return kk < GC ? dA[i * GC + kk] * bet[kk] : dQe[i * Dk + kk - GC]; },
		[&](int kk, int j) { return kk < GC ? Tm[j * GC + kk] : -wk[j * Dk + kk - GC]; },
		[&](int i, int j, float x) { dP[i * GC + j] = j <= i ? x : 0.0f; });
	gemm44(
		GC, GC, Dv, [&](int j, int c) { return Zd[j * Dv + c]; },
		[&](int c, int s) { return VVf(s, c); },
		[&](int j, int s, float x) { ZV[j * GC + s] = x; });
	gemm44(
		GC, GC, Dk, [&](int j, int d) { return dWk[j * Dk + d]; },
		[&](int d, int s) { return Ks[s * ldk + d]; },
		[&](int j, int s, float x) { KW[j * GC + s] = x; });
	gemm44(
		GC, GC, GC, [&](int j, int r) { return P[r * GC + j]; },
		[&](int r, int s) { return dA[r * GC + s]; },
		[&](int j, int s, float x) { dTm[j * GC + s] = x; });
	for (int s = tid; s < GC; s += bd) {
		float acc = 0;
		for (int i = s; i < n; i++)
			acc += dA[i * GC + s] * PT[i * GC + s];
		dbe[s] = acc;
		float r = 0, ex = expf(gl - g[s]);
		for (int d = 0; d < Dk; d++)
			r += dKd[s * Dk + d] * ex * Ks[s * ldk + d];
		rowd[s] = r;
	}
	__syncthreads();
	for (int e = tid; e < GC * GC; e += bd) {
		int j = e / GC, s = e % GC;
		dTm[e] = s <= j ? bet[s] * (dTm[e] + ZV[e] + gam[s] * KW[e]) : 0.0f;
	}
	__syncthreads();
	/* Y = Tmᵀ dTm into dA, then dM = -Y Tmᵀ (strictly lower) into dTm */
	gemm44(
		GC, GC, GC, [&](int i, int a) { return Tm[a * GC + i]; },
		[&](int a, int bb) { return dTm[a * GC + bb]; },
		[&](int i, int bb, float x) { dA[i * GC + bb] = x; });
	__syncthreads();
	gemm44(
		GC, GC, GC, [&](int i, int bb) { return dA[i * GC + bb]; },
		[&](int bb, int j) { return Tm[j * GC + bb]; },
		[&](int i, int j, float x) { dTm[i * GC + j] = j < i ? -x : 0.0f; });
	__syncthreads();
	float *dM = dTm;
	/* the per-token sums through M and P (dg partial, beta's share of M) */
	for (int s = tid; s < GC; s += bd) {
		float db = 0, dgs = 0;
		for (int j = 0; j < s; j++) {
			db += dM[s * GC + j] * KKe[s * GC + j];
			dgs += dM[s * GC + j] * bet[s] * KKe[s * GC + j] + dP[s * GC + j] * P[s * GC + j];
		}
		for (int i = s + 1; i < n; i++)
			dgs -= dM[i * GC + s] * bet[i] * KKe[i * GC + s] + dP[i * GC + s] * P[i * GC + s];
		dbe[s] += db;
		dg[s] = dgs;
	}
	__syncthreads();
	/* fold the decays into dP and dM (what k and q see): one exp per pair */
	for (int e = tid; e < GC * GC; e += bd) {
		int i = e / GC, j = e % GC;
		float ex = j <= i ? expf(g[i] - g[j]) : 0.0f;
		dP[e] *= ex;
		dM[e] *= bet[i] * ex;
	}
	__syncthreads();
	/* token gradients: dq = gamma dQe + dP K; dk = (beta gamma Tm)ᵀ dWk +
	 * dM K + dMᵀ K + dPᵀ Q + exp(g_n - g) dKd (dP, dM with their decays) */
	if (gr.q.p)
		gemm44(
			GC, Dk, GC, [&](int s, int j) { return dP[s * GC + j]; },
			[&](int j, int d) { return Ks[j * ldk + d]; },
			[&](int s, int d, float x) {
				if (s < n)
					gadd(gr.q, (tok0 + (int64_t)s * H) * Dk + d, gam[s] * dQe[s * Dk + d] + x);
			});
	if (gr.k.p)
		gemm44(
			GC, Dk, 4 * GC,
			[&](int s, int kk) {
				int r = kk % GC;
				switch (kk / GC) {
				case 0: return bet[s] * gam[s] * Tm[r * GC + s];
				case 1: return dM[s * GC + r];
				case 2: return dM[r * GC + s];
				default: return dP[r * GC + s];
				}
			},
			[&](int kk, int d) {
				int r = kk % GC;
				switch (kk / GC) {
				case 0: return dWk[r * Dk + d];
				case 3: return Qs[r * ldk + d];
				default: return Ks[r * ldk + d];
				}
			},
			[&](int s, int d, float x) {
				if (s < n)
					gadd(gr.k, (tok0 + (int64_t)s * H) * Dk + d,
					     x + expf(gl - g[s]) * dKd[s * Dk + d]);
			});
	for (int s = tid; s < GC; s += bd) {
		float db = dbe[s], dgam = 0, dgs = dg[s];
		for (int j = s; j < n; j++) {
			db += Tm[j * GC + s] * (ZV[j * GC + s] + gam[s] * KW[j * GC + s]);
			dgam += bet[s] * Tm[j * GC + s] * KW[j * GC + s];
		}
		for (int d = 0; d < Dk; d++)
			dgam += Qs[s * ldk + d] * dQe[s * Dk + d];
		if (s == n - 1) {
			dgam += scal[0];
			for (int j = 0; j < n; j++)
				dgs += rowd[j];
		}
		dgs += -rowd[s] + gam[s] * dgam;
		dg[s] = dgs;
		if (s < n && gr.be.p)
			gadd(gr.be, tok0 + (int64_t)s * H, db);
	}
	__syncthreads();
	if (tid == 0 && gr.la.p && la) {
		float acc = 0;
		for (int i = n - 1; i >= 0; i--) {
			acc += dg[i];
			gadd(gr.la, tok0 + (int64_t)i * H, acc);
		}
	}
#undef DO
#undef VV
}

static size_t local_floats(int Dk) { return setup_floats(Dk) + 6 * GC * GC + 3 * GC + 32 + 4; }


/* ===================================================== tensor cores */

/* The chunked forward of plain GDN in BF16 for Dk, Dv in {64, 128}, on the
 * tensor cores (mma.sync m16n8k16, bf16 operands, fp32 accumulators; the
 * helpers in the style of cuda/attention.cu), in the WY/UT form of fla's
 * chunk_gated_delta_rule (same algebra as the record of gdn_chunk_prep:
 * W = wk, U = wv):
 *  prep (grid chunks x heads, all chunks at once): g the in-chunk
 *        cumulative log decay, A = strictly lower diag(beta) (K Kᵀ ⊙
 *        exp(g_i - g_j)), Tm = (I + A)^-1 by forward substitution in fp32
 *        (a column a thread), then W = Tm diag(beta gamma) K and U = Tm
 *        diag(beta) V, stored in bf16 with g (float32) in scratch;
 *  walk (grid heads x blocks of BV value columns): the chunks in order with
 *        the state S (Dk x BV) in fp32 registers (a bf16 copy in shared
 *        memory as the operand of the next chunk): V' = U - W S, O = scale
 *        (diag(gamma) Q S + (Q Kᵀ ⊙ exp(g_i - g_j), j <= i) V'), S =
 *        gamma_n S + Kᵀ diag(exp(g_n - g_j)) V'.
 * Rows past the sequence's end load as zeros and get g = g_{n-1} and beta
 * = 0, so they add nothing and g_n is always g[63]. */
#define TC_THREADS 128 /* four warps, 16 chunk rows each */

static __device__ __forceinline__ void cp_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

/* Element offset of (row, col) in a tile of W-wide bf16 rows: the 16-byte
 * chunk index is XORed with the row, so that the 8 rows an ldmatrix reads
 * at one column fall in 8 different bank groups (W = 32 or 16: two or four
 * rows share a 128-byte line, hence row/2 or row/4). */
template <int W> static __device__ __forceinline__ int swz(int row, int col)
{
	const int x = W >= 64 ? (row & 7) : W == 32 ? ((row >> 1) & 3) : ((row >> 2) & 1);
	return row * W + ((((col >> 3) ^ x)) << 3) + (col & 7);
}

/* Rows row0.. (ROWS of them) of a (rows, ld) bf16 matrix, columns col0 ..
 * col0 + W - 1, into a swizzled tile; rows at or past nrows load zeros. */
template <int W, int ROWS>
static __device__ __forceinline__ void load_tile(bf16 *sm, const bf16 *g, int64_t ld, int64_t row0,
						 int64_t nrows, int tid)
{
	constexpr int CPR = W / 8, N = ROWS * CPR;
#pragma unroll
	for (int it = 0; it < (N + TC_THREADS - 1) / TC_THREADS; it++) {
		int c = tid + it * TC_THREADS;
		if (N % TC_THREADS == 0 || c < N) {
			int r = c / CPR, ch = c % CPR;
			bool ok = row0 + r < nrows;
			const bf16 *src = g + (ok ? (row0 + r) * ld : 0) + ch * 8;
			cp_async16(smem_u32(sm + swz<W>(r, ch * 8)), src, ok);
		}
	}
}

/* A swizzled ROWS x W tile to a (rows, ld) bf16 matrix, 16 bytes a thread
 * at a time. */
template <int W, int ROWS>
static __device__ __forceinline__ void store_tile(bf16 *g, int64_t ld, const bf16 *sm, int tid)
{
	constexpr int CPR = W / 8, N = ROWS * CPR;
	for (int c = tid; c < N; c += TC_THREADS) {
		int r = c / CPR, ch = c % CPR;
		*(uint4 *)(g + r * ld + ch * 8) = *(const uint4 *)(sm + swz<W>(r, ch * 8));
	}
}

/* A operand (16 x 16 at r0, c0) of a tile stored [m][k]. */
template <int W>
static __device__ __forceinline__ void ld_a(uint32_t (&a)[4], const bf16 *sm, int r0, int c0, int lane)
{
	ldsm4(a, smem_u32(sm + swz<W>(r0 + (lane & 15), c0 + ((lane >> 4) << 3))));
}

/* A operand (16 x 16 at m0, k0) of a tile stored [k][m] (transposed by
 * ldmatrix): Kᵀ from K stored token by token. */
template <int W>
static __device__ __forceinline__ void ld_a_t(uint32_t (&a)[4], const bf16 *sm, int m0, int k0, int lane)
{
	ldsm4t(a, smem_u32(sm + swz<W>(k0 + (lane & 7) + ((lane >> 4) << 3),
				       m0 + (((lane >> 3) & 1) << 3))));
}

/* B operands of two n8 tiles (n0, n0 + 8) for a k16 step, tile stored
 * [n][k]: b[0], b[1] for n0, b[2], b[3] for n0 + 8. */
template <int W>
static __device__ __forceinline__ void ld_b_nk(uint32_t (&b)[4], const bf16 *sm, int n0, int k0, int lane)
{
	ldsm4(b, smem_u32(sm + swz<W>(n0 + (lane & 7) + ((lane >> 4) << 3),
				      k0 + (((lane >> 3) & 1) << 3))));
}

/* The same from a tile stored [k][n]. */
template <int W>
static __device__ __forceinline__ void ld_b_kn(uint32_t (&b)[4], const bf16 *sm, int k0, int n0, int lane)
{
	ldsm4t(b, smem_u32(sm + swz<W>(k0 + (lane & 7) + (((lane >> 3) & 1) << 3),
				       n0 + ((lane >> 4) << 3))));
}

/* Zeroed accumulators. */
template <int N> static __device__ __forceinline__ void acc_zero(float (&a)[N][4])
{
#pragma unroll
	for (int i = 0; i < N; i++)
		a[i][0] = a[i][1] = a[i][2] = a[i][3] = 0.0f;
}

#define TC_LDA (GC + 4) /* row stride of A: 16-byte aligned rows */

/* A (float32, then Tm in place) and, once it is read, the bf16 Tg and Tb
 * in its space: at DK = DV = 64 six blocks an SM. */
template <int DK, int DV> struct tc_prep_smem {
	bf16 K[GC * DK], V[GC * DV];
	float A[GC * TC_LDA], g[GC], b[GC];
};

/* grid (chunks, B*H), TC_THREADS: W (B*H, nch*GC, DK), U (B*H, nch*GC, DV)
 * in bf16 and G (B*H, nch*GC) float32 (see above); Tm (B*H, nch, GC, GC)
 * in bf16 too when Tg is not NULL (the backward). */
template <int DK, int DV>
__global__ void __launch_bounds__(TC_THREADS)
gdn_tc_prep(bf16 *__restrict__ Wg, bf16 *__restrict__ Ug, float *__restrict__ Gg,
	    bf16 *__restrict__ Tg, const bf16 *__restrict__ k /*(B,Tn,H,DK)*/, const bf16 *__restrict__ v /*(B,Tn,H,DV)*/,
	    const bf16 *__restrict__ la /*(B,Tn,H) or NULL*/, const bf16 *__restrict__ be /*(B,Tn,H)*/,
	    int64_t Tn, int64_t H, int nch)
{
	extern __shared__ __align__(128) unsigned char smem_raw[];
	tc_prep_smem<DK, DV> &s = *(tc_prep_smem<DK, DV> *)smem_raw;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, ci = blockIdx.x;
	const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, t0 = (int64_t)ci * GC;
	const int n = Tn - t0 < GC ? (int)(Tn - t0) : GC;
	load_tile<DK, GC>(s.K, k + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
	load_tile<DV, GC>(s.V, v + (b * Tn * H + h) * DV, H * DV, t0, Tn, tid);
	cp_commit();
	if (tid < GC) {
		int64_t idx = (b * Tn + t0 + tid) * H + h;
		s.g[tid] = tid < n && la ? tof(la[idx]) : 0.0f;
		s.b[tid] = tid < n ? tof(be[idx]) : 0.0f;
	}
	__syncthreads();
	if (warp == 0) { /* inclusive prefix sum of the log decays */
		float x0 = s.g[lane], x1 = s.g[lane + 32];
#pragma unroll
		for (int o = 1; o < 32; o <<= 1) {
			float y0 = __shfl_up_sync(0xffffffffu, x0, o);
			float y1 = __shfl_up_sync(0xffffffffu, x1, o);
			if (lane >= o) {
				x0 += y0;
				x1 += y1;
			}
		}
		x1 += __shfl_sync(0xffffffffu, x0, 31);
		s.g[lane] = x0;
		s.g[lane + 32] = x1;
	}
	cp_wait_all();
	__syncthreads();
	/* A: warp w the rows 16w.., the key tiles up to its diagonal */
	{
		float acc[GC / 8][4];
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
			acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
#pragma unroll
		for (int kk = 0; kk < DK / 16; kk++) {
			uint32_t a[4];
			ld_a<DK>(a, s.K, warp * 16, kk * 16, lane);
#pragma unroll
			for (int np = 0; np < GC / 16; np++)
				if (np <= warp) {
					uint32_t bb[4];
					ld_b_nk<DK>(bb, s.K, np * 16, kk * 16, lane);
					mma16816(acc[2 * np], a, bb[0], bb[1]);
					mma16816(acc[2 * np + 1], a, bb[2], bb[3]);
				}
		}
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
			if (nt < 2 * (warp + 1))
#pragma unroll
				for (int e = 0; e < 4; e++) {
					int i = warp * 16 + (lane >> 2) + (e >> 1) * 8;
					int j = nt * 8 + ((lane & 3) << 1) + (e & 1);
					s.A[i * TC_LDA + j] =
						j < i ? s.b[i] * expf(s.g[i] - s.g[j]) * acc[nt][e] : 0.0f;
				}
	}
	__syncthreads();
	/* Tm = (I + A)^-1 in fp32 by blocks of 16, in place of A: the
	 * diagonal blocks by forward substitution (a column a thread), then
	 * block row by block row Tm_ij = -Tm_ii X_ij, X_ij = Σ_{k=j}^{i-1}
	 * A_ik Tm_kj (X in the unused upper block j, i; A's block row i is
	 * read for the last time by X), rows r and r + 8 of four columns a
	 * thread */
	{
		const int d = 16 * ((tid >> 4) & 3), c = tid & 15;
		float t[16];
		if (tid < GC)
#pragma unroll
			for (int i = 0; i < 16; i++) {
				float acc = i == c ? 1.0f : 0.0f;
#pragma unroll
				for (int j = 0; j < i; j++)
					acc -= s.A[(d + i) * TC_LDA + d + j] * t[j];
				t[i] = acc;
			}
		__syncthreads(); /* the diagonal blocks read */
		if (tid < GC)
#pragma unroll
			for (int i = 0; i < 16; i++)
				s.A[(d + i) * TC_LDA + d + c] = t[i];
		__syncthreads();
	}
#pragma unroll 1
	for (int bi = 1; bi < GC / 16; bi++) {
		for (int e = tid; e < bi * 32; e += TC_THREADS) {
			const int bj = e >> 5, r = (e >> 2) & 7, c = (e & 3) * 4;
			const float *ar = s.A + (16 * bi + r) * TC_LDA;
			float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f), z = x;
			for (int m = 16 * bj; m < 16 * bi; m++) {
				const float a0 = ar[m], a1 = ar[8 * TC_LDA + m];
				const float4 t = *(const float4 *)&s.A[m * TC_LDA + 16 * bj + c];
				x.x += a0 * t.x;
				x.y += a0 * t.y;
				x.z += a0 * t.z;
				x.w += a0 * t.w;
				z.x += a1 * t.x;
				z.y += a1 * t.y;
				z.z += a1 * t.z;
				z.w += a1 * t.w;
			}
			*(float4 *)&s.A[(16 * bj + r) * TC_LDA + 16 * bi + c] = x;
			*(float4 *)&s.A[(16 * bj + r + 8) * TC_LDA + 16 * bi + c] = z;
		}
		__syncthreads();
		for (int e = tid; e < bi * 32; e += TC_THREADS) {
			const int bj = e >> 5, r = (e >> 2) & 7, c = (e & 3) * 4;
			const float *tr = s.A + (16 * bi + r) * TC_LDA + 16 * bi;
			float4 y = make_float4(0.0f, 0.0f, 0.0f, 0.0f), w = y;
			for (int m = 0; m <= r + 8; m++) { /* Tm_ii: zeros above the diagonal */
				const float t0 = tr[m], t1 = tr[8 * TC_LDA + m];
				const float4 x = *(const float4 *)&s.A[(16 * bj + m) * TC_LDA + 16 * bi + c];
				y.x -= t0 * x.x;
				y.y -= t0 * x.y;
				y.z -= t0 * x.z;
				y.w -= t0 * x.w;
				w.x -= t1 * x.x;
				w.y -= t1 * x.y;
				w.z -= t1 * x.z;
				w.w -= t1 * x.w;
			}
			*(float4 *)&s.A[(16 * bi + r) * TC_LDA + 16 * bj + c] = y;
			*(float4 *)&s.A[(16 * bi + r + 8) * TC_LDA + 16 * bj + c] = w;
		}
		__syncthreads();
	}
	/* then scaled by beta (gamma) into the bf16 operands, zeros above the
	 * diagonal, in the space of A */
	bf16 *const sTg = (bf16 *)s.A, *const sTb = sTg + GC * GC;
	{
		constexpr int RS = TC_THREADS / GC; /* row step */
		const int c = tid & (GC - 1);
		const float bc = s.b[c], bg = bc * expf(s.g[c]);
		float t[GC / RS];
#pragma unroll
		for (int n = 0; n < GC / RS; n++) {
			const int i = tid / GC + RS * n;
			t[n] = c <= i ? s.A[i * TC_LDA + c] : 0.0f;
		}
		__syncthreads(); /* A read by every thread */
#pragma unroll
		for (int n = 0; n < GC / RS; n++) {
			const int i = tid / GC + RS * n;
			if (Tg)
				Tg[(bh * nch + ci) * GC * GC + i * GC + c] = __float2bfloat16_rn(t[n]);
			sTb[swz<GC>(i, c)] = __float2bfloat16_rn(t[n] * bc);
			sTg[swz<GC>(i, c)] = __float2bfloat16_rn(t[n] * bg);
		}
	}
	__syncthreads();
	/* W = Tg K, U = Tb V: Tm is lower triangular, warp w needs k tiles
	 * up to its diagonal */
	const int64_t row = (bh * nch + ci) * GC + warp * 16 + (lane >> 2);
	const int col = (lane & 3) << 1;
	{
		float acc[DK / 8][4];
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++)
			acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
			if (kk <= warp) {
				uint32_t a[4];
				ld_a<GC>(a, sTg, warp * 16, kk * 16, lane);
#pragma unroll
				for (int np = 0; np < DK / 16; np++) {
					uint32_t bb[4];
					ld_b_kn<DK>(bb, s.K, kk * 16, np * 16, lane);
					mma16816(acc[2 * np], a, bb[0], bb[1]);
					mma16816(acc[2 * np + 1], a, bb[2], bb[3]);
				}
			}
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++) {
			*(uint32_t *)(Wg + row * DK + nt * 8 + col) = pack_bf16(acc[nt][0], acc[nt][1]);
			*(uint32_t *)(Wg + (row + 8) * DK + nt * 8 + col) =
				pack_bf16(acc[nt][2], acc[nt][3]);
		}
	}
	{
		float acc[DV / 8][4];
#pragma unroll
		for (int nt = 0; nt < DV / 8; nt++)
			acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
			if (kk <= warp) {
				uint32_t a[4];
				ld_a<GC>(a, sTb, warp * 16, kk * 16, lane);
#pragma unroll
				for (int np = 0; np < DV / 16; np++) {
					uint32_t bb[4];
					ld_b_kn<DV>(bb, s.V, kk * 16, np * 16, lane);
					mma16816(acc[2 * np], a, bb[0], bb[1]);
					mma16816(acc[2 * np + 1], a, bb[2], bb[3]);
				}
			}
#pragma unroll
		for (int nt = 0; nt < DV / 8; nt++) {
			*(uint32_t *)(Ug + row * DV + nt * 8 + col) = pack_bf16(acc[nt][0], acc[nt][1]);
			*(uint32_t *)(Ug + (row + 8) * DV + nt * 8 + col) =
				pack_bf16(acc[nt][2], acc[nt][3]);
		}
	}
	if (tid < GC)
		Gg[(bh * nch + ci) * GC + tid] = s.g[tid];
}

/* The walk's shared memory: NS stages of the per-chunk tiles (Q only
 * without SAVE; NS = 1: one, and two of K), the state's bf16 copy and V'
 * plain and decayed. */
template <int DK, int BV, int NS, bool SAVE> struct tc_walk_smem {
	bf16 Q[SAVE ? 1 : NS][GC * DK], K[NS == 1 ? 2 : NS][GC * DK], W[NS][GC * DK];
	bf16 U[NS][GC * BV];
	bf16 S[DK * BV], Vn[GC * BV], Vd[GC * BV];
	float g[NS][GC];
};

/* The tiles of chunk ci of the walk: Q (unless SAVE), W, U and g into
 * stage st, K into stage kst; past the last chunk an empty group, so that
 * every iteration commits one. */
template <int DK, int DV, int BV, int NS, bool SAVE>
static __device__ __forceinline__ void walk_load(tc_walk_smem<DK, BV, NS, SAVE> &s, int st,
						 int kst, const bf16 *qb, const bf16 *kbase, const bf16 *Wg,
						 const bf16 *Ug, const float *Gg, int64_t bh, int ci,
						 int nch, int c0, int64_t Tn, int64_t H, int tid)
{
	if (ci < nch) {
		const int64_t t0 = (int64_t)ci * GC, crow = (bh * nch + ci) * GC;
		if (!SAVE)
			load_tile<DK, GC>(s.Q[st], qb, H * DK, t0, Tn, tid);
		load_tile<DK, GC>(s.K[kst], kbase, H * DK, t0, Tn, tid);
		load_tile<DK, GC>(s.W[st], Wg + crow * DK, DK, 0, GC, tid);
		load_tile<BV, GC>(s.U[st], Ug + crow * DV + c0, DV, 0, GC, tid);
		if (tid < GC / 4)
			cp_async16(smem_u32(s.g[st] + tid * 4), Gg + crow + tid * 4, true);
	}
	cp_commit();
}

/* The output rows of the warp: o = scale (diag(gamma) qs + p Vn), qs = Q S
 * and p the masked decayed Q Kᵀ in registers, Vn = V' in shared memory. */
template <int DV, int BV>
static __device__ __forceinline__ void walk_out(bf16 *out, float (&qs)[BV / 8][4],
						float (&p)[GC / 8][4], const bf16 *Vn, float g_lo,
						float g_hi, int64_t b, int64_t h, int64_t Tn,
						int64_t H, int64_t t0, int c0, int r0, int warp,
						int lane, float scale)
{
	const int col = (lane & 3) << 1;
	const float gm_lo = expf(g_lo), gm_hi = expf(g_hi);
#pragma unroll
	for (int nt = 0; nt < BV / 8; nt++) {
		qs[nt][0] *= gm_lo;
		qs[nt][1] *= gm_lo;
		qs[nt][2] *= gm_hi;
		qs[nt][3] *= gm_hi;
	}
#pragma unroll
	for (int kk = 0; kk < GC / 16; kk++)
		if (kk <= warp) {
			uint32_t a[4];
			c_to_a(a, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
			for (int np = 0; np < BV / 16; np++) {
				uint32_t bb[4];
				ld_b_kn<BV>(bb, Vn, kk * 16, np * 16, lane);
				mma16816(qs[2 * np], a, bb[0], bb[1]);
				mma16816(qs[2 * np + 1], a, bb[2], bb[3]);
			}
		}
	bf16 *ob = out + ((b * Tn + t0) * H + h) * DV + c0 + col;
	const int64_t ldo = H * DV;
#pragma unroll
	for (int nt = 0; nt < BV / 8; nt++) {
		if (t0 + r0 < Tn)
			*(uint32_t *)(ob + r0 * ldo + nt * 8) =
				pack_bf16(scale * qs[nt][0], scale * qs[nt][1]);
		if (t0 + r0 + 8 < Tn)
			*(uint32_t *)(ob + (r0 + 8) * ldo + nt * 8) =
				pack_bf16(scale * qs[nt][2], scale * qs[nt][3]);
	}
}

/* grid (B*H, DV/BV), TC_THREADS: the walk through the chunks (see above).
 * Warp w owns the chunk rows 16w.. for the row products and the state rows
 * w*DK/4.. for the state update. The tiles of a chunk are loaded NS - 1
 * chunks ahead into a ring of NS stages (the stage a load overwrites was
 * last read before the barrier that starts the chunk), so that a walk of
 * few blocks does not wait on memory; NS = 1 (the least shared memory,
 * for grids of several waves): Q, W, U and g are read only before the
 * middle barrier, and the next chunk's load into them (and into the
 * other K stage) follows it. SAVE (for the
 * backward): no output; the state entering each chunk (its bf16 copy, the
 * one the products use) goes to Hs (B*H, nch, DK, DV) and V' to Vg
 * (B*H, nch*GC, DV). */
template <int DK, int DV, int BV, int NS, bool SAVE>
__global__ void __launch_bounds__(TC_THREADS)
gdn_tc_walk(bf16 *__restrict__ out /*(B,Tn,H,DV)*/, const bf16 *__restrict__ q /*(B,Tn,H,DK)*/,
	    const bf16 *__restrict__ k /*(B,Tn,H,DK)*/, const bf16 *__restrict__ Wg,
	    const bf16 *__restrict__ Ug, const float *__restrict__ Gg, bf16 *__restrict__ Hs,
	    bf16 *__restrict__ Vg, int64_t Tn, int64_t H, int nch, float scale)
{
	constexpr int SM = DK / 64; /* m16 tiles of state rows a warp */
	extern __shared__ __align__(128) unsigned char smem_raw[];
	tc_walk_smem<DK, BV, NS, SAVE> &s = *(tc_walk_smem<DK, BV, NS, SAVE> *)smem_raw;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int64_t bh = blockIdx.x, b = bh / H, h = bh % H;
	const int c0 = blockIdx.y * BV, col = (lane & 3) << 1, r0 = warp * 16 + (lane >> 2);
	const bf16 *qb = q + (b * Tn * H + h) * DK, *kb = k + (b * Tn * H + h) * DK;
	float S[SM][BV / 8][4];
#pragma unroll
	for (int m = 0; m < SM; m++)
#pragma unroll
		for (int nt = 0; nt < BV / 8; nt++)
			S[m][nt][0] = S[m][nt][1] = S[m][nt][2] = S[m][nt][3] = 0.0f;
	for (int e = tid; e < DK * BV / 2; e += TC_THREADS)
		((uint32_t *)s.S)[e] = 0;
	constexpr int AHEAD = NS == 1 ? 1 : NS - 1; /* chunks loaded ahead */
	for (int c = 0; c < AHEAD; c++)
		walk_load<DK, DV, BV, NS, SAVE>(s, c, c, qb, kb, Wg, Ug, Gg, bh, c, nch, c0, Tn, H,
						tid);
	for (int ci = 0; ci < nch; ci++) {
		const int64_t t0 = (int64_t)ci * GC;
		const int st = ci % NS, kst = NS == 1 ? ci & 1 : st;
		const bf16 *sK = s.K[kst], *sQ = s.Q[SAVE ? 0 : st], *sW = s.W[st], *sU = s.U[st];
		const float *sg = s.g[st];
		cp_wait<AHEAD - 1>();
		__syncthreads(); /* this chunk's tiles and the previous state landed,
				    the previous chunk's stage is free */
		if (NS > 1)
			walk_load<DK, DV, BV, NS, SAVE>(s, (ci + AHEAD) % NS, (ci + AHEAD) % NS, qb,
							kb, Wg, Ug, Gg, bh, ci + AHEAD, nch, c0, Tn,
							H, tid);
		if (SAVE)
			store_tile<BV, DK>(Hs + ((bh * nch + ci) * DK) * DV + c0, DV, s.S, tid);
		/* ws = W S, qs = Q S (rows of the warp), p = Q Kᵀ (keys up to
		 * the warp's diagonal) */
		float ws[BV / 8][4], qs[BV / 8][4], p[GC / 8][4];
#pragma unroll
		for (int nt = 0; nt < BV / 8; nt++)
			ws[nt][0] = ws[nt][1] = ws[nt][2] = ws[nt][3] = qs[nt][0] = qs[nt][1] =
				qs[nt][2] = qs[nt][3] = 0.0f;
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
			p[nt][0] = p[nt][1] = p[nt][2] = p[nt][3] = 0.0f;
#pragma unroll
		for (int kk = 0; kk < DK / 16; kk++) {
			uint32_t aw[4], aq[4];
			ld_a<DK>(aw, sW, warp * 16, kk * 16, lane);
			if (!SAVE)
				ld_a<DK>(aq, sQ, warp * 16, kk * 16, lane);
#pragma unroll
			for (int np = 0; np < BV / 16; np++) {
				uint32_t bb[4];
				ld_b_kn<BV>(bb, s.S, kk * 16, np * 16, lane);
				mma16816(ws[2 * np], aw, bb[0], bb[1]);
				mma16816(ws[2 * np + 1], aw, bb[2], bb[3]);
				if (!SAVE) {
					mma16816(qs[2 * np], aq, bb[0], bb[1]);
					mma16816(qs[2 * np + 1], aq, bb[2], bb[3]);
				}
			}
#pragma unroll
			for (int np = 0; np < GC / 16; np++)
				if (!SAVE && np <= warp) {
					uint32_t bb[4];
					ld_b_nk<DK>(bb, sK, np * 16, kk * 16, lane);
					mma16816(p[2 * np], aq, bb[0], bb[1]);
					mma16816(p[2 * np + 1], aq, bb[2], bb[3]);
				}
		}
		const float gl = sg[GC - 1], g_lo = sg[r0], g_hi = sg[r0 + 8];
		/* V' = U - W S into Vn, and exp(g_n - g_j) V' into Vd */
#pragma unroll
		for (int nt = 0; nt < BV / 8; nt++) {
			const int cc = nt * 8 + col;
			__nv_bfloat162 u_lo = *(const __nv_bfloat162 *)(sU + swz<BV>(r0, cc));
			__nv_bfloat162 u_hi = *(const __nv_bfloat162 *)(sU + swz<BV>(r0 + 8, cc));
			float v0 = __low2float(u_lo) - ws[nt][0], v1 = __high2float(u_lo) - ws[nt][1];
			float v2 = __low2float(u_hi) - ws[nt][2], v3 = __high2float(u_hi) - ws[nt][3];
			const float e_lo = expf(gl - g_lo), e_hi = expf(gl - g_hi);
			*(uint32_t *)(s.Vn + swz<BV>(r0, cc)) = pack_bf16(v0, v1);
			*(uint32_t *)(s.Vn + swz<BV>(r0 + 8, cc)) = pack_bf16(v2, v3);
			*(uint32_t *)(s.Vd + swz<BV>(r0, cc)) = pack_bf16(e_lo * v0, e_lo * v1);
			*(uint32_t *)(s.Vd + swz<BV>(r0 + 8, cc)) = pack_bf16(e_hi * v2, e_hi * v3);
		}
		/* the causal decay mask of p */
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
			if (!SAVE && nt < 2 * (warp + 1))
#pragma unroll
				for (int e = 0; e < 4; e++) {
					int i = r0 + (e >> 1) * 8, j = nt * 8 + col + (e & 1);
					p[nt][e] = j <= i ? expf(sg[i] - sg[j]) * p[nt][e] : 0.0f;
				}
		__syncthreads(); /* Vn, Vd complete; S, Q, W, U, g read by every warp */
		if (NS == 1)
			walk_load<DK, DV, BV, NS, SAVE>(s, 0, (ci + 1) & 1, qb, kb, Wg, Ug, Gg, bh,
							ci + 1, nch, c0, Tn, H, tid);
		if (SAVE)
			store_tile<BV, GC>(Vg + (bh * nch + ci) * GC * DV + c0, DV, s.Vn, tid);
		else
			walk_out<DV, BV>(out, qs, p, s.Vn, g_lo, g_hi, b, h, Tn, H, t0, c0, r0, warp,
					 lane, scale);
		if (ci == nch - 1)
			break;
		/* S = gamma_n S + Kᵀ Vd, and its bf16 copy for the next chunk */
		const float gn = expf(gl);
#pragma unroll
		for (int m = 0; m < SM; m++)
#pragma unroll
			for (int nt = 0; nt < BV / 8; nt++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					S[m][nt][e] *= gn;
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
#pragma unroll
			for (int m = 0; m < SM; m++) {
				uint32_t a[4];
				ld_a_t<DK>(a, sK, (warp * SM + m) * 16, kk * 16, lane);
#pragma unroll
				for (int np = 0; np < BV / 16; np++) {
					uint32_t bb[4];
					ld_b_kn<BV>(bb, s.Vd, kk * 16, np * 16, lane);
					mma16816(S[m][2 * np], a, bb[0], bb[1]);
					mma16816(S[m][2 * np + 1], a, bb[2], bb[3]);
				}
			}
#pragma unroll
		for (int m = 0; m < SM; m++) {
			const int d = (warp * SM + m) * 16 + (lane >> 2);
#pragma unroll
			for (int nt = 0; nt < BV / 8; nt++) {
				*(uint32_t *)(s.S + swz<BV>(d, nt * 8 + col)) =
					pack_bf16(S[m][nt][0], S[m][nt][1]);
				*(uint32_t *)(s.S + swz<BV>(d + 8, nt * 8 + col)) =
					pack_bf16(S[m][nt][2], S[m][nt][3]);
			}
		}
	}
}

template <int DK, int BV, int NS> struct tc_bwalk_smem;
template <int DK, int DV, int BV, int NS, bool SPLIT>
__global__ void gdn_tc_bwalk(bf16 *__restrict__ dHs, bf16 *__restrict__ dVg,
			     const bf16 *__restrict__ dout, const bf16 *__restrict__ q,
			     const bf16 *__restrict__ k, const bf16 *__restrict__ Wg,
			     const float *__restrict__ Gg, int64_t Tn, int64_t H, int nch,
			     float scale);

/* What the walks take: the forward walk (WALK_FWD: out), the walk that
 * saves the states and V' for the backward (WALK_SAVE: Hs, Vg) and the
 * reverse walk (WALK_BWD: dHs, dVg from dout; WALK_BSPLIT: the part of
 * dVg inside the chunks already there, gdn_tc_bintra). */
enum { WALK_FWD, WALK_SAVE, WALK_BWD, WALK_BSPLIT };
struct tc_walk_args {
	bf16 *out, *Hs, *Vg, *dHs, *dVg;
	const bf16 *q, *k, *W, *U, *dout;
	const float *G;
	int64_t B, Tn, H;
	int nch;
	float scale;
};

/* Launches walk KIND with BV value columns and NS stages when its blocks
 * fit in one wave on the 132 SMs of an H200 (or when must), setting its
 * shared memory. @return : 1 when it did not fit, else 0 or < 0 */
template <int KIND, int DK, int DV, int BV, int NS>
static int tc_walk_try(lmk_cuda_backend *b, bool must, const tc_walk_args &a)
{
	constexpr bool SAVE = KIND == WALK_SAVE, BWD = KIND >= WALK_BWD;
	const void *fn;
	size_t sw;
	if constexpr (BWD) {
		fn = (const void *)gdn_tc_bwalk<DK, DV, BV, NS, KIND == WALK_BSPLIT>;
		sw = sizeof(tc_bwalk_smem<DK, BV, NS>);
	} else {
		fn = (const void *)gdn_tc_walk<DK, DV, BV, NS, SAVE>;
		sw = sizeof(tc_walk_smem<DK, BV, NS, SAVE>);
	}
	const int64_t blocks = a.B * a.H * (DV / BV);
	int per_sm = 0;
	LMK_CK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sw));
	LMK_CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, TC_THREADS, sw));
	if (!must && blocks > 132 * (int64_t)per_sm)
		return 1;
	const dim3 grid((unsigned)(a.B * a.H), DV / BV);
	if constexpr (BWD)
		gdn_tc_bwalk<DK, DV, BV, NS, KIND == WALK_BSPLIT><<<grid, TC_THREADS, sw, b->stream>>>(
			a.dHs, a.dVg, a.dout, a.q, a.k, a.W, a.G, a.Tn, a.H, a.nch, a.scale);
	else
		gdn_tc_walk<DK, DV, BV, NS, SAVE><<<grid, TC_THREADS, sw, b->stream>>>(
			a.out, a.q, a.k, a.W, a.U, a.G, a.Hs, a.Vg, a.Tn, a.H, a.nch, a.scale);
	LMK_CK_LAUNCH();
	return 0;
}

/* A walk's shape: the widest value blocks that still give 256 blocks or
 * more (two an SM; blocks of 16 columns at most when the heads are few),
 * with the deepest ring of stages that keeps them in one wave (a walk is
 * serial over the chunks: a second wave doubles its time), else the
 * fewest (NS = 1 only for the forward walks). */
template <int KIND, int DK, int DV>
static int tc_walk_launch(lmk_cuda_backend *b, const tc_walk_args &a)
{
	constexpr int NS0 = KIND >= WALK_BWD ? 2 : 1;
#define WALK_TRY(BV, NS, MUST)                                                                     \
	do {                                                                                       \
		int rc_ = tc_walk_try<KIND, DK, DV, BV, NS>(b, MUST, a);                            \
		if (rc_ <= 0)                                                                      \
			return rc_;                                                                \
	} while (0)
	const int64_t BH = a.B * a.H;
	if (BH * (DV / 64) >= 256) {
		WALK_TRY(64, 3, false);
		if (NS0 == 1)
			WALK_TRY(64, 2, false);
		WALK_TRY(64, NS0, true);
	}
	if (BH * (DV / 32) >= 256) {
		WALK_TRY(32, 3, false);
		if (NS0 == 1)
			WALK_TRY(32, 2, false);
		WALK_TRY(32, NS0, true);
	}
	WALK_TRY(16, 4, false);
	WALK_TRY(16, 3, false);
	if (NS0 == 1)
		WALK_TRY(16, 2, false);
	WALK_TRY(16, NS0, true);
#undef WALK_TRY
	return 0;
}

template <int DK, int DV> struct tc_out_smem {
	bf16 Q[GC * DK], K[GC * DK], S[DK * DV], Vn[GC * DV];
	float g[GC];
};

/* grid (chunks, B*H), TC_THREADS: the output of the split forward, every
 * chunk at once, from the state entering it (Hs) and V' (Vg) the SAVE walk
 * wrote: o = scale (diag(gamma) Q S + (Q Kᵀ ⊙ exp(g_i - g_j), j <= i) V'),
 * the products of the fused walk on the same bf16 operands. Warp w the
 * rows 16w... */
template <int DK, int DV>
__global__ void __launch_bounds__(TC_THREADS)
gdn_tc_out(bf16 *__restrict__ out /*(B,Tn,H,DV)*/, const bf16 *__restrict__ q /*(B,Tn,H,DK)*/,
	   const bf16 *__restrict__ k /*(B,Tn,H,DK)*/, const bf16 *__restrict__ Hs,
	   const bf16 *__restrict__ Vg, const float *__restrict__ Gg, int64_t Tn, int64_t H,
	   int nch, float scale)
{
	extern __shared__ __align__(128) unsigned char smem_raw[];
	tc_out_smem<DK, DV> &s = *(tc_out_smem<DK, DV> *)smem_raw;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, ci = blockIdx.x;
	const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, t0 = (int64_t)ci * GC;
	const int64_t crow = (bh * nch + ci) * GC;
	const int col = (lane & 3) << 1, r0 = warp * 16 + (lane >> 2);
	load_tile<DK, GC>(s.Q, q + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
	load_tile<DK, GC>(s.K, k + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
	load_tile<DV, DK>(s.S, Hs + (bh * nch + ci) * DK * DV, DV, 0, DK, tid);
	load_tile<DV, GC>(s.Vn, Vg + crow * DV, DV, 0, GC, tid);
	if (tid < GC / 4)
		cp_async16(smem_u32(s.g + tid * 4), Gg + crow + tid * 4, true);
	cp_commit();
	cp_wait_all();
	__syncthreads();
	float qs[DV / 8][4], p[GC / 8][4];
	acc_zero(qs);
	acc_zero(p);
#pragma unroll
	for (int kk = 0; kk < DK / 16; kk++) {
		uint32_t aq[4];
		ld_a<DK>(aq, s.Q, warp * 16, kk * 16, lane);
#pragma unroll
		for (int np = 0; np < DV / 16; np++) {
			uint32_t bb[4];
			ld_b_kn<DV>(bb, s.S, kk * 16, np * 16, lane);
			mma16816(qs[2 * np], aq, bb[0], bb[1]);
			mma16816(qs[2 * np + 1], aq, bb[2], bb[3]);
		}
#pragma unroll
		for (int np = 0; np < GC / 16; np++)
			if (np <= warp) {
				uint32_t bb[4];
				ld_b_nk<DK>(bb, s.K, np * 16, kk * 16, lane);
				mma16816(p[2 * np], aq, bb[0], bb[1]);
				mma16816(p[2 * np + 1], aq, bb[2], bb[3]);
			}
	}
#pragma unroll
	for (int nt = 0; nt < GC / 8; nt++)
		if (nt < 2 * (warp + 1))
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int i = r0 + (e >> 1) * 8, j = nt * 8 + col + (e & 1);
				p[nt][e] = j <= i ? expf(s.g[i] - s.g[j]) * p[nt][e] : 0.0f;
			}
	walk_out<DV, DV>(out, qs, p, s.Vn, s.g[r0], s.g[r0 + 8], b, h, Tn, H, t0, 0, r0, warp,
			 lane, scale);
}

/* Whether the plain walks split (see tc_fwd_launch), for a walk of vb
 * blocks of 16 value columns: when they would be at most four an SM (16K
 * tokens a head and more at B*T = 64K; on the H200 the fused walk is
 * faster below, the split one from there). */
static bool gdn_split(int64_t vb) { return vb <= 4 * 132; }

/* The tensor-core forward (see above). Scratch: nch*GC (DK + DV) bf16 and
 * nch*GC floats a head. Long sequences of few heads (a walk of few blocks,
 * latency bound) split the walk as fla does: the SAVE walk (only V' and
 * the states, the least work a chunk on the serial path), then the
 * outputs of every chunk at once (gdn_tc_out); scratch nch (DK + GC) DV
 * bf16 a head more. */
template <int DK, int DV>
static int tc_fwd_launch(lmk_cuda_backend *b, bf16 *out, const bf16 *q, const bf16 *k,
			 const bf16 *v, const bf16 *la, const bf16 *be, int64_t B, int64_t Tn,
			 int64_t H, float scale)
{
	const int nch = (int)((Tn + GC - 1) / GC);
	const int64_t rows = B * H * nch * GC;
	const bool split = gdn_split(B * H * (DV / 16));
	size_t wb = (size_t)rows * DK * sizeof(bf16), ub = (size_t)rows * DV * sizeof(bf16);
	size_t gb = (size_t)rows * sizeof(float), hb = split ? (size_t)B * H * nch * DK * DV * 2 : 0;
	wb = (wb + 255) / 256 * 256;
	ub = (ub + 255) / 256 * 256;
	gb = (gb + 255) / 256 * 256;
	unsigned char *scr = (unsigned char *)lmk_cuda_scratch(b, wb + 2 * ub + gb + hb);
	if (!scr)
		return lmk_errcode();
	bf16 *W = (bf16 *)scr, *U = (bf16 *)(scr + wb);
	float *G = (float *)(scr + wb + ub);
	bf16 *Vg = (bf16 *)(scr + wb + ub + gb), *Hs = (bf16 *)(scr + wb + 2 * ub + gb);
	size_t sp = sizeof(tc_prep_smem<DK, DV>);
	LMK_CK(cudaFuncSetAttribute(gdn_tc_prep<DK, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)sp));
	gdn_tc_prep<DK, DV><<<dim3((unsigned)nch, (unsigned)(B * H)), TC_THREADS, sp, b->stream>>>(
		W, U, G, (bf16 *)NULL, k, v, la, be, Tn, H, nch);
	LMK_CK_LAUNCH();
	if (!split) {
		tc_walk_args a = {out, NULL, NULL, NULL, NULL, q,  k,     W,
				  U,   NULL, G,    B,    Tn,   H, nch, scale};
		return tc_walk_launch<WALK_FWD, DK, DV>(b, a);
	}
	tc_walk_args a = {NULL, Hs, Vg, NULL, NULL, q, k, W, U, NULL, G, B, Tn, H, nch, scale};
	int rc = tc_walk_launch<WALK_SAVE, DK, DV>(b, a);
	if (rc < 0)
		return rc;
	size_t so = sizeof(tc_out_smem<DK, DV>);
	LMK_CK(cudaFuncSetAttribute(gdn_tc_out<DK, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)so));
	gdn_tc_out<DK, DV><<<dim3((unsigned)nch, (unsigned)(B * H)), TC_THREADS, so, b->stream>>>(
		out, q, k, Hs, Vg, G, Tn, H, nch, scale);
	LMK_CK_LAUNCH();
	return 0;
}

/* ------------------------------------------ log-linear, tensor cores */

/* The chunked forward of log-linear GDN in BF16 for Dk, Dv in {64, 128},
 * the algebra of head_chunked (lib/gdn.c) on the tensor cores with chunks
 * of 64 (aligned with the Fenwick buckets: the levels 0..6 of a query-key
 * pair inside a chunk depend only on their offsets, a pair in different
 * chunks has level 6 + the chunk-level of the two chunks):
 *  prep (gdn_tc_prep, with Tm): g, W = Tm diag(beta gamma) K, U = Tm
 *        diag(beta) V and Tm (bf16);
 *  intra (grid chunks x heads): P = Q Kᵀ ⊙ exp(g_i - g_j) (j <= i), the
 *        output inside the chunk O = scale ((P Tm diag(beta)) ⊙ Λ) V with
 *        Λ_is = lam_i[level(i,s)] (to out, bf16), and Qe = diag(gamma) Q -
 *        P W (bf16 in scratch), what reads the states entering the chunk;
 *  walk (grid heads x blocks of BV value columns): the chunks in order with
 *        the chunk-level states S_l (Dk x BV; level l >= 1 holds keys for
 *        chunk ci when bit l-1 of ci is set): o_i += scale lam_i[6 + l]
 *        Qe_i S_l for each live l, then the states leaving the chunk. Of
 *        the binary counter's carry into the next chunk (levels 0..j merge
 *        into j + 1, j = ctz(ci + 1)), levels 1..j are live here and are
 *        summed before their (common, linear) transition, so that the
 *        merged state is one plain GDN update: S_{j+1} = gamma_n Σ S_l +
 *        Kᵀ diag(exp(g_n - g_r)) (U - W Σ S_l); every other live level
 *        takes S_l = gamma_n S_l - Kᵀ diag(exp(g_n - g_r)) W S_l.
 * The walk keeps each level's state in shared memory twice: float32 in
 * the accumulator layout of the thread that updates it (the sums) and a
 * bf16 copy (the operand of the row products). */

/* grid (chunks, B*H), TC_THREADS: out rows of the chunk (the intra-chunk
 * part, already scaled; none when out is NULL) and Qe (B*H, nch*GC, DK)
 * bf16. Warp w the rows 16w.. */
template <int DK, int DV> struct ll_intra_smem {
	bf16 Q[GC * DK], K[GC * DK], W[GC * DK], V[GC * DV], Tm[GC * GC];
	float g[GC], b[GC], lam[GC][8];
};

template <int DK, int DV>
__global__ void __launch_bounds__(TC_THREADS)
gdn_ll_intra(bf16 *__restrict__ out /*(B,Tn,H,DV)*/, bf16 *__restrict__ Qeg,
	     const bf16 *__restrict__ q /*(B,Tn,H,DK)*/, const bf16 *__restrict__ k,
	     const bf16 *__restrict__ v /*(B,Tn,H,DV)*/, const bf16 *__restrict__ be /*(B,Tn,H)*/,
	     const bf16 *__restrict__ lam /*(B,Tn,H,NL)*/, const bf16 *__restrict__ Wg,
	     const float *__restrict__ Gg, const bf16 *__restrict__ Tg, int64_t Tn, int64_t H,
	     int64_t NL, int nch, float scale)
{
	extern __shared__ __align__(128) unsigned char smem_raw[];
	ll_intra_smem<DK, DV> &s = *(ll_intra_smem<DK, DV> *)smem_raw;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, ci = blockIdx.x;
	const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, t0 = (int64_t)ci * GC;
	const int64_t crow = (bh * nch + ci) * GC;
	const int n = Tn - t0 < GC ? (int)(Tn - t0) : GC;
	load_tile<DK, GC>(s.Q, q + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
	load_tile<DK, GC>(s.K, k + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
	load_tile<DV, GC>(s.V, v + (b * Tn * H + h) * DV, H * DV, t0, Tn, tid);
	load_tile<DK, GC>(s.W, Wg + crow * DK, DK, 0, GC, tid);
	load_tile<GC, GC>(s.Tm, Tg + crow * GC, GC, 0, GC, tid);
	cp_commit();
	if (tid < GC) {
		int64_t idx = (b * Tn + t0 + tid) * H + h;
		s.g[tid] = Gg[crow + tid];
		s.b[tid] = tid < n ? tof(be[idx]) : 0.0f;
#pragma unroll
		for (int l = 0; l < 8; l++)
			s.lam[tid][l] = tid < n && l < NL ? tof(lam[idx * NL + l]) : 0.0f;
	}
	cp_wait_all();
	__syncthreads();
	const int col = (lane & 3) << 1, r0 = warp * 16 + (lane >> 2);
	/* p = Q Kᵀ with the causal decay mask (keys up to the warp's diagonal) */
	float p[GC / 8][4];
#pragma unroll
	for (int nt = 0; nt < GC / 8; nt++)
		p[nt][0] = p[nt][1] = p[nt][2] = p[nt][3] = 0.0f;
#pragma unroll
	for (int kk = 0; kk < DK / 16; kk++) {
		uint32_t a[4];
		ld_a<DK>(a, s.Q, warp * 16, kk * 16, lane);
#pragma unroll
		for (int np = 0; np < GC / 16; np++)
			if (np <= warp) {
				uint32_t bb[4];
				ld_b_nk<DK>(bb, s.K, np * 16, kk * 16, lane);
				mma16816(p[2 * np], a, bb[0], bb[1]);
				mma16816(p[2 * np + 1], a, bb[2], bb[3]);
			}
	}
#pragma unroll
	for (int nt = 0; nt < GC / 8; nt++)
		if (nt < 2 * (warp + 1))
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int i = r0 + (e >> 1) * 8, j = nt * 8 + col + (e & 1);
				p[nt][e] = j <= i ? expf(s.g[i] - s.g[j]) * p[nt][e] : 0.0f;
			}
	/* A = (p Tm) diag(beta) ⊙ Λ: (p Tm)_is needs s <= j <= i */
	float a_[GC / 8][4];
#pragma unroll
	for (int nt = 0; nt < GC / 8; nt++)
		a_[nt][0] = a_[nt][1] = a_[nt][2] = a_[nt][3] = 0.0f;
#pragma unroll
	for (int kk = 0; kk < GC / 16; kk++)
		if (kk <= warp) {
			uint32_t a[4];
			c_to_a(a, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
			for (int np = 0; np < GC / 16; np++)
				if (np <= kk) {
					uint32_t bb[4];
					ld_b_kn<GC>(bb, s.Tm, kk * 16, np * 16, lane);
					mma16816(a_[2 * np], a, bb[0], bb[1]);
					mma16816(a_[2 * np + 1], a, bb[2], bb[3]);
				}
		}
#pragma unroll
	for (int nt = 0; nt < GC / 8; nt++)
		if (nt < 2 * (warp + 1))
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int i = r0 + (e >> 1) * 8, j = nt * 8 + col + (e & 1);
				int lv = i == j ? 0 : 32 - __clz(i ^ j);
				a_[nt][e] = j <= i ? s.b[j] * s.lam[i][lv] * a_[nt][e] : 0.0f;
			}
	/* O = A V (not for the backward, out NULL) */
	if (out) {
		float o[DV / 8][4];
#pragma unroll
		for (int nt = 0; nt < DV / 8; nt++)
			o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
			if (kk <= warp) {
				uint32_t a[4];
				c_to_a(a, a_[2 * kk], a_[2 * kk + 1]);
#pragma unroll
				for (int np = 0; np < DV / 16; np++) {
					uint32_t bb[4];
					ld_b_kn<DV>(bb, s.V, kk * 16, np * 16, lane);
					mma16816(o[2 * np], a, bb[0], bb[1]);
					mma16816(o[2 * np + 1], a, bb[2], bb[3]);
				}
			}
		bf16 *ob = out + ((b * Tn + t0) * H + h) * DV + col;
		const int64_t ldo = H * DV;
#pragma unroll
		for (int nt = 0; nt < DV / 8; nt++) {
			if (r0 < n)
				*(uint32_t *)(ob + r0 * ldo + nt * 8) =
					pack_bf16(scale * o[nt][0], scale * o[nt][1]);
			if (r0 + 8 < n)
				*(uint32_t *)(ob + (r0 + 8) * ldo + nt * 8) =
					pack_bf16(scale * o[nt][2], scale * o[nt][3]);
		}
	}
	/* Qe = diag(gamma) Q - p W */
	{
		float x[DK / 8][4];
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++)
			x[nt][0] = x[nt][1] = x[nt][2] = x[nt][3] = 0.0f;
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
			if (kk <= warp) {
				uint32_t a[4];
				c_to_a(a, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
				for (int np = 0; np < DK / 16; np++) {
					uint32_t bb[4];
					ld_b_kn<DK>(bb, s.W, kk * 16, np * 16, lane);
					mma16816(x[2 * np], a, bb[0], bb[1]);
					mma16816(x[2 * np + 1], a, bb[2], bb[3]);
				}
			}
		const float gm_lo = expf(s.g[r0]), gm_hi = expf(s.g[r0 + 8]);
		bf16 *qe = Qeg + (crow + r0) * DK + col;
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++) {
			const int cc = nt * 8 + col;
			__nv_bfloat162 q_lo = *(const __nv_bfloat162 *)(s.Q + swz<DK>(r0, cc));
			__nv_bfloat162 q_hi = *(const __nv_bfloat162 *)(s.Q + swz<DK>(r0 + 8, cc));
			*(uint32_t *)(qe + nt * 8) = pack_bf16(gm_lo * __low2float(q_lo) - x[nt][0],
							       gm_lo * __high2float(q_lo) - x[nt][1]);
			*(uint32_t *)(qe + 8 * DK + nt * 8) =
				pack_bf16(gm_hi * __low2float(q_hi) - x[nt][2],
					  gm_hi * __high2float(q_hi) - x[nt][3]);
		}
	}
}

#define LL_LW 16 /* chunk levels the walk takes: chunks < 2^15 */
#define LL_SMEM_MAX (220 * 1024)
#define GC_LOG 6 /* log2(GC): the level offset of chunk-level buckets */

template <int DK, int BV> struct ll_walk_smem {
	bf16 Qe[GC * DK], W[GC * DK], K[2][GC * DK], U[GC * BV], X[2][GC * BV];
	float g[GC], lam[GC][LL_LW];
};

/* The walk's smem: the tiles, then nsl level states (bf16 copies, then the
 * float32 ones). */
template <int DK, int BV> static size_t ll_walk_bytes(int nsl)
{
	size_t t = (sizeof(ll_walk_smem<DK, BV>) + 127) / 128 * 128;
	return t + (size_t)nsl * DK * BV * (sizeof(bf16) + sizeof(float));
}

/* The tiles of chunk ci: Qe, W, U, g (cp.async) and K into stage kb, and
 * the chunk-level weights lam_i[6 + l] (plain loads). */
template <int DK, int DV, int BV>
static __device__ __forceinline__ void ll_walk_load(ll_walk_smem<DK, BV> &s, int kb,
						    const bf16 *kbase, const bf16 *Qeg,
						    const bf16 *Wg, const bf16 *Ug, const float *Gg,
						    const bf16 *lamb, int64_t bh, int ci, int nch,
						    int nlevc, int c0, int64_t Tn, int64_t H,
						    int64_t NL, int tid)
{
	const int64_t t0 = (int64_t)ci * GC, crow = (bh * nch + ci) * GC;
	load_tile<DK, GC>(s.Qe, Qeg + crow * DK, DK, 0, GC, tid);
	load_tile<DK, GC>(s.W, Wg + crow * DK, DK, 0, GC, tid);
	load_tile<DK, GC>(s.K[kb], kbase, H * DK, t0, Tn, tid);
	load_tile<BV, GC>(s.U, Ug + crow * DV + c0, DV, 0, GC, tid);
	if (tid < GC / 4)
		cp_async16(smem_u32(s.g + tid * 4), Gg + crow + tid * 4, true);
	cp_commit();
	if (tid < GC) {
		const bool ok = t0 + tid < Tn;
		const bf16 *lr = lamb + (ok ? (t0 + tid) * H * NL : 0);
		for (int l = 1; l < nlevc; l++)
			s.lam[tid][l] = ok && GC_LOG + l < NL ? tof(lr[GC_LOG + l]) : 0.0f;
	}
}

/* acc (the warp's state rows w*DK/4.., BV columns) += Aᵀ B, A a [GC][DK]
 * tile, B a [GC][BV] tile: the walks' updates of a (DK x BV) state. */
template <int DK, int BV>
static __device__ __forceinline__ void ll_tmm(float (&acc)[DK / 64][BV / 8][4], const bf16 *A,
					      const bf16 *Bm, int warp, int lane)
{
	constexpr int SM = DK / 64;
#pragma unroll
	for (int kk = 0; kk < GC / 16; kk++)
#pragma unroll
		for (int m = 0; m < SM; m++) {
			uint32_t a[4];
			ld_a_t<DK>(a, A, (warp * SM + m) * 16, kk * 16, lane);
#pragma unroll
			for (int np = 0; np < BV / 16; np++) {
				uint32_t bb[4];
				ld_b_kn<BV>(bb, Bm, kk * 16, np * 16, lane);
				mma16816(acc[m][2 * np], a, bb[0], bb[1]);
				mma16816(acc[m][2 * np + 1], a, bb[2], bb[3]);
			}
		}
}

/* acc = f Σ of the float32 states of slots from .. to-1 (0 when none): the
 * walks keep each slot (DK x BV) in shared memory twice, float32 in the
 * accumulator layout of the thread that updates it (Sf) and a swizzled
 * bf16 copy (Sb), the operand of the row products. */
template <int DK, int BV>
static __device__ __forceinline__ void ll_load(float (&acc)[DK / 64][BV / 8][4], const float *Sf,
					       int from, int to, float f, int tid)
{
	constexpr int SM = DK / 64, NT = BV / 8, SZ = DK * BV;
#pragma unroll
	for (int m = 0; m < SM; m++)
#pragma unroll
		for (int nt = 0; nt < NT; nt++) {
			float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
			for (int sl = from; sl < to; sl++) {
				float4 x = ((const float4 *)(Sf + (size_t)sl * SZ))
					[(m * NT + nt) * TC_THREADS + tid];
				a.x += x.x;
				a.y += x.y;
				a.z += x.z;
				a.w += x.w;
			}
			acc[m][nt][0] = f * a.x;
			acc[m][nt][1] = f * a.y;
			acc[m][nt][2] = f * a.z;
			acc[m][nt][3] = f * a.w;
		}
}

/* acc into slot dst, both copies. */
template <int DK, int BV>
static __device__ __forceinline__ void ll_store(bf16 *Sb, float *Sf, int dst,
						const float (&acc)[DK / 64][BV / 8][4], int warp,
						int lane, int tid)
{
	constexpr int SM = DK / 64, NT = BV / 8, SZ = DK * BV;
	const int col = (lane & 3) << 1;
	bf16 *sb = Sb + (size_t)dst * SZ;
	float4 *sf = (float4 *)(Sf + (size_t)dst * SZ);
#pragma unroll
	for (int m = 0; m < SM; m++) {
		const int d = (warp * SM + m) * 16 + (lane >> 2);
#pragma unroll
		for (int nt = 0; nt < NT; nt++) {
			sf[(m * NT + nt) * TC_THREADS + tid] =
				make_float4(acc[m][nt][0], acc[m][nt][1], acc[m][nt][2], acc[m][nt][3]);
			*(uint32_t *)(sb + swz<BV>(d, nt * 8 + col)) =
				pack_bf16(acc[m][nt][0], acc[m][nt][1]);
			*(uint32_t *)(sb + swz<BV>(d + 8, nt * 8 + col)) =
				pack_bf16(acc[m][nt][2], acc[m][nt][3]);
		}
	}
}

/* The forward walk's update: S (slot dst) = gamma_n Σ S (slots from ..
 * to-1) + Kᵀ X, X (GC x BV) bf16 in shared memory. */
template <int DK, int BV>
static __device__ __forceinline__ void ll_update(bf16 *Sb, float *Sf, int from, int to, int dst,
						 const bf16 *X, const bf16 *sK, float gn, int warp,
						 int lane, int tid)
{
	float acc[DK / 64][BV / 8][4];
	ll_load<DK, BV>(acc, Sf, from, to, gn, tid);
	ll_tmm<DK, BV>(acc, sK, X, warp, lane);
	ll_store<DK, BV>(Sb, Sf, dst, acc, warp, lane, tid);
}

/* The number of live chunk levels (>= 1) of the chunks before c: the
 * sum of the popcounts of 0 .. c-1, where the states the backward saves
 * for chunk c start. */
static __host__ __device__ __forceinline__ int64_t ll_first(int64_t c)
{
	int64_t s = 0;
	for (int b = 0; ((int64_t)1 << b) < c; b++) {
		const int64_t p = (int64_t)2 << b, r = c % p - p / 2;
		s += c / p * (p / 2) + (r > 0 ? r : 0);
	}
	return s;
}

/* Where the saved state of level l (live) of chunk c is among its head's
 * NS = ll_first(nch). */
static __device__ __forceinline__ int64_t ll_slot(int c, int l)
{
	return ll_first(c) + __popc((unsigned)c & ((1u << (l - 1)) - 1u));
}

/* grid (B*H, DV/BV), TC_THREADS, nlevc >= 2 (two chunks or more): adds the
 * states' part to out (see above). Warp w owns the chunk rows 16w.. of the
 * row products and the state rows w*DK/4.. of the updates. SAVE (for the
 * backward): no output; the bf16 state of every live level of every chunk
 * to Ss (B*H, NS, DK, DV), at ll_slot. */
template <int DK, int DV, int BV, bool SAVE>
__global__ void __launch_bounds__(TC_THREADS)
gdn_ll_walk(bf16 *__restrict__ out /*(B,Tn,H,DV)*/, const bf16 *__restrict__ k /*(B,Tn,H,DK)*/,
	    const bf16 *__restrict__ lam /*(B,Tn,H,NL)*/, const bf16 *__restrict__ Qeg,
	    const bf16 *__restrict__ Wg, const bf16 *__restrict__ Ug, const float *__restrict__ Gg,
	    bf16 *__restrict__ Ss, int64_t Tn, int64_t H, int64_t NL, int nch, int nlevc,
	    float scale)
{
	constexpr int NT = BV / 8, SZ = DK * BV;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	ll_walk_smem<DK, BV> &s = *(ll_walk_smem<DK, BV> *)smem_raw;
	bf16 *Sb = (bf16 *)(smem_raw + (sizeof(ll_walk_smem<DK, BV>) + 127) / 128 * 128);
	float *Sf = (float *)(Sb + (size_t)(nlevc - 1) * SZ);
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int64_t bh = blockIdx.x, b = bh / H, h = bh % H;
	const int c0 = blockIdx.y * BV, col = (lane & 3) << 1, r0 = warp * 16 + (lane >> 2);
	const bf16 *kbase = k + (b * Tn * H + h) * DK, *lamb = lam + (b * Tn * H + h) * NL;
	ll_walk_load<DK, DV, BV>(s, 0, kbase, Qeg, Wg, Ug, Gg, lamb, bh, 0, nch, nlevc, c0, Tn, H,
				 NL, tid);
	for (int ci = 0; ci < nch; ci++) {
		const int64_t t0 = (int64_t)ci * GC;
		const bf16 *sK = s.K[ci & 1];
		const bool last = ci == nch - 1;
		const int j = last ? 0 : __ffs(ci + 1) - 1; /* levels 1..j merge after */
		cp_wait_all();
		__syncthreads(); /* this chunk's tiles and the previous states landed */
		if (SAVE) {
			const int64_t NS = ll_first(nch);
			for (int l = 1; l < nlevc; l++)
				if ((ci >> (l - 1)) & 1)
					store_tile<BV, DK>(Ss + ((bh * NS + ll_slot(ci, l)) * DK) * DV + c0,
							   DV, Sb + (size_t)(l - 1) * SZ, tid);
			if (last)
				break;
		}
		const float gl = s.g[GC - 1], gn = expf(gl);
		const float e_lo = expf(gl - s.g[r0]), e_hi = expf(gl - s.g[r0 + 8]);
		float oacc[NT][4], xsum[NT][4];
#pragma unroll
		for (int nt = 0; nt < NT; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				oacc[nt][e] = xsum[nt][e] = 0.0f;
		int par = 0;
		for (int l = 1; l < nlevc; l++) {
			if (!((ci >> (l - 1)) & 1))
				continue;
			const bf16 *Sl = Sb + (size_t)(l - 1) * SZ;
			float xs[NT][4], ys[NT][4];
#pragma unroll
			for (int nt = 0; nt < NT; nt++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					xs[nt][e] = ys[nt][e] = 0.0f;
#pragma unroll
			for (int kk = 0; kk < DK / 16; kk++) {
				uint32_t aw[4], aq[4];
				ld_a<DK>(aw, s.W, warp * 16, kk * 16, lane);
				if (!SAVE)
					ld_a<DK>(aq, s.Qe, warp * 16, kk * 16, lane);
#pragma unroll
				for (int np = 0; np < BV / 16; np++) {
					uint32_t bb[4];
					ld_b_kn<BV>(bb, Sl, kk * 16, np * 16, lane);
					mma16816(xs[2 * np], aw, bb[0], bb[1]);
					mma16816(xs[2 * np + 1], aw, bb[2], bb[3]);
					if (!SAVE) {
						mma16816(ys[2 * np], aq, bb[0], bb[1]);
						mma16816(ys[2 * np + 1], aq, bb[2], bb[3]);
					}
				}
			}
			const float w_lo = s.lam[r0][l], w_hi = s.lam[r0 + 8][l];
#pragma unroll
			for (int nt = 0; nt < NT; nt++) {
				oacc[nt][0] += w_lo * ys[nt][0];
				oacc[nt][1] += w_lo * ys[nt][1];
				oacc[nt][2] += w_hi * ys[nt][2];
				oacc[nt][3] += w_hi * ys[nt][3];
			}
			if (last)
				continue;
			if (l <= j) {
#pragma unroll
				for (int nt = 0; nt < NT; nt++)
#pragma unroll
					for (int e = 0; e < 4; e++)
						xsum[nt][e] += xs[nt][e];
				continue;
			}
			/* a level that stays: S_l = gamma_n S_l - Kᵀ diag(e) W S_l */
			bf16 *Xb = s.X[par];
			par ^= 1;
#pragma unroll
			for (int nt = 0; nt < NT; nt++) {
				const int cc = nt * 8 + col;
				*(uint32_t *)(Xb + swz<BV>(r0, cc)) =
					pack_bf16(-e_lo * xs[nt][0], -e_lo * xs[nt][1]);
				*(uint32_t *)(Xb + swz<BV>(r0 + 8, cc)) =
					pack_bf16(-e_hi * xs[nt][2], -e_hi * xs[nt][3]);
			}
			__syncthreads(); /* Xb complete; every warp done reading S_l */
			ll_update<DK, BV>(Sb, Sf, l - 1, l, l - 1, Xb, sK, gn, warp, lane, tid);
		}
		if (!SAVE && ci > 0) {
			bf16 *ob = out + ((b * Tn + t0) * H + h) * DV + c0 + col;
			const int64_t ldo = H * DV;
#pragma unroll
			for (int nt = 0; nt < NT; nt++) {
				if (t0 + r0 < Tn) {
					uint32_t *p = (uint32_t *)(ob + r0 * ldo + nt * 8);
					__nv_bfloat162 x = *(__nv_bfloat162 *)p;
					*p = pack_bf16(__low2float(x) + scale * oacc[nt][0],
						       __high2float(x) + scale * oacc[nt][1]);
				}
				if (t0 + r0 + 8 < Tn) {
					uint32_t *p = (uint32_t *)(ob + (r0 + 8) * ldo + nt * 8);
					__nv_bfloat162 x = *(__nv_bfloat162 *)p;
					*p = pack_bf16(__low2float(x) + scale * oacc[nt][2],
						       __high2float(x) + scale * oacc[nt][3]);
				}
			}
		}
		if (last)
			break;
		/* the merged level j + 1: gamma_n Σ S_l + Kᵀ diag(e) (U - W Σ S_l) */
		bf16 *Xb = s.X[par];
#pragma unroll
		for (int nt = 0; nt < NT; nt++) {
			const int cc = nt * 8 + col;
			__nv_bfloat162 u_lo = *(const __nv_bfloat162 *)(s.U + swz<BV>(r0, cc));
			__nv_bfloat162 u_hi = *(const __nv_bfloat162 *)(s.U + swz<BV>(r0 + 8, cc));
			*(uint32_t *)(Xb + swz<BV>(r0, cc)) =
				pack_bf16(e_lo * (__low2float(u_lo) - xsum[nt][0]),
					  e_lo * (__high2float(u_lo) - xsum[nt][1]));
			*(uint32_t *)(Xb + swz<BV>(r0 + 8, cc)) =
				pack_bf16(e_hi * (__low2float(u_hi) - xsum[nt][2]),
					  e_hi * (__high2float(u_hi) - xsum[nt][3]));
		}
		__syncthreads(); /* Xb complete; Qe, W, U, g and lam read by every warp */
		ll_walk_load<DK, DV, BV>(s, (ci + 1) & 1, kbase, Qeg, Wg, Ug, Gg, lamb, bh, ci + 1,
					 nch, nlevc, c0, Tn, H, NL, tid);
		ll_update<DK, BV>(Sb, Sf, 0, j, j, Xb, sK, gn, warp, lane, tid);
	}
}

template <int DK, int DV, int BV, bool SAVE>
static int ll_walk_launch(lmk_cuda_backend *b, bf16 *out, bf16 *Ss, const bf16 *k,
			  const bf16 *lam, const bf16 *Qe, const bf16 *W, const bf16 *U,
			  const float *G, int64_t B, int64_t Tn, int64_t H, int64_t NL, int nch,
			  int nlevc, float scale)
{
	size_t sw = ll_walk_bytes<DK, BV>(nlevc - 1);
	LMK_CK(cudaFuncSetAttribute(gdn_ll_walk<DK, DV, BV, SAVE>,
				    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sw));
	gdn_ll_walk<DK, DV, BV, SAVE><<<dim3((unsigned)(B * H), DV / BV), TC_THREADS, sw,
					b->stream>>>(out, k, lam, Qe, W, U, G, Ss, Tn, H, NL, nch,
						     nlevc, scale);
	LMK_CK_LAUNCH();
	return 0;
}

template <int DK, int BV> static size_t ll_bwalk_bytes(int nsl);

/* The value block of the walks (BWD: the backward's): the widest of 64
 * (DK 64 only) and 32 columns whose shared memory fits two blocks an SM
 * and that gives two blocks per SM, else the widest that fits one and
 * gives a block per SM, else 16 (whose levels the launchers checked fit
 * one block an SM). */
template <int DK, int DV, bool BWD> static int ll_bv(int64_t BH, int nlevc)
{
	const size_t s64 = BWD ? ll_bwalk_bytes<DK, 64>(nlevc - 1) : ll_walk_bytes<DK, 64>(nlevc - 1);
	const size_t s32 = BWD ? ll_bwalk_bytes<DK, 32>(nlevc - 1) : ll_walk_bytes<DK, 32>(nlevc - 1);
	for (int per_sm = 2; per_sm >= 1; per_sm--) {
		const size_t fit = LL_SMEM_MAX / per_sm;
		const int64_t want = 132 * per_sm;
		if (DK == 64 && s64 <= fit && BH * (DV / 64) >= want)
			return 64;
		if (s32 <= fit && BH * (DV / 32) >= want)
			return 32;
	}
	return 16;
}

/* The walk at the value block ll_bv picks. */
template <int DK, int DV, bool SAVE>
static int ll_walk(lmk_cuda_backend *b, bf16 *out, bf16 *Ss, const bf16 *k, const bf16 *lam,
		   const bf16 *Qe, const bf16 *W, const bf16 *U, const float *G, int64_t B,
		   int64_t Tn, int64_t H, int64_t NL, int nch, int nlevc, float scale)
{
	const int bv = ll_bv<DK, DV, false>(B * H, nlevc);
	if constexpr (DK == 64) /* at DK 128 the 64 columns spill */
		if (bv == 64)
			return ll_walk_launch<DK, DV, 64, SAVE>(b, out, Ss, k, lam, Qe, W, U, G, B,
								Tn, H, NL, nch, nlevc, scale);
	if (bv == 32)
		return ll_walk_launch<DK, DV, 32, SAVE>(b, out, Ss, k, lam, Qe, W, U, G, B, Tn, H,
							NL, nch, nlevc, scale);
	return ll_walk_launch<DK, DV, 16, SAVE>(b, out, Ss, k, lam, Qe, W, U, G, B, Tn, H, NL,
						nch, nlevc, scale);
}


/* The log-linear tensor-core forward (see above). Scratch a head: nch*GC
 * (2 DK + DV + GC) bf16 and nch*GC floats. @return : 1 when the levels do
 * not fit (the caller runs the general kernels), else 0 or < 0 */
template <int DK, int DV>
static int ll_fwd_launch(lmk_cuda_backend *b, bf16 *out, const bf16 *q, const bf16 *k,
			 const bf16 *v, const bf16 *la, const bf16 *be, const bf16 *lam,
			 int64_t B, int64_t Tn, int64_t H, int64_t NL, float scale)
{
	const int nch = (int)((Tn + GC - 1) / GC), nlevc = levels_of(nch);
	if (nlevc > LL_LW || ll_walk_bytes<DK, 16>(nlevc - 1) > LL_SMEM_MAX)
		return 1;
	const int64_t rows = B * H * nch * GC;
	size_t wb = (size_t)rows * DK * sizeof(bf16), ub = (size_t)rows * DV * sizeof(bf16);
	size_t tb = (size_t)rows * GC * sizeof(bf16);
	wb = (wb + 255) / 256 * 256;
	ub = (ub + 255) / 256 * 256;
	unsigned char *scr = (unsigned char *)lmk_cuda_scratch(
		b, 2 * wb + ub + tb + (size_t)rows * sizeof(float));
	if (!scr)
		return lmk_errcode();
	bf16 *W = (bf16 *)scr, *Qe = (bf16 *)(scr + wb), *U = (bf16 *)(scr + 2 * wb);
	bf16 *Tm = (bf16 *)(scr + 2 * wb + ub);
	float *G = (float *)(scr + 2 * wb + ub + tb);
	size_t sp = sizeof(tc_prep_smem<DK, DV>), si = sizeof(ll_intra_smem<DK, DV>);
	LMK_CK(cudaFuncSetAttribute(gdn_tc_prep<DK, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)sp));
	LMK_CK(cudaFuncSetAttribute(gdn_ll_intra<DK, DV>,
				    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)si));
	dim3 gc((unsigned)nch, (unsigned)(B * H));
	gdn_tc_prep<DK, DV><<<gc, TC_THREADS, sp, b->stream>>>(W, U, G, Tm, k, v, la, be, Tn, H,
								 nch);
	LMK_CK_LAUNCH();
	gdn_ll_intra<DK, DV><<<gc, TC_THREADS, si, b->stream>>>(out, Qe, q, k, v, be, lam, W, G, Tm,
								  Tn, H, NL, nch, scale);
	LMK_CK_LAUNCH();
	if (nch == 1)
		return 0;
	return ll_walk<DK, DV, false>(b, out, (bf16 *)NULL, k, lam, Qe, W, U, G, B, Tn, H, NL, nch,
				      nlevc, scale);
}

/* Whether the tensor-core forward takes a call, and runs it. @return : 1
 * when it did not (the caller runs the general kernels), else 0 or < 0 */
static int tc_forward(lmk_cuda_backend *b, lmk_dtype dt, void *out, const void *q, const void *k,
		      const void *v, const void *la, const void *be, const void *lam, int64_t B,
		      int64_t Tn, int64_t H, int64_t Dk, int64_t Dv, int64_t NL, float scale)
{
	if (dt != LMK_BF16 || (Dk != 64 && Dk != 128) || (Dv != 64 && Dv != 128))
		return 1;
	bf16 *o = (bf16 *)out;
	const bf16 *Q = (const bf16 *)q, *K = (const bf16 *)k, *V = (const bf16 *)v;
	const bf16 *LA = (const bf16 *)la, *BE = (const bf16 *)be, *LM = (const bf16 *)lam;
	if (lam && Dk == 64 && Dv == 64)
		return ll_fwd_launch<64, 64>(b, o, Q, K, V, LA, BE, LM, B, Tn, H, NL, scale);
	if (lam && Dk == 64)
		return ll_fwd_launch<64, 128>(b, o, Q, K, V, LA, BE, LM, B, Tn, H, NL, scale);
	if (lam && Dv == 64)
		return ll_fwd_launch<128, 64>(b, o, Q, K, V, LA, BE, LM, B, Tn, H, NL, scale);
	if (lam)
		return ll_fwd_launch<128, 128>(b, o, Q, K, V, LA, BE, LM, B, Tn, H, NL, scale);
	if (Dk == 64 && Dv == 64)
		return tc_fwd_launch<64, 64>(b, o, Q, K, V, LA, BE, B, Tn, H, scale);
	if (Dk == 64)
		return tc_fwd_launch<64, 128>(b, o, Q, K, V, LA, BE, B, Tn, H, scale);
	if (Dv == 64)
		return tc_fwd_launch<128, 64>(b, o, Q, K, V, LA, BE, B, Tn, H, scale);
	return tc_fwd_launch<128, 128>(b, o, Q, K, V, LA, BE, B, Tn, H, scale);
}

/* ------------------------------------------- tensor-core backward */

/* The backward of the tensor-core forward (plain GDN, BF16), derived by
 * hand from the forward's algebra (and checked against finite differences
 * in float64 before it was written):
 *  prep and walk (SAVE): W, U, g, Tm, and per chunk its entering state S_c
 *        and V' (all bf16 but g);
 *  bwalk (grid heads x value blocks, chunks in reverse): the gradient dH
 *        of the state leaving each chunk, dV' = (M ⊙ L)ᵀ dÕ + K̃ dH, then
 *        dH <- gamma_n dH + Qᵀ diag(gamma) dÕ - Wᵀ dV' (dÕ = scale dO,
 *        M_ij = exp(g_i - g_j) q_i.k_j, K̃_j = exp(g_n - g_j) k_j);
 *  bgrad (grid chunks x heads): every token gradient of a chunk from S_c,
 *        dH, V', dV' (see gdn_tc_bgrad). */

template <int DK, int BV, int NS> struct tc_bwalk_smem {
	bf16 Q[NS][GC * DK], W[NS][GC * DK], K[NS][GC * DK], dO[NS][GC * BV], Dv[NS][GC * BV];
	bf16 DOg[GC * BV], DVn[GC * BV], dH[DK * BV];
	float g[NS][GC];
};

/* The tiles of chunk ci of the reverse walk into stage st: Q, W, K, the
 * value block of dO (and with SPLIT of the intra-chunk dV' in dvb), g;
 * before the first chunk an empty group, so that every iteration commits
 * one. */
template <int DK, int DV, int BV, int NS, bool SPLIT>
static __device__ __forceinline__ void bwalk_load(tc_bwalk_smem<DK, BV, NS> &s, int st,
						  const bf16 *qb, const bf16 *kb, const bf16 *db,
						  const bf16 *dvb, const bf16 *Wg, const float *Gg,
						  int64_t bh, int ci, int nch, int64_t Tn, int64_t H,
						  int tid)
{
	if (ci >= 0) {
		const int64_t t0 = (int64_t)ci * GC, crow = (bh * nch + ci) * GC;
		if (SPLIT)
			load_tile<BV, GC>(s.Dv[st], dvb + crow * DV, DV, 0, GC, tid);
		load_tile<DK, GC>(s.Q[st], qb, H * DK, t0, Tn, tid);
		load_tile<DK, GC>(s.K[st], kb, H * DK, t0, Tn, tid);
		load_tile<DK, GC>(s.W[st], Wg + crow * DK, DK, 0, GC, tid);
		load_tile<BV, GC>(s.dO[st], db, H * DV, t0, Tn, tid);
		if (tid < GC / 4)
			cp_async16(smem_u32(s.g[st] + tid * 4), Gg + crow + tid * 4, true);
	}
	cp_commit();
}

/* grid (B*H, DV/BV), TC_THREADS: dHs (B*H, nch, DK, DV) the gradient of the
 * state leaving each chunk (bf16, zero for the last), dVg (B*H, nch*GC, DV)
 * dV'. Warp w owns the chunk rows 16w.. in the first half, the state rows
 * w*DK/4.. in the second. The tiles of a chunk are loaded NS - 1 chunks
 * ahead into a ring of NS stages (as gdn_tc_walk). SPLIT: dVg holds the
 * intra-chunk part of dV', scale (M ⊙ L)ᵀ dO (gdn_tc_bintra), and the walk
 * adds K̃ dH, the serial part, to it. */
template <int DK, int DV, int BV, int NS, bool SPLIT>
__global__ void __launch_bounds__(TC_THREADS)
gdn_tc_bwalk(bf16 *__restrict__ dHs, bf16 *__restrict__ dVg, const bf16 *__restrict__ dout,
	     const bf16 *__restrict__ q, const bf16 *__restrict__ k, const bf16 *__restrict__ Wg,
	     const float *__restrict__ Gg, int64_t Tn, int64_t H, int nch, float scale)
{
	constexpr int SM = DK / 64;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	tc_bwalk_smem<DK, BV, NS> &s = *(tc_bwalk_smem<DK, BV, NS> *)smem_raw;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int64_t bh = blockIdx.x, b = bh / H, h = bh % H;
	const int c0 = blockIdx.y * BV, col = (lane & 3) << 1, r0 = warp * 16 + (lane >> 2);
	const bf16 *qb = q + (b * Tn * H + h) * DK, *kb = k + (b * Tn * H + h) * DK;
	const bf16 *db = dout + (b * Tn * H + h) * DV + c0, *dvb = dVg + c0;
	float D[SM][BV / 8][4];
#pragma unroll
	for (int m = 0; m < SM; m++)
#pragma unroll
		for (int nt = 0; nt < BV / 8; nt++)
			D[m][nt][0] = D[m][nt][1] = D[m][nt][2] = D[m][nt][3] = 0.0f;
	for (int e = tid; e < DK * BV / 2; e += TC_THREADS)
		((uint32_t *)s.dH)[e] = 0;
	for (int c = 0; c < NS - 1; c++)
		bwalk_load<DK, DV, BV, NS, SPLIT>(s, c, qb, kb, db, dvb, Wg, Gg, bh, nch - 1 - c, nch,
						  Tn, H, tid);
	for (int ci = nch - 1; ci >= 0; ci--) {
		const int st = (nch - 1 - ci) % NS;
		const int64_t crow = (bh * nch + ci) * GC;
		const bf16 *sQ = s.Q[st], *sW = s.W[st], *sK = s.K[st], *sdO = s.dO[st];
		const float *sg = s.g[st];
		cp_wait<NS - 2>();
		__syncthreads(); /* this chunk's tiles and dH landed, the previous
				    chunk's stage free */
		bwalk_load<DK, DV, BV, NS, SPLIT>(s, (st + NS - 1) % NS, qb, kb, db, dvb, Wg, Gg, bh,
						  ci - (NS - 1), nch, Tn, H, tid);
		store_tile<BV, DK>(dHs + ((bh * nch + ci) * DK) * DV + c0, DV, s.dH, tid);
		/* kd = K dH, mt = K Qᵀ (queries from the warp's diagonal on) */
		float kd[BV / 8][4], mt[GC / 8][4], dv[BV / 8][4];
#pragma unroll
		for (int nt = 0; nt < BV / 8; nt++)
			kd[nt][0] = kd[nt][1] = kd[nt][2] = kd[nt][3] = dv[nt][0] = dv[nt][1] =
				dv[nt][2] = dv[nt][3] = 0.0f;
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
			mt[nt][0] = mt[nt][1] = mt[nt][2] = mt[nt][3] = 0.0f;
#pragma unroll
		for (int kk = 0; kk < DK / 16; kk++) {
			uint32_t a[4];
			ld_a<DK>(a, sK, warp * 16, kk * 16, lane);
#pragma unroll
			for (int np = 0; np < BV / 16; np++) {
				uint32_t bb[4];
				ld_b_kn<BV>(bb, s.dH, kk * 16, np * 16, lane);
				mma16816(kd[2 * np], a, bb[0], bb[1]);
				mma16816(kd[2 * np + 1], a, bb[2], bb[3]);
			}
#pragma unroll
			for (int np = 0; np < GC / 16; np++)
				if (!SPLIT && np >= warp) {
					uint32_t bb[4];
					ld_b_nk<DK>(bb, sQ, np * 16, kk * 16, lane);
					mma16816(mt[2 * np], a, bb[0], bb[1]);
					mma16816(mt[2 * np + 1], a, bb[2], bb[3]);
				}
		}
		const float gl = sg[GC - 1], g_lo = sg[r0], g_hi = sg[r0 + 8];
		/* (M ⊙ L)ᵀ: row j (key), column i (query) >= j */
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
			if (!SPLIT && nt >= 2 * warp)
#pragma unroll
				for (int e = 0; e < 4; e++) {
					int j = r0 + (e >> 1) * 8, i = nt * 8 + col + (e & 1);
					mt[nt][e] = i >= j ? expf(sg[i] - sg[j]) * mt[nt][e] : 0.0f;
				}
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
			if (!SPLIT && kk >= warp) {
				uint32_t a[4];
				c_to_a(a, mt[2 * kk], mt[2 * kk + 1]);
#pragma unroll
				for (int np = 0; np < BV / 16; np++) {
					uint32_t bb[4];
					ld_b_kn<BV>(bb, sdO, kk * 16, np * 16, lane);
					mma16816(dv[2 * np], a, bb[0], bb[1]);
					mma16816(dv[2 * np + 1], a, bb[2], bb[3]);
				}
			}
		/* dV' to scratch, -dV' and scale gamma dO to shared memory */
		const float e_lo = expf(gl - g_lo), e_hi = expf(gl - g_hi);
		const float sg_lo = scale * expf(g_lo), sg_hi = scale * expf(g_hi);
		bf16 *dvr = dVg + (crow + r0) * DV + c0 + col;
#pragma unroll
		for (int nt = 0; nt < BV / 8; nt++) {
			const int cc = nt * 8 + col;
			if (SPLIT) {
				__nv_bfloat162 i_lo = *(const __nv_bfloat162 *)(s.Dv[st] + swz<BV>(r0, cc));
				__nv_bfloat162 i_hi =
					*(const __nv_bfloat162 *)(s.Dv[st] + swz<BV>(r0 + 8, cc));
				dv[nt][0] = __low2float(i_lo);
				dv[nt][1] = __high2float(i_lo);
				dv[nt][2] = __low2float(i_hi);
				dv[nt][3] = __high2float(i_hi);
			} else {
				dv[nt][0] *= scale;
				dv[nt][1] *= scale;
				dv[nt][2] *= scale;
				dv[nt][3] *= scale;
			}
			float v0 = e_lo * kd[nt][0] + dv[nt][0];
			float v1 = e_lo * kd[nt][1] + dv[nt][1];
			float v2 = e_hi * kd[nt][2] + dv[nt][2];
			float v3 = e_hi * kd[nt][3] + dv[nt][3];
			*(uint32_t *)(dvr + nt * 8) = pack_bf16(v0, v1);
			*(uint32_t *)(dvr + 8 * DV + nt * 8) = pack_bf16(v2, v3);
			*(uint32_t *)(s.DVn + swz<BV>(r0, cc)) = pack_bf16(-v0, -v1);
			*(uint32_t *)(s.DVn + swz<BV>(r0 + 8, cc)) = pack_bf16(-v2, -v3);
			__nv_bfloat162 d_lo = *(const __nv_bfloat162 *)(sdO + swz<BV>(r0, cc));
			__nv_bfloat162 d_hi = *(const __nv_bfloat162 *)(sdO + swz<BV>(r0 + 8, cc));
			*(uint32_t *)(s.DOg + swz<BV>(r0, cc)) =
				pack_bf16(sg_lo * __low2float(d_lo), sg_lo * __high2float(d_lo));
			*(uint32_t *)(s.DOg + swz<BV>(r0 + 8, cc)) =
				pack_bf16(sg_hi * __low2float(d_hi), sg_hi * __high2float(d_hi));
		}
		__syncthreads(); /* DVn, DOg complete; dH read by every warp */
		if (ci == 0)
			break;
		/* dH = gamma_n dH + Qᵀ DOg + Wᵀ DVn */
		const float gn = expf(gl);
#pragma unroll
		for (int m = 0; m < SM; m++)
#pragma unroll
			for (int nt = 0; nt < BV / 8; nt++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					D[m][nt][e] *= gn;
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
#pragma unroll
			for (int m = 0; m < SM; m++) {
				uint32_t aq[4], aw[4];
				ld_a_t<DK>(aq, sQ, (warp * SM + m) * 16, kk * 16, lane);
				ld_a_t<DK>(aw, sW, (warp * SM + m) * 16, kk * 16, lane);
#pragma unroll
				for (int np = 0; np < BV / 16; np++) {
					uint32_t bb[4];
					ld_b_kn<BV>(bb, s.DOg, kk * 16, np * 16, lane);
					mma16816(D[m][2 * np], aq, bb[0], bb[1]);
					mma16816(D[m][2 * np + 1], aq, bb[2], bb[3]);
					ld_b_kn<BV>(bb, s.DVn, kk * 16, np * 16, lane);
					mma16816(D[m][2 * np], aw, bb[0], bb[1]);
					mma16816(D[m][2 * np + 1], aw, bb[2], bb[3]);
				}
			}
#pragma unroll
		for (int m = 0; m < SM; m++) {
			const int d = (warp * SM + m) * 16 + (lane >> 2);
#pragma unroll
			for (int nt = 0; nt < BV / 8; nt++) {
				*(uint32_t *)(s.dH + swz<BV>(d, nt * 8 + col)) =
					pack_bf16(D[m][nt][0], D[m][nt][1]);
				*(uint32_t *)(s.dH + swz<BV>(d + 8, nt * 8 + col)) =
					pack_bf16(D[m][nt][2], D[m][nt][3]);
			}
		}
	}
}

template <int DK, int DV> struct tc_bintra_smem {
	bf16 Q[GC * DK], K[GC * DK], dO[GC * DV];
	float g[GC];
};

/* grid (chunks, B*H), TC_THREADS: the part of dV' inside each chunk, every
 * chunk at once, scale (M ⊙ L)ᵀ dO into dVg (B*H, nch*GC, DV) bf16, for
 * the split reverse walk (long sequences of few heads, as the forward).
 * Warp w the key rows 16w... */
template <int DK, int DV>
__global__ void __launch_bounds__(TC_THREADS)
gdn_tc_bintra(bf16 *__restrict__ dVg, const bf16 *__restrict__ dout /*(B,Tn,H,DV)*/,
	      const bf16 *__restrict__ q /*(B,Tn,H,DK)*/, const bf16 *__restrict__ k,
	      const float *__restrict__ Gg, int64_t Tn, int64_t H, int nch, float scale)
{
	extern __shared__ __align__(128) unsigned char smem_raw[];
	tc_bintra_smem<DK, DV> &s = *(tc_bintra_smem<DK, DV> *)smem_raw;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, ci = blockIdx.x;
	const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, t0 = (int64_t)ci * GC;
	const int64_t crow = (bh * nch + ci) * GC;
	const int col = (lane & 3) << 1, r0 = warp * 16 + (lane >> 2);
	load_tile<DK, GC>(s.Q, q + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
	load_tile<DK, GC>(s.K, k + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
	load_tile<DV, GC>(s.dO, dout + (b * Tn * H + h) * DV, H * DV, t0, Tn, tid);
	if (tid < GC / 4)
		cp_async16(smem_u32(s.g + tid * 4), Gg + crow + tid * 4, true);
	cp_commit();
	cp_wait_all();
	__syncthreads();
	/* mt = K Qᵀ (queries from the warp's diagonal on), masked and decayed */
	float mt[GC / 8][4], dv[DV / 8][4];
	acc_zero(mt);
	acc_zero(dv);
#pragma unroll
	for (int kk = 0; kk < DK / 16; kk++) {
		uint32_t a[4];
		ld_a<DK>(a, s.K, warp * 16, kk * 16, lane);
#pragma unroll
		for (int np = 0; np < GC / 16; np++)
			if (np >= warp) {
				uint32_t bb[4];
				ld_b_nk<DK>(bb, s.Q, np * 16, kk * 16, lane);
				mma16816(mt[2 * np], a, bb[0], bb[1]);
				mma16816(mt[2 * np + 1], a, bb[2], bb[3]);
			}
	}
#pragma unroll
	for (int nt = 0; nt < GC / 8; nt++)
		if (nt >= 2 * warp)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int j = r0 + (e >> 1) * 8, i = nt * 8 + col + (e & 1);
				mt[nt][e] = i >= j ? expf(s.g[i] - s.g[j]) * mt[nt][e] : 0.0f;
			}
#pragma unroll
	for (int kk = 0; kk < GC / 16; kk++)
		if (kk >= warp) {
			uint32_t a[4];
			c_to_a(a, mt[2 * kk], mt[2 * kk + 1]);
#pragma unroll
			for (int np = 0; np < DV / 16; np++) {
				uint32_t bb[4];
				ld_b_kn<DV>(bb, s.dO, kk * 16, np * 16, lane);
				mma16816(dv[2 * np], a, bb[0], bb[1]);
				mma16816(dv[2 * np + 1], a, bb[2], bb[3]);
			}
		}
	bf16 *dvr = dVg + (crow + r0) * DV + col;
#pragma unroll
	for (int nt = 0; nt < DV / 8; nt++) {
		*(uint32_t *)(dvr + nt * 8) = pack_bf16(scale * dv[nt][0], scale * dv[nt][1]);
		*(uint32_t *)(dvr + 8 * DV + nt * 8) = pack_bf16(scale * dv[nt][2], scale * dv[nt][3]);
	}
}

template <int DK, int DV> struct tc_bgrad_smem {
	bf16 Q[GC * DK], K[GC * DK], V[GC * DV], dO[GC * DV], Vp[GC * DV], dVp[GC * DV];
	bf16 S[DK * DV], dH[DK * DV], T[GC * GC], M1[GC * GC], M2[GC * GC], dW[GC * DK];
	float g[GC], b[GC], row[GC], colw[4][GC], red[4];
};

/* acc (16 rows x 16*NP) += A (16 x 16*KT, rows r0 of a [m][k] tile of width
 * WA) B (from a [n][k] tile of width WB, n tiles up to np_end). */
template <int WA, int WB, int KT, int NP>
static __device__ __forceinline__ void mm_ank(float (&acc)[2 * NP][4], const bf16 *A, const bf16 *Bm,
					      int r0, int np_end, int lane)
{
#pragma unroll
	for (int kk = 0; kk < KT; kk++) {
		uint32_t a[4];
		ld_a<WA>(a, A, r0, kk * 16, lane);
#pragma unroll
		for (int np = 0; np < NP; np++)
			if (np <= np_end) {
				uint32_t bb[4];
				ld_b_nk<WB>(bb, Bm, np * 16, kk * 16, lane);
				mma16816(acc[2 * np], a, bb[0], bb[1]);
				mma16816(acc[2 * np + 1], a, bb[2], bb[3]);
			}
	}
}

/* acc (16 rows m0.. x 16*NP) += Aᵀ B: A a [k][m] tile of width WA (rows
 * k), B a [k][n] tile of width WB, over the k tiles kk_lo .. 3 (a chunk). */
template <int WA, int WB, int NP>
static __device__ __forceinline__ void mm_tkn(float (&acc)[2 * NP][4], const bf16 *A, const bf16 *Bm,
					      int m0, int kk_lo, int lane)
{
#pragma unroll
	for (int kk = 0; kk < GC / 16; kk++)
		if (kk >= kk_lo) {
			uint32_t a[4];
			ld_a_t<WA>(a, A, m0, kk * 16, lane);
#pragma unroll
			for (int np = 0; np < NP; np++) {
				uint32_t bb[4];
				ld_b_kn<WB>(bb, Bm, kk * 16, np * 16, lane);
				mma16816(acc[2 * np], a, bb[0], bb[1]);
				mma16816(acc[2 * np + 1], a, bb[2], bb[3]);
			}
		}
}

/* acc (16 x 16*NP) += P B, P a 16 x 64 register tile (k tiles up to
 * kk_end), B a [k][n] tile of width WB. */
template <int WB, int NP>
static __device__ __forceinline__ void mm_rkn(float (&acc)[2 * NP][4], const float (&P)[GC / 8][4],
					      const bf16 *Bm, int kk_end, int lane)
{
#pragma unroll
	for (int kk = 0; kk < GC / 16; kk++)
		if (kk <= kk_end) {
			uint32_t a[4];
			c_to_a(a, P[2 * kk], P[2 * kk + 1]);
#pragma unroll
			for (int np = 0; np < NP; np++) {
				uint32_t bb[4];
				ld_b_kn<WB>(bb, Bm, kk * 16, np * 16, lane);
				mma16816(acc[2 * np], a, bb[0], bb[1]);
				mma16816(acc[2 * np + 1], a, bb[2], bb[3]);
			}
		}
}

/* A 16 x 64 register tile as bf16 rows r0.. of a [GC][GC] tile. */
static __device__ __forceinline__ void put64(bf16 *sm, const float (&P)[GC / 8][4], int r0, int lane)
{
	const int col = (lane & 3) << 1, r = r0 + (lane >> 2);
#pragma unroll
	for (int nt = 0; nt < GC / 8; nt++) {
		*(uint32_t *)(sm + swz<GC>(r, nt * 8 + col)) = pack_bf16(P[nt][0], P[nt][1]);
		*(uint32_t *)(sm + swz<GC>(r + 8, nt * 8 + col)) = pack_bf16(P[nt][2], P[nt][3]);
	}
}

/* Sum over the thread's columns of x(row) . y where y is a bf16 tile of
 * width W read at the accumulator positions: the two rows' partial dots. */
template <int W>
static __device__ __forceinline__ void dot_rows(float &lo, float &hi, const float (&x)[W / 8][4],
						const bf16 *y, int r, int lane)
{
	const int col = (lane & 3) << 1;
#pragma unroll
	for (int nt = 0; nt < W / 8; nt++) {
		__nv_bfloat162 a = *(const __nv_bfloat162 *)(y + swz<W>(r, nt * 8 + col));
		__nv_bfloat162 c = *(const __nv_bfloat162 *)(y + swz<W>(r + 8, nt * 8 + col));
		lo += x[nt][0] * __low2float(a) + x[nt][1] * __high2float(a);
		hi += x[nt][2] * __low2float(c) + x[nt][3] * __high2float(c);
	}
}

/* Asks L2 for the rows (< n) of a chunk of a gradient (B,Tn,H,W) that
 * the block adds into later (put_grad), so that their read waits on L2,
 * not memory. */
template <int W>
static __device__ __forceinline__ void grad_prefetch(gacc g, int64_t tok0, int64_t H, int n,
						     int tid)
{
	if (!g.p)
		return;
	const int esz = g.f32 ? 4 : 2, lines = W * esz / 128;
	for (int e = tid; e < n * lines; e += TC_THREADS) {
		const char *p = (const char *)g.p + (tok0 + (int64_t)(e / lines) * H) * W * esz +
				(e % lines) * 128;
		asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
	}
}

/* Adds a 16 x W register tile (rows i0.. of the chunk) into a gradient
 * (B,Tn,H,W), rows below n only, four n8 tiles at a time: their old values
 * all loaded before the first store (element by element, gadd would wait
 * a memory round trip for each), then each element gets gadd's float sum
 * and rounding. */
template <int W>
static __device__ __forceinline__ void put_grad(gacc g, const float (&x)[W / 8][4], int64_t tok0,
						int64_t H, int r, int n, int lane)
{
	if (!g.p)
		return;
	const int col = (lane & 3) << 1;
	const bool ok_lo = r < n, ok_hi = r + 8 < n;
	const int64_t i_lo = ((tok0 + (int64_t)r * H) * W + col) / 2;
	const int64_t i_hi = ((tok0 + (int64_t)(r + 8) * H) * W + col) / 2;
#pragma unroll
	for (int n0 = 0; n0 < W / 8; n0 += 4) {
		if (g.f32) {
			float2 *p = (float2 *)g.p, a[4], c[4];
#pragma unroll
			for (int t = 0; t < 4; t++) {
				if (ok_lo)
					a[t] = p[i_lo + (n0 + t) * 4];
				if (ok_hi)
					c[t] = p[i_hi + (n0 + t) * 4];
			}
#pragma unroll
			for (int t = 0; t < 4; t++) {
				const float *y = x[n0 + t];
				if (ok_lo)
					p[i_lo + (n0 + t) * 4] = make_float2(a[t].x + y[0], a[t].y + y[1]);
				if (ok_hi)
					p[i_hi + (n0 + t) * 4] = make_float2(c[t].x + y[2], c[t].y + y[3]);
			}
		} else {
			__nv_bfloat162 *p = (__nv_bfloat162 *)g.p, a[4], c[4];
#pragma unroll
			for (int t = 0; t < 4; t++) {
				if (ok_lo)
					a[t] = p[i_lo + (n0 + t) * 4];
				if (ok_hi)
					c[t] = p[i_hi + (n0 + t) * 4];
			}
#pragma unroll
			for (int t = 0; t < 4; t++) {
				const float *y = x[n0 + t];
				if (ok_lo)
					p[i_lo + (n0 + t) * 4] = __floats2bfloat162_rn(
						__low2float(a[t]) + y[0], __high2float(a[t]) + y[1]);
				if (ok_hi)
					p[i_hi + (n0 + t) * 4] = __floats2bfloat162_rn(
						__low2float(c[t]) + y[2], __high2float(c[t]) + y[3]);
			}
		}
	}
}

/* A gradient's element, and its new value (the rounding of gadd). */
static __device__ __forceinline__ float gget(gacc g, int64_t i)
{
	return g.f32 ? ((const float *)g.p)[i] : __bfloat162float(((const bf16 *)g.p)[i]);
}

static __device__ __forceinline__ void gset(gacc g, int64_t i, float v)
{
	if (g.f32)
		((float *)g.p)[i] = v;
	else
		((bf16 *)g.p)[i] = __float2bfloat16_rn(v);
}

/* dloga of a chunk from dg (s_g, GC floats in shared memory): dloga_i =
 * the sum of dg over i..n-1, each thread i < n its own sum, added from
 * n - 1 down (the order, so the bits, of one running sum). */
static __device__ __forceinline__ void put_dloga(gacc g, const float *s_g, int64_t tok0, int64_t H,
						 int n, int tid)
{
	if (!g.p || tid >= n)
		return;
	float acc = 0;
	for (int i = n - 1; i >= tid; i--)
		acc += s_g[i];
	gadd(g, tok0 + (int64_t)tid * H, acc);
}

/* grid (chunks, B*H), TC_THREADS: the token gradients of one chunk (the
 * derivation's notation: Ō = scale dO, E_ij = exp(g_i - g_j), L the causal
 * mask, K̃ = diag(exp(g_n - g)) K; warp w owns the rows 16w..):
 *   dQ = diag(gamma) Ō Sᵀ + (dM ⊙ E) K,       dM = (Ō V'ᵀ) ⊙ L
 *   dK = (dM ⊙ E)ᵀ Q + diag(e^{g_n-g}) V' dHᵀ + Yb K + Ybᵀ K + diag(beta
 *        gamma) Tmᵀ dW,                       dW = -dV' Sᵀ, dU = dV'
 *   dT = (dW Kᵀ diag(gamma) + dU Vᵀ) diag(beta), dA = -Tmᵀ dT Tmᵀ (strictly
 *        lower), Y = dA ⊙ E, Yb = diag(beta) Y
 *   dV = diag(beta) Tmᵀ dU
 *   dbeta_i = sum_j Y_ij k_i.k_j + gamma_i k_i.(Tmᵀ dW)_i + v_i.(Tmᵀ dU)_i
 *   dg_i = q_i.(gamma_i Ō_i Sᵀ) + sum_j X_ij - sum_j X_ji + sum_j Z_ij -
 *        sum_j Z_ji - k_i.(K̃ grad)_i + beta_i gamma_i k_i.(Tmᵀ dW)_i (+ at
 *        the last token: the K̃ sums and gamma_n S.dH), X = dM ⊙ E ⊙ Q Kᵀ,
 *        Z = Yb ⊙ K Kᵀ; dloga is dg summed from the chunk's end. */
template <int DK, int DV>
__global__ void __launch_bounds__(TC_THREADS)
gdn_tc_bgrad(gdn_grads gr, const bf16 *__restrict__ dout, const bf16 *__restrict__ q,
	     const bf16 *__restrict__ k, const bf16 *__restrict__ v, const bf16 *__restrict__ la,
	     const bf16 *__restrict__ be, const float *__restrict__ Gg, const bf16 *__restrict__ Tg,
	     const bf16 *__restrict__ Hs, const bf16 *__restrict__ dHs, const bf16 *__restrict__ Vg,
	     const bf16 *__restrict__ dVg, int64_t Tn, int64_t H, int nch, float scale)
{
	extern __shared__ __align__(128) unsigned char smem_raw[];
	tc_bgrad_smem<DK, DV> &s = *(tc_bgrad_smem<DK, DV> *)smem_raw;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, ci = blockIdx.x;
	const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, t0 = (int64_t)ci * GC;
	const int n = Tn - t0 < GC ? (int)(Tn - t0) : GC;
	const int64_t tok0 = (b * Tn + t0) * H + h, crow = (bh * nch + ci) * GC;
	const int col = (lane & 3) << 1, i0 = warp * 16, r0 = i0 + (lane >> 2);
	load_tile<DK, GC>(s.Q, q + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
	load_tile<DK, GC>(s.K, k + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
	load_tile<DV, GC>(s.V, v + (b * Tn * H + h) * DV, H * DV, t0, Tn, tid);
	load_tile<DV, GC>(s.dO, dout + (b * Tn * H + h) * DV, H * DV, t0, Tn, tid);
	load_tile<DV, GC>(s.Vp, Vg + crow * DV, DV, 0, GC, tid);
	load_tile<DV, GC>(s.dVp, dVg + crow * DV, DV, 0, GC, tid);
	load_tile<DV, DK>(s.S, Hs + (bh * nch + ci) * DK * DV, DV, 0, DK, tid);
	load_tile<DV, DK>(s.dH, dHs + (bh * nch + ci) * DK * DV, DV, 0, DK, tid);
	load_tile<GC, GC>(s.T, Tg + crow * GC, GC, 0, GC, tid);
	cp_commit();
	grad_prefetch<DK>(gr.q, tok0, H, n, tid);
	grad_prefetch<DK>(gr.k, tok0, H, n, tid);
	grad_prefetch<DV>(gr.v, tok0, H, n, tid);
	if (tid < GC) {
		s.g[tid] = Gg[crow + tid];
		s.b[tid] = tid < n ? tof(be[tok0 + (int64_t)tid * H]) : 0.0f;
	}
	cp_wait_all();
	__syncthreads();
	const float gl = s.g[GC - 1], g_lo = s.g[r0], g_hi = s.g[r0 + 8];
	float rg_lo = 0, rg_hi = 0, rb_lo = 0, rb_hi = 0, dgn = 0;
	float colp[GC / 8][2];
#pragma unroll
	for (int nt = 0; nt < GC / 8; nt++)
		colp[nt][0] = colp[nt][1] = 0.0f;
	/* dQ; X; dM ⊙ E into M1 */
	{
		float dq[DK / 8][4], dm[GC / 8][4], qk[GC / 8][4];
		acc_zero(dq);
		acc_zero(dm);
		acc_zero(qk);
		mm_ank<DV, DV, DV / 16, DK / 16>(dq, s.dO, s.S, i0, DK / 16, lane);
		const float sg_lo = scale * expf(g_lo), sg_hi = scale * expf(g_hi);
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++) {
			dq[nt][0] *= sg_lo;
			dq[nt][1] *= sg_lo;
			dq[nt][2] *= sg_hi;
			dq[nt][3] *= sg_hi;
		}
		dot_rows<DK>(rg_lo, rg_hi, dq, s.Q, r0, lane);
		mm_ank<DV, DV, DV / 16, GC / 16>(dm, s.dO, s.Vp, i0, warp, lane);
		mm_ank<DK, DK, DK / 16, GC / 16>(qk, s.Q, s.K, i0, warp, lane);
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int i = r0 + (e >> 1) * 8, j = nt * 8 + col + (e & 1);
				float x = j <= i ? scale * expf(s.g[i] - s.g[j]) * dm[nt][e] : 0.0f;
				dm[nt][e] = x;
				float X = x * qk[nt][e];
				if (e < 2)
					rg_lo += X;
				else
					rg_hi += X;
				colp[nt][e & 1] += X;
			}
		mm_rkn<DK, DK / 16>(dq, dm, s.K, warp, lane);
		put_grad<DK>(gr.q, dq, tok0, H, r0, n, lane);
		put64(s.M1, dm, i0, lane);
	}
	__syncthreads();
	float dk[DK / 8][4];
	acc_zero(dk);
	/* dK from M and from K̃; dW into dW; dT into M2 */
	{
		float t[DK / 8][4];
		mm_tkn<GC, DK, DK / 16>(dk, s.M1, s.Q, i0, warp, lane);
		acc_zero(t);
		mm_ank<DV, DV, DV / 16, DK / 16>(t, s.Vp, s.dH, i0, DK / 16, lane);
		const float e_lo = expf(gl - g_lo), e_hi = expf(gl - g_hi);
		float x_lo = 0, x_hi = 0;
		dot_rows<DK>(x_lo, x_hi, t, s.K, r0, lane);
		rg_lo -= e_lo * x_lo;
		rg_hi -= e_hi * x_hi;
		dgn += e_lo * x_lo + e_hi * x_hi;
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++) {
			dk[nt][0] += e_lo * t[nt][0];
			dk[nt][1] += e_lo * t[nt][1];
			dk[nt][2] += e_hi * t[nt][2];
			dk[nt][3] += e_hi * t[nt][3];
		}
		acc_zero(t);
		mm_ank<DV, DV, DV / 16, DK / 16>(t, s.dVp, s.S, i0, DK / 16, lane);
		float dt[GC / 8][4];
		acc_zero(dt);
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++) {
			t[nt][0] = -t[nt][0];
			t[nt][1] = -t[nt][1];
			t[nt][2] = -t[nt][2];
			t[nt][3] = -t[nt][3];
			*(uint32_t *)(s.dW + swz<DK>(r0, nt * 8 + col)) = pack_bf16(t[nt][0], t[nt][1]);
			*(uint32_t *)(s.dW + swz<DK>(r0 + 8, nt * 8 + col)) =
				pack_bf16(t[nt][2], t[nt][3]);
		}
		/* dT = (dW Kᵀ diag(gamma) + dU Vᵀ) diag(beta), the key tiles up to
		 * the diagonal (the rest never reaches dA) */
#pragma unroll
		for (int kk = 0; kk < DK / 16; kk++) {
			uint32_t a[4];
			c_to_a(a, t[2 * kk], t[2 * kk + 1]);
#pragma unroll
			for (int np = 0; np < GC / 16; np++)
				if (np <= warp) {
					uint32_t bb[4];
					ld_b_nk<DK>(bb, s.K, np * 16, kk * 16, lane);
					mma16816(dt[2 * np], a, bb[0], bb[1]);
					mma16816(dt[2 * np + 1], a, bb[2], bb[3]);
				}
		}
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				dt[nt][e] *= expf(s.g[nt * 8 + col + (e & 1)]);
		mm_ank<DV, DV, DV / 16, GC / 16>(dt, s.dVp, s.V, i0, warp, lane);
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				dt[nt][e] *= s.b[nt * 8 + col + (e & 1)];
		put64(s.M2, dt, i0, lane);
		/* gamma_n sum S ⊙ dH */
		float sd = 0;
		for (int e = tid; e < DK * DV; e += TC_THREADS)
			sd += __bfloat162float(s.S[e]) * __bfloat162float(s.dH[e]);
		dgn += expf(gl) * sd;
	}
	__syncthreads();
	/* dA = -Tmᵀ dT Tmᵀ, Y, Yb (into M1), Z, dK += Yb K */
	{
		float R[GC / 8][4], da[GC / 8][4];
		acc_zero(R);
		acc_zero(da);
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
			if (kk >= warp) {
				uint32_t a[4];
				ld_a_t<GC>(a, s.T, i0, kk * 16, lane);
#pragma unroll
				for (int np = 0; np < GC / 16; np++)
					if (np <= warp) {
						uint32_t bb[4];
						ld_b_kn<GC>(bb, s.M2, kk * 16, np * 16, lane);
						mma16816(R[2 * np], a, bb[0], bb[1]);
						mma16816(R[2 * np + 1], a, bb[2], bb[3]);
					}
			}
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
			if (kk <= warp) {
				uint32_t a[4];
				c_to_a(a, R[2 * kk], R[2 * kk + 1]);
#pragma unroll
				for (int np = 0; np < GC / 16; np++)
					if (np <= warp) {
						uint32_t bb[4];
						ld_b_nk<GC>(bb, s.T, np * 16, kk * 16, lane);
						mma16816(da[2 * np], a, bb[0], bb[1]);
						mma16816(da[2 * np + 1], a, bb[2], bb[3]);
					}
			}
		acc_zero(R); /* now K Kᵀ */
		mm_ank<DK, DK, DK / 16, GC / 16>(R, s.K, s.K, i0, warp, lane);
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int i = r0 + (e >> 1) * 8, j = nt * 8 + col + (e & 1);
				float y = j < i ? -expf(s.g[i] - s.g[j]) * da[nt][e] : 0.0f;
				float yk = y * R[nt][e], yb = s.b[i] * y;
				if (e < 2) {
					rb_lo += yk;
					rg_lo += s.b[i] * yk;
				} else {
					rb_hi += yk;
					rg_hi += s.b[i] * yk;
				}
				colp[nt][e & 1] += s.b[i] * yk;
				da[nt][e] = yb;
			}
		mm_rkn<DK, DK / 16>(dk, da, s.K, warp, lane);
		put64(s.M1, da, i0, lane);
	}
	__syncthreads();
	/* dK += Ybᵀ K + diag(beta gamma) Tmᵀ dW; dV = diag(beta) Tmᵀ dU */
	mm_tkn<GC, DK, DK / 16>(dk, s.M1, s.K, i0, warp, lane);
	{
		float t[DK / 8][4];
		acc_zero(t);
		mm_tkn<GC, DK, DK / 16>(t, s.T, s.dW, i0, warp, lane);
		float x_lo = 0, x_hi = 0;
		dot_rows<DK>(x_lo, x_hi, t, s.K, r0, lane);
		const float bg_lo = s.b[r0] * expf(g_lo), bg_hi = s.b[r0 + 8] * expf(g_hi);
		rb_lo += expf(g_lo) * x_lo;
		rb_hi += expf(g_hi) * x_hi;
		rg_lo += bg_lo * x_lo;
		rg_hi += bg_hi * x_hi;
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++) {
			dk[nt][0] += bg_lo * t[nt][0];
			dk[nt][1] += bg_lo * t[nt][1];
			dk[nt][2] += bg_hi * t[nt][2];
			dk[nt][3] += bg_hi * t[nt][3];
		}
		put_grad<DK>(gr.k, dk, tok0, H, r0, n, lane);
	}
	{
		float t[DV / 8][4];
		acc_zero(t);
		mm_tkn<GC, DV, DV / 16>(t, s.T, s.dVp, i0, warp, lane);
		dot_rows<DV>(rb_lo, rb_hi, t, s.V, r0, lane);
		const float b_lo = s.b[r0], b_hi = s.b[r0 + 8];
#pragma unroll
		for (int nt = 0; nt < DV / 8; nt++) {
			t[nt][0] *= b_lo;
			t[nt][1] *= b_lo;
			t[nt][2] *= b_hi;
			t[nt][3] *= b_hi;
		}
		put_grad<DV>(gr.v, t, tok0, H, r0, n, lane);
	}
	/* the sums: rows over the quad, columns over the lanes of a column and
	 * the warps, dgn over the block */
#pragma unroll
	for (int o = 1; o <= 2; o <<= 1) {
		rg_lo += __shfl_xor_sync(0xffffffffu, rg_lo, o);
		rg_hi += __shfl_xor_sync(0xffffffffu, rg_hi, o);
		rb_lo += __shfl_xor_sync(0xffffffffu, rb_lo, o);
		rb_hi += __shfl_xor_sync(0xffffffffu, rb_hi, o);
	}
#pragma unroll
	for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
		for (int e = 0; e < 2; e++) {
			float x = colp[nt][e];
			x += __shfl_xor_sync(0xffffffffu, x, 4);
			x += __shfl_xor_sync(0xffffffffu, x, 8);
			x += __shfl_xor_sync(0xffffffffu, x, 16);
			if (lane < 4)
				s.colw[warp][nt * 8 + col + e] = x;
		}
	dgn = warp_sum(dgn);
	if (lane == 0)
		s.red[warp] = dgn;
	if ((lane & 3) == 0) {
		s.row[r0] = rg_lo;
		s.row[r0 + 8] = rg_hi;
		if (gr.be.p) {
			if (r0 < n)
				gadd(gr.be, tok0 + (int64_t)r0 * H, rb_lo);
			if (r0 + 8 < n)
				gadd(gr.be, tok0 + (int64_t)(r0 + 8) * H, rb_hi);
		}
	}
	__syncthreads();
	if (tid < GC) {
		float x = s.row[tid] - s.colw[0][tid] - s.colw[1][tid] - s.colw[2][tid] - s.colw[3][tid];
		if (tid == n - 1)
			x += s.red[0] + s.red[1] + s.red[2] + s.red[3];
		s.g[tid] = x;
	}
	__syncthreads();
	if (la)
		put_dloga(gr.la, s.g, tok0, H, n, tid);
}

/* The tensor-core backward (see above). Scratch a head: nch*GC (DK + 3 DV
 * + GC) bf16, nch*GC floats, 2 nch DK DV bf16. */
template <int DK, int DV>
static int tc_bwd_launch(lmk_cuda_backend *b, gdn_grads gr, const bf16 *dout, const bf16 *q,
			 const bf16 *k, const bf16 *v, const bf16 *la, const bf16 *be, int64_t B,
			 int64_t Tn, int64_t H, float scale)
{
	const int nch = (int)((Tn + GC - 1) / GC);
	const int64_t rows = B * H * nch * GC;
	size_t sz[9] = {(size_t)rows * DK, (size_t)rows * DV, (size_t)rows * 2, (size_t)rows * GC,
			(size_t)B * H * nch * DK * DV, (size_t)B * H * nch * DK * DV,
			(size_t)rows * DV, (size_t)rows * DV, 0};
	size_t off[9] = {0}; /* bf16 elements; G takes 2 per float */
	for (int i = 0; i < 8; i++)
		off[i + 1] = off[i] + (sz[i] + 127) / 128 * 128;
	bf16 *scr = (bf16 *)lmk_cuda_scratch(b, off[8] * sizeof(bf16));
	if (!scr)
		return lmk_errcode();
	bf16 *W = scr + off[0], *U = scr + off[1], *Tg = scr + off[3], *Hs = scr + off[4];
	bf16 *dHs = scr + off[5], *Vg = scr + off[6], *dVg = scr + off[7];
	float *G = (float *)(scr + off[2]);
	size_t sp = sizeof(tc_prep_smem<DK, DV>), sg = sizeof(tc_bgrad_smem<DK, DV>);
	LMK_CK(cudaFuncSetAttribute(gdn_tc_prep<DK, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)sp));
	LMK_CK(cudaFuncSetAttribute(gdn_tc_bgrad<DK, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)sg));
	dim3 gc((unsigned)nch, (unsigned)(B * H));
	gdn_tc_prep<DK, DV><<<gc, TC_THREADS, sp, b->stream>>>(W, U, G, Tg, k, v, la, be, Tn, H, nch);
	LMK_CK_LAUNCH();
	const bool split = gdn_split(B * H * (DV / 16));
	if (split) {
		size_t si = sizeof(tc_bintra_smem<DK, DV>);
		LMK_CK(cudaFuncSetAttribute(gdn_tc_bintra<DK, DV>,
					    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)si));
		gdn_tc_bintra<DK, DV><<<gc, TC_THREADS, si, b->stream>>>(dVg, dout, q, k, G, Tn, H,
									  nch, scale);
		LMK_CK_LAUNCH();
	}
	tc_walk_args a = {NULL, Hs, Vg, dHs, dVg, q, k, W, U, dout, G, B, Tn, H, nch, scale};
	int rc = tc_walk_launch<WALK_SAVE, DK, DV>(b, a);
	if (rc < 0)
		return rc;
	rc = split ? tc_walk_launch<WALK_BSPLIT, DK, DV>(b, a) : tc_walk_launch<WALK_BWD, DK, DV>(b, a);
	if (rc < 0)
		return rc;
	gdn_tc_bgrad<DK, DV><<<gc, TC_THREADS, sg, b->stream>>>(gr, dout, q, k, v, la, be, G, Tg, Hs,
								 dHs, Vg, dVg, Tn, H, nch, scale);
	LMK_CK_LAUNCH();
	return 0;
}

/* Whether the tensor-core backward takes a call, and runs it. @return : 1
 * when it did not, else 0 or < 0 */
/* ---------------------------------- log-linear backward, tensor cores */

/* The backward of the log-linear tensor-core forward, derived by hand from
 * its algebra (and checked against finite differences in float64 on a
 * model of these kernels before they were written). With dÕ = scale dO,
 * K̃ = diag(exp(g_n - g)) K and, for each chunk, D_l the gradient of the
 * state that level l's state becomes on leaving the chunk (a merging
 * level's is that of the merged level j + 1, D_g):
 *  prep, intra (Qe only) and the walk (SAVE): W, U, g, Tm, Qe and the
 *        state of every live level of every chunk (bf16);
 *  bwalk (grid heads x value blocks, chunks in reverse): the gradients of
 *        the states entering each chunk, dS_l = gamma_n D_l - Wᵀ K̃ D_l +
 *        Qeᵀ diag(lam_l) dÕ (the D_l saved: D_g per chunk, the others at
 *        their slot);
 *  bgrad (grid chunks x heads): every token gradient of a chunk, through
 *        dQe = Σ_l diag(lam_l) dÕ S_lᵀ, dK̃ = U D_gᵀ - Σ_l W S_l D_lᵀ,
 *        dW = -Σ_l K̃ D_l S_lᵀ - Pᵀ dQe, dU = K̃ D_g and the intra-chunk
 *        dA = (dÕ Vᵀ) ⊙ Λ (see gdn_ll_bgrad). */

template <int DK, int BV> struct ll_bwalk_smem {
	bf16 Qe[GC * DK], W[GC * DK], K[GC * DK], dO[GC * BV], Lt[2][GC * BV], Zt[2][GC * BV];
	float g[GC], lam[GC][LL_LW];
};

template <int DK, int BV> static size_t ll_bwalk_bytes(int nsl)
{
	size_t t = (sizeof(ll_bwalk_smem<DK, BV>) + 127) / 128 * 128;
	return t + (size_t)nsl * DK * BV * (sizeof(bf16) + sizeof(float));
}

/* Z (rows of the warp) = -diag(e) K D as bf16, D a (DK x BV) bf16 state. */
template <int DK, int BV>
static __device__ __forceinline__ void ll_kd(bf16 *Z, const bf16 *sK, const bf16 *D, float e_lo,
					     float e_hi, int warp, int lane)
{
	float z[BV / 8][4];
	acc_zero(z);
#pragma unroll
	for (int kk = 0; kk < DK / 16; kk++) {
		uint32_t a[4];
		ld_a<DK>(a, sK, warp * 16, kk * 16, lane);
#pragma unroll
		for (int np = 0; np < BV / 16; np++) {
			uint32_t bb[4];
			ld_b_kn<BV>(bb, D, kk * 16, np * 16, lane);
			mma16816(z[2 * np], a, bb[0], bb[1]);
			mma16816(z[2 * np + 1], a, bb[2], bb[3]);
		}
	}
	const int col = (lane & 3) << 1, r0 = warp * 16 + (lane >> 2);
#pragma unroll
	for (int nt = 0; nt < BV / 8; nt++) {
		*(uint32_t *)(Z + swz<BV>(r0, nt * 8 + col)) = pack_bf16(-e_lo * z[nt][0], -e_lo * z[nt][1]);
		*(uint32_t *)(Z + swz<BV>(r0 + 8, nt * 8 + col)) =
			pack_bf16(-e_hi * z[nt][2], -e_hi * z[nt][3]);
	}
}

/* grid (B*H, DV/BV), TC_THREADS, nch >= 2: the chunks in reverse with the
 * gradients of the live levels' states in the walk's slots (see above);
 * saves D_g of every chunk but the last to Dgs (B*H, nch, DK, DV) and the
 * D_l of the levels that do not merge to Ds (B*H, NS, DK, DV) at ll_slot. */
template <int DK, int DV, int BV>
__global__ void __launch_bounds__(TC_THREADS)
gdn_ll_bwalk(bf16 *__restrict__ Dgs, bf16 *__restrict__ Ds, const bf16 *__restrict__ dout,
	     const bf16 *__restrict__ k, const bf16 *__restrict__ lam, const bf16 *__restrict__ Qeg,
	     const bf16 *__restrict__ Wg, const float *__restrict__ Gg, int64_t Tn, int64_t H,
	     int64_t NL, int nch, int nlevc, float scale)
{
	constexpr int SM = DK / 64, NT = BV / 8, SZ = DK * BV;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	ll_bwalk_smem<DK, BV> &s = *(ll_bwalk_smem<DK, BV> *)smem_raw;
	bf16 *Sb = (bf16 *)(smem_raw + (sizeof(ll_bwalk_smem<DK, BV>) + 127) / 128 * 128);
	float *Sf = (float *)(Sb + (size_t)(nlevc - 1) * SZ);
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int64_t bh = blockIdx.x, b = bh / H, h = bh % H, NS = ll_first(nch);
	const int c0 = blockIdx.y * BV, col = (lane & 3) << 1, r0 = warp * 16 + (lane >> 2);
	const bf16 *lamb = lam + (b * Tn * H + h) * NL;
	for (int ci = nch - 1; ci >= 0; ci--) {
		const int64_t t0 = (int64_t)ci * GC, crow = (bh * nch + ci) * GC;
		const bool last = ci == nch - 1;
		const int j = last ? 0 : __ffs(ci + 1) - 1; /* levels 1..j merged after */
		__syncthreads(); /* the previous chunk's tiles read by every warp */
		load_tile<DK, GC>(s.Qe, Qeg + crow * DK, DK, 0, GC, tid);
		load_tile<DK, GC>(s.W, Wg + crow * DK, DK, 0, GC, tid);
		load_tile<DK, GC>(s.K, k + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
		load_tile<BV, GC>(s.dO, dout + (b * Tn * H + h) * DV + c0, H * DV, t0, Tn, tid);
		if (tid < GC / 4)
			cp_async16(smem_u32(s.g + tid * 4), Gg + crow + tid * 4, true);
		cp_commit();
		if (tid < GC) {
			const bool ok = t0 + tid < Tn;
			const bf16 *lr = lamb + (ok ? (t0 + tid) * H * NL : 0);
			for (int l = 1; l < nlevc; l++)
				s.lam[tid][l] = ok && GC_LOG + l < NL ? tof(lr[GC_LOG + l]) : 0.0f;
		}
		cp_wait_all();
		__syncthreads(); /* the tiles and the previous states landed */
		if (!last) {
			store_tile<BV, DK>(Dgs + ((bh * nch + ci) * DK) * DV + c0, DV, Sb + (size_t)j * SZ,
					   tid);
			for (int l = j + 2; l < nlevc; l++)
				if ((ci >> (l - 1)) & 1)
					store_tile<BV, DK>(Ds + ((bh * NS + ll_slot(ci, l)) * DK) * DV + c0,
							   DV, Sb + (size_t)(l - 1) * SZ, tid);
		}
		const float gl = s.g[GC - 1], gn = expf(gl);
		const float e_lo = expf(gl - s.g[r0]), e_hi = expf(gl - s.g[r0 + 8]);
		/* the merging levels' common part gamma_n D_g - Wᵀ K̃ D_g */
		float gsh[SM][NT][4];
		if (!last && j > 0) {
			ll_kd<DK, BV>(s.Zt[1], s.K, Sb + (size_t)j * SZ, e_lo, e_hi, warp, lane);
			__syncthreads();
			ll_load<DK, BV>(gsh, Sf, j, j + 1, gn, tid);
			ll_tmm<DK, BV>(gsh, s.W, s.Zt[1], warp, lane);
		}
		int par = 0;
		for (int l = 1; l < nlevc; l++) {
			if (!((ci >> (l - 1)) & 1))
				continue;
			const bool stay = !last && l > j;
			const float w_lo = scale * s.lam[r0][l], w_hi = scale * s.lam[r0 + 8][l];
			bf16 *Lt = s.Lt[par], *Zt = s.Zt[par];
			par ^= 1;
#pragma unroll
			for (int nt = 0; nt < NT; nt++) {
				const int cc = nt * 8 + col;
				__nv_bfloat162 d_lo = *(const __nv_bfloat162 *)(s.dO + swz<BV>(r0, cc));
				__nv_bfloat162 d_hi = *(const __nv_bfloat162 *)(s.dO + swz<BV>(r0 + 8, cc));
				*(uint32_t *)(Lt + swz<BV>(r0, cc)) =
					pack_bf16(w_lo * __low2float(d_lo), w_lo * __high2float(d_lo));
				*(uint32_t *)(Lt + swz<BV>(r0 + 8, cc)) =
					pack_bf16(w_hi * __low2float(d_hi), w_hi * __high2float(d_hi));
			}
			if (stay)
				ll_kd<DK, BV>(Zt, s.K, Sb + (size_t)(l - 1) * SZ, e_lo, e_hi, warp, lane);
			__syncthreads(); /* Lt, Zt complete; every warp done reading D_l */
			float acc[SM][NT][4];
			if (stay) {
				ll_load<DK, BV>(acc, Sf, l - 1, l, gn, tid);
				ll_tmm<DK, BV>(acc, s.W, Zt, warp, lane);
			} else if (!last) {
#pragma unroll
				for (int m = 0; m < SM; m++)
#pragma unroll
					for (int nt = 0; nt < NT; nt++)
#pragma unroll
						for (int e = 0; e < 4; e++)
							acc[m][nt][e] = gsh[m][nt][e];
			} else {
				ll_load<DK, BV>(acc, Sf, 0, 0, 0.0f, tid);
			}
			ll_tmm<DK, BV>(acc, s.Qe, Lt, warp, lane);
			ll_store<DK, BV>(Sb, Sf, l - 1, acc, warp, lane, tid);
		}
	}
}

/* acc (16 rows x 16*NP) += A (rows r0 of a [m][k] tile of width WA, KT k
 * tiles) B (a [k][n] tile of width WB). */
template <int WA, int WB, int KT, int NP>
static __device__ __forceinline__ void mm_akn(float (&acc)[2 * NP][4], const bf16 *A, const bf16 *Bm,
					      int r0, int lane)
{
#pragma unroll
	for (int kk = 0; kk < KT; kk++) {
		uint32_t a[4];
		ld_a<WA>(a, A, r0, kk * 16, lane);
#pragma unroll
		for (int np = 0; np < NP; np++) {
			uint32_t bb[4];
			ld_b_kn<WB>(bb, Bm, kk * 16, np * 16, lane);
			mma16816(acc[2 * np], a, bb[0], bb[1]);
			mma16816(acc[2 * np + 1], a, bb[2], bb[3]);
		}
	}
}

/* acc (16 x 16*NP) += f R Bᵀ, R a 16 x 16*KT register tile, B a [n][k]
 * tile of width WB. */
template <int WB, int KT, int NP>
static __device__ __forceinline__ void mm_rnk(float (&acc)[2 * NP][4], const float (&R)[2 * KT][4],
					      const bf16 *Bm, float f, int lane)
{
#pragma unroll
	for (int kk = 0; kk < KT; kk++) {
		uint32_t a[4];
		c_to_a(a, R[2 * kk], R[2 * kk + 1], f);
#pragma unroll
		for (int np = 0; np < NP; np++) {
			uint32_t bb[4];
			ld_b_nk<WB>(bb, Bm, np * 16, kk * 16, lane);
			mma16816(acc[2 * np], a, bb[0], bb[1]);
			mma16816(acc[2 * np + 1], a, bb[2], bb[3]);
		}
	}
}

/* The sum of a row's value over the four lanes that hold it. */
static __device__ __forceinline__ float quad_sum(float x)
{
	x += __shfl_xor_sync(0xffffffffu, x, 1);
	x += __shfl_xor_sync(0xffffffffu, x, 2);
	return x;
}

/* The bgrad region that holds S_l and D_l during the level sweeps (NB
 * buffers of both: two where they fit in the space of what follows), then
 * the dW tile and four GC x GC tiles (bf16 elements): at DK = DV = 64
 * the block fits twice an SM. */
template <int DK, int DV> struct ll_sd {
	static constexpr int A = 2 * DK * DV, B = GC * DK + 4 * GC * GC;
	static constexpr int NB = 2 * A <= B ? 2 : 1;
	static constexpr int N = NB * A > B ? NB * A : B;
};

template <int DK, int DV> struct ll_bgrad_smem {
	bf16 Q[GC * DK], K[GC * DK], V[GC * DV], dO[GC * DV], W[GC * DK], Tm[GC * GC];
	bf16 X1[GC * DK], X2[GC * DV], SD[ll_sd<DK, DV>::N];
	float g[GC], b[GC], lam[GC][8], lamc[GC][LL_LW], row[GC], colw[4][GC], colb[4][GC], red[4];
};

/* The level tiles of bgrad in the order its sweeps read them, item it:
 * S_l for each live level l (the set bits of ci, l - 1), then, unless the
 * chunk is the last, D_g alone, then S_l and D (D_g for a merging level,
 * l <= j, else its saved D_l) for each live level, twice (sweeps 2 and 3).
 * Item it loads into buffer it % NB of SD (S, then D). */
template <int DK, int DV>
static __device__ __forceinline__ void ll_sd_issue(ll_bgrad_smem<DK, DV> &s, const bf16 *Ss,
						   const bf16 *Dgs, const bf16 *Ds, int64_t bh,
						   int64_t NS, int nch, int ci, int j, int nlive,
						   int it, int tid)
{
	bf16 *S = s.SD + (it % ll_sd<DK, DV>::NB) * 2 * DK * DV, *D = S + DK * DV;
	const bf16 *dg = Dgs + (bh * nch + ci) * DK * DV;
	if (it == nlive) {
		load_tile<DV, DK>(D, dg, DV, 0, DK, tid);
	} else {
		int m = ci;
		for (int t = it < nlive ? it : (it - nlive - 1) % nlive; t > 0; t--)
			m &= m - 1;
		const int l = __ffs(m);
		const int64_t sl = ll_slot(ci, l);
		load_tile<DV, DK>(S, Ss + (bh * NS + sl) * DK * DV, DV, 0, DK, tid);
		if (it > nlive)
			load_tile<DV, DK>(D, l > j ? Ds + (bh * NS + sl) * DK * DV : dg, DV, 0, DK,
					  tid);
	}
	cp_commit();
}

/* Item it of ni ready in its buffer, returned (with two buffers, item it
 * was issued before and item it + 1 starts loading now). */
template <int DK, int DV>
static __device__ __forceinline__ bf16 *ll_sd_next(ll_bgrad_smem<DK, DV> &s, const bf16 *Ss,
						   const bf16 *Dgs, const bf16 *Ds, int64_t bh,
						   int64_t NS, int nch, int ci, int j, int nlive,
						   int it, int ni, int tid)
{
	constexpr int NB = ll_sd<DK, DV>::NB;
	if (NB == 1) {
		__syncthreads(); /* the previous tiles read by every warp */
		ll_sd_issue<DK, DV>(s, Ss, Dgs, Ds, bh, NS, nch, ci, j, nlive, it, tid);
	}
	cp_wait<0>();
	__syncthreads(); /* item it landed; item it - 1 read by every warp */
	if (NB == 2 && it + 1 < ni)
		ll_sd_issue<DK, DV>(s, Ss, Dgs, Ds, bh, NS, nch, ci, j, nlive, it + 1, tid);
	return s.SD + (it % NB) * 2 * DK * DV;
}

/* grid (chunks, B*H), TC_THREADS: the token gradients of one chunk (warp
 * w owns the rows 16w..; the notation of the derivation above and of
 * head_chunked_bwd in lib/gdn.c: P the masked decayed Q Kᵀ, A = P Tm
 * diag(beta), Λ the intra-chunk level weights, E_ij = exp(g_i - g_j)):
 *  level sweeps: dQe and dlam_{6+l} (rowdot(dÕ, Qe S_l)); dK̃ (and gamma_n
 *        S.D); the state part of dW;
 *  then dA = (dÕ Vᵀ) ⊙ Λ ⊙ L, dlam_lv += the sums of A ⊙ dÕ Vᵀ by
 *        level, dV = (A ⊙ Λ)ᵀ dÕ + diag(beta) Tmᵀ dU, DB = dA diag(beta),
 *        dP = DB Tmᵀ - dQe Wᵀ, dq = diag(gamma) dQe + (dP ⊙ E) K,
 *        dW -= Pᵀ dQe, dTm = Pᵀ DB + (dW Kᵀ diag(gamma) + dU Vᵀ) diag(beta),
 *        and from dTm on as gdn_tc_bgrad (dA there, dMx here). */
template <int DK, int DV>
__global__ void __launch_bounds__(TC_THREADS)
gdn_ll_bgrad(gdn_grads gr, const bf16 *__restrict__ dout, const bf16 *__restrict__ q,
	     const bf16 *__restrict__ k, const bf16 *__restrict__ v, const bf16 *__restrict__ la,
	     const bf16 *__restrict__ be, const bf16 *__restrict__ lam, const float *__restrict__ Gg,
	     const bf16 *__restrict__ Tg, const bf16 *__restrict__ Wg, const bf16 *__restrict__ Ug,
	     const bf16 *__restrict__ Qeg, const bf16 *__restrict__ Ss, const bf16 *__restrict__ Dgs,
	     const bf16 *__restrict__ Ds, int64_t Tn, int64_t H, int64_t NL, int nch, int nlevc,
	     float scale)
{
	extern __shared__ __align__(128) unsigned char smem_raw[];
	ll_bgrad_smem<DK, DV> &s = *(ll_bgrad_smem<DK, DV> *)smem_raw;
	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, ci = blockIdx.x;
	const int64_t bh = blockIdx.y, b = bh / H, h = bh % H, t0 = (int64_t)ci * GC;
	const int n = Tn - t0 < GC ? (int)(Tn - t0) : GC;
	const int64_t tok0 = (b * Tn + t0) * H + h, crow = (bh * nch + ci) * GC, NS = ll_first(nch);
	const int col = (lane & 3) << 1, i0 = warp * 16, r0 = i0 + (lane >> 2);
	const bool last = ci == nch - 1;
	const int j = last ? 0 : __ffs(ci + 1) - 1;
	const int nlive = __popc(ci), ni = nlive + (last ? 0 : 1 + 2 * nlive);
	int it = 0; /* the next item of level tiles (ll_sd_issue) */
	bf16 *const sdW = s.SD, *const sP = s.SD + GC * DK, *const sZ = sP + GC * GC;
	bf16 *const sDB = sZ + GC * GC, *const sAL = sDB + GC * GC, *const sM2 = sDB;
	load_tile<DK, GC>(s.Q, q + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
	load_tile<DK, GC>(s.K, k + (b * Tn * H + h) * DK, H * DK, t0, Tn, tid);
	load_tile<DV, GC>(s.V, v + (b * Tn * H + h) * DV, H * DV, t0, Tn, tid);
	load_tile<DV, GC>(s.dO, dout + (b * Tn * H + h) * DV, H * DV, t0, Tn, tid);
	load_tile<DK, GC>(s.W, Wg + crow * DK, DK, 0, GC, tid);
	load_tile<GC, GC>(s.Tm, Tg + crow * GC, GC, 0, GC, tid);
	load_tile<DK, GC>(s.X1, Qeg + crow * DK, DK, 0, GC, tid);
	load_tile<DV, GC>(s.X2, Ug + crow * DV, DV, 0, GC, tid);
	cp_commit();
	if (ll_sd<DK, DV>::NB == 2 && ni > 0)
		ll_sd_issue<DK, DV>(s, Ss, Dgs, Ds, bh, NS, nch, ci, j, nlive, 0, tid);
	grad_prefetch<DK>(gr.q, tok0, H, n, tid);
	grad_prefetch<DK>(gr.k, tok0, H, n, tid);
	grad_prefetch<DV>(gr.v, tok0, H, n, tid);
	if (tid < GC) {
		s.g[tid] = Gg[crow + tid];
		s.b[tid] = tid < n ? tof(be[tok0 + (int64_t)tid * H]) : 0.0f;
		const bf16 *lr = lam + (tok0 + (int64_t)tid * H) * NL;
#pragma unroll
		for (int l = 0; l < 8; l++)
			s.lam[tid][l] = tid < n && l < NL ? tof(lr[l]) : 0.0f;
		for (int l = 1; l < nlevc; l++)
			s.lamc[tid][l] = tid < n && GC_LOG + l < NL ? tof(lr[GC_LOG + l]) : 0.0f;
	}
	cp_wait_all();
	__syncthreads();
	const float gl = s.g[GC - 1], g_lo = s.g[r0], g_hi = s.g[r0 + 8];
	const float e_lo = expf(gl - g_lo), e_hi = expf(gl - g_hi);
	const float gm_lo = expf(g_lo), gm_hi = expf(g_hi);
	float rg_lo = 0, rg_hi = 0, rb_lo = 0, rb_hi = 0, dgn = 0;
	/* sweep 1: dQe = Σ_l diag(lam_l) dÕ S_lᵀ; dlam_{6+l} = rowdot(dÕ, Qe S_l) */
	{
		float dqe[DK / 8][4];
		acc_zero(dqe);
		for (int l = 1; l < nlevc; l++) {
			if (!((ci >> (l - 1)) & 1))
				continue;
			const bf16 *sS = ll_sd_next<DK, DV>(s, Ss, Dgs, Ds, bh, NS, nch, ci, j, nlive,
							    it++, ni, tid);
			{
				float t[DK / 8][4];
				acc_zero(t);
				mm_ank<DV, DV, DV / 16, DK / 16>(t, s.dO, sS, i0, DK / 16, lane);
				const float w_lo = s.lamc[r0][l], w_hi = s.lamc[r0 + 8][l];
#pragma unroll
				for (int nt = 0; nt < DK / 8; nt++) {
					dqe[nt][0] += w_lo * t[nt][0];
					dqe[nt][1] += w_lo * t[nt][1];
					dqe[nt][2] += w_hi * t[nt][2];
					dqe[nt][3] += w_hi * t[nt][3];
				}
			}
			{
				float y[DV / 8][4];
				acc_zero(y);
				mm_akn<DK, DV, DK / 16, DV / 16>(y, s.X1, sS, i0, lane);
				float x_lo = 0, x_hi = 0;
				dot_rows<DV>(x_lo, x_hi, y, s.dO, r0, lane);
				x_lo = quad_sum(x_lo);
				x_hi = quad_sum(x_hi);
				/* every lane of the quad has read its rows' lamc (the
				 * shuffles converge them, but order no memory) */
				__syncwarp();
				if ((lane & 3) == 0) { /* the weights read: lamc becomes dlam */
					s.lamc[r0][l] = scale * x_lo;
					s.lamc[r0 + 8][l] = scale * x_hi;
				}
			}
		}
		float x_lo = 0, x_hi = 0;
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				dqe[nt][e] *= scale;
		dot_rows<DK>(x_lo, x_hi, dqe, s.Q, r0, lane);
		rg_lo += gm_lo * x_lo;
		rg_hi += gm_hi * x_hi;
		__syncthreads(); /* Qe read by every warp: X1 becomes dQe */
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++) {
			*(uint32_t *)(s.X1 + swz<DK>(r0, nt * 8 + col)) = pack_bf16(dqe[nt][0], dqe[nt][1]);
			*(uint32_t *)(s.X1 + swz<DK>(r0 + 8, nt * 8 + col)) =
				pack_bf16(dqe[nt][2], dqe[nt][3]);
			dqe[nt][0] *= gm_lo;
			dqe[nt][1] *= gm_lo;
			dqe[nt][2] *= gm_hi;
			dqe[nt][3] *= gm_hi;
		}
		put_grad<DK>(gr.q, dqe, tok0, H, r0, n, lane);
	}
	/* sweep 2: dK̃ = U D_gᵀ - Σ_l W S_l D_lᵀ, dU = K̃ D_g (into X2 for U),
	 * gamma_n Σ_l S_l.D_l */
	if (!last) {
		float dk[DK / 8][4];
		acc_zero(dk);
		{
			float u[DV / 8][4];
			acc_zero(u);
			const bf16 *sD = ll_sd_next<DK, DV>(s, Ss, Dgs, Ds, bh, NS, nch, ci, j, nlive,
							    it++, ni, tid) +
					 DK * DV;
			mm_ank<DV, DV, DV / 16, DK / 16>(dk, s.X2, sD, i0, DK / 16, lane);
			mm_akn<DK, DV, DK / 16, DV / 16>(u, s.K, sD, i0, lane);
			__syncthreads(); /* U read by every warp: X2 becomes dU */
#pragma unroll
			for (int nt = 0; nt < DV / 8; nt++) {
				*(uint32_t *)(s.X2 + swz<DV>(r0, nt * 8 + col)) =
					pack_bf16(e_lo * u[nt][0], e_lo * u[nt][1]);
				*(uint32_t *)(s.X2 + swz<DV>(r0 + 8, nt * 8 + col)) =
					pack_bf16(e_hi * u[nt][2], e_hi * u[nt][3]);
			}
		}
		float sd = 0;
		for (int l = 1; l < nlevc; l++) {
			if (!((ci >> (l - 1)) & 1))
				continue;
			const bf16 *sS = ll_sd_next<DK, DV>(s, Ss, Dgs, Ds, bh, NS, nch, ci, j, nlive,
							    it++, ni, tid),
				   *sD = sS + DK * DV;
			float x[DV / 8][4];
			acc_zero(x);
			mm_akn<DK, DV, DK / 16, DV / 16>(x, s.W, sS, i0, lane);
			mm_rnk<DV, DV / 16, DK / 16>(dk, x, sD, -1.0f, lane);
			for (int e = tid; e < DK * DV; e += TC_THREADS)
				sd += __bfloat162float(sS[e]) * __bfloat162float(sD[e]);
		}
		dgn += expf(gl) * sd;
		/* K̃ = diag(e) K: dk = e dK̃, dg_j -= e_j k_j.dK̃_j, dg_n += the sum */
		float x_lo = 0, x_hi = 0;
		dot_rows<DK>(x_lo, x_hi, dk, s.K, r0, lane);
		rg_lo -= e_lo * x_lo;
		rg_hi -= e_hi * x_hi;
		dgn += e_lo * x_lo + e_hi * x_hi;
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++) {
			dk[nt][0] *= e_lo;
			dk[nt][1] *= e_lo;
			dk[nt][2] *= e_hi;
			dk[nt][3] *= e_hi;
		}
		put_grad<DK>(gr.k, dk, tok0, H, r0, n, lane);
	} else {
		__syncthreads(); /* U read by every warp: X2 becomes dU = 0 */
		for (int e = tid; e < GC * DV / 2; e += TC_THREADS)
			((uint32_t *)s.X2)[e] = 0;
	}
	/* sweep 3: the state part of dW, -Σ_l K̃ D_l S_lᵀ, into sdW */
	{
		float dw[DK / 8][4];
		acc_zero(dw);
		for (int l = 1; !last && l < nlevc; l++) {
			if (!((ci >> (l - 1)) & 1))
				continue;
			const bf16 *sS = ll_sd_next<DK, DV>(s, Ss, Dgs, Ds, bh, NS, nch, ci, j, nlive,
							    it++, ni, tid),
				   *sD = sS + DK * DV;
			float z[DV / 8][4];
			acc_zero(z);
			mm_akn<DK, DV, DK / 16, DV / 16>(z, s.K, sD, i0, lane);
#pragma unroll
			for (int nt = 0; nt < DV / 8; nt++) {
				z[nt][0] *= -e_lo;
				z[nt][1] *= -e_lo;
				z[nt][2] *= -e_hi;
				z[nt][3] *= -e_hi;
			}
			mm_rnk<DV, DV / 16, DK / 16>(dw, z, sS, 1.0f, lane);
		}
		__syncthreads(); /* S, D read by every warp: SD becomes dW, P, ... */
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++) {
			*(uint32_t *)(sdW + swz<DK>(r0, nt * 8 + col)) = pack_bf16(dw[nt][0], dw[nt][1]);
			*(uint32_t *)(sdW + swz<DK>(r0 + 8, nt * 8 + col)) =
				pack_bf16(dw[nt][2], dw[nt][3]);
		}
	}
	float colp[GC / 8][2]; /* column partials of dg */
#pragma unroll
	for (int nt = 0; nt < GC / 8; nt++)
		colp[nt][0] = colp[nt][1] = 0.0f;
	/* the intra-chunk part: P, A, dA, DB, dP, dq; the column sums of dbeta
	 * into colb */
	{
		float colq[GC / 8][2];
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
			colq[nt][0] = colq[nt][1] = 0.0f;
		float p[GC / 8][4], pt[GC / 8][4];
		acc_zero(p);
		acc_zero(pt);
		mm_ank<DK, DK, DK / 16, GC / 16>(p, s.Q, s.K, i0, warp, lane);
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int i = r0 + (e >> 1) * 8, jj = nt * 8 + col + (e & 1);
				p[nt][e] = jj <= i ? expf(s.g[i] - s.g[jj]) * p[nt][e] : 0.0f;
			}
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
			if (kk <= warp) {
				uint32_t a[4];
				c_to_a(a, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
				for (int np = 0; np < GC / 16; np++)
					if (np <= kk) {
						uint32_t bb[4];
						ld_b_kn<GC>(bb, s.Tm, kk * 16, np * 16, lane);
						mma16816(pt[2 * np], a, bb[0], bb[1]);
						mma16816(pt[2 * np + 1], a, bb[2], bb[3]);
					}
			}
		float db[GC / 8][4];
		acc_zero(db);
		mm_ank<DV, DV, DV / 16, GC / 16>(db, s.dO, s.V, i0, warp, lane);
		float bins[2][8];
#pragma unroll
		for (int l = 0; l < 8; l++)
			bins[0][l] = bins[1][l] = 0.0f;
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int i = r0 + (e >> 1) * 8, jj = nt * 8 + col + (e & 1);
				int lv = i == jj ? 0 : 32 - __clz(i ^ jj);
				float dov = jj <= i ? scale * db[nt][e] : 0.0f;
				float a = pt[nt][e] * s.b[jj], lw = s.lam[i][lv];
#pragma unroll
				for (int l = 0; l < 7; l++)
					if (l == lv)
						bins[e >> 1][l] += a * dov;
				float da = dov * lw;
				colq[nt][e & 1] += da * pt[nt][e];
				db[nt][e] = da * s.b[jj];
				pt[nt][e] = jj <= i ? a * lw : 0.0f; /* A ⊙ Λ */
			}
		put64(sAL, pt, i0, lane);
		put64(sDB, db, i0, lane);
		put64(sP, p, i0, lane);
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
			for (int e = 0; e < 2; e++) {
				float y = colq[nt][e];
#pragma unroll
				for (int o = 4; o < 32; o <<= 1)
					y += __shfl_xor_sync(0xffffffffu, y, o);
				if (lane < 4)
					s.colb[warp][nt * 8 + col + e] = y;
			}
		/* every lane of the warp has read its rows' lam (the quad's
		 * shuffles below converge them, but order no memory) */
		__syncwarp();
#pragma unroll
		for (int l = 0; l < 7; l++) {
			float x_lo = quad_sum(bins[0][l]), x_hi = quad_sum(bins[1][l]);
			if ((lane & 3) == 0) { /* the weights read: lam becomes dlam */
				s.lam[r0][l] = x_lo;
				s.lam[r0 + 8][l] = x_hi;
			}
		}
		/* dP = DB Tmᵀ - dQe Wᵀ (keys up to the diagonal) */
		float dp[GC / 8][4];
		acc_zero(dp);
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
			if (kk <= warp) {
				uint32_t a[4];
				c_to_a(a, db[2 * kk], db[2 * kk + 1]);
#pragma unroll
				for (int np = 0; np < GC / 16; np++)
					if (np <= warp) {
						uint32_t bb[4];
						ld_b_nk<GC>(bb, s.Tm, np * 16, kk * 16, lane);
						mma16816(dp[2 * np], a, bb[0], bb[1]);
						mma16816(dp[2 * np + 1], a, bb[2], bb[3]);
					}
			}
		acc_zero(db); /* now dQe Wᵀ */
		mm_ank<DK, DK, DK / 16, GC / 16>(db, s.X1, s.W, i0, warp, lane);
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int i = r0 + (e >> 1) * 8, jj = nt * 8 + col + (e & 1);
				float d = dp[nt][e] - db[nt][e];
				float X = jj <= i ? d * p[nt][e] : 0.0f;
				if (e < 2)
					rg_lo += X;
				else
					rg_hi += X;
				colp[nt][e & 1] += X;
				dp[nt][e] = jj <= i ? d * expf(s.g[i] - s.g[jj]) : 0.0f;
			}
		float dq[DK / 8][4];
		acc_zero(dq);
		mm_rkn<DK, DK / 16>(dq, dp, s.K, warp, lane);
		put_grad<DK>(gr.q, dq, tok0, H, r0, n, lane);
		put64(sZ, dp, i0, lane);
	}
	__syncthreads();
	/* dW -= Pᵀ dQe (into sdW); dTm into M2; dk = Zᵀ Q */
	{
		float t[DK / 8][4];
		acc_zero(t);
		mm_tkn<GC, DK, DK / 16>(t, sP, s.X1, i0, warp, lane);
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++) {
			const int cc = nt * 8 + col;
			__nv_bfloat162 w_lo = *(const __nv_bfloat162 *)(sdW + swz<DK>(r0, cc));
			__nv_bfloat162 w_hi = *(const __nv_bfloat162 *)(sdW + swz<DK>(r0 + 8, cc));
			t[nt][0] = __low2float(w_lo) - t[nt][0];
			t[nt][1] = __high2float(w_lo) - t[nt][1];
			t[nt][2] = __low2float(w_hi) - t[nt][2];
			t[nt][3] = __high2float(w_hi) - t[nt][3];
			*(uint32_t *)(sdW + swz<DK>(r0, cc)) = pack_bf16(t[nt][0], t[nt][1]);
			*(uint32_t *)(sdW + swz<DK>(r0 + 8, cc)) = pack_bf16(t[nt][2], t[nt][3]);
		}
		float dt[GC / 8][4];
		acc_zero(dt);
#pragma unroll
		for (int kk = 0; kk < DK / 16; kk++) {
			uint32_t a[4];
			c_to_a(a, t[2 * kk], t[2 * kk + 1]);
#pragma unroll
			for (int np = 0; np < GC / 16; np++)
				if (np <= warp) {
					uint32_t bb[4];
					ld_b_nk<DK>(bb, s.K, np * 16, kk * 16, lane);
					mma16816(dt[2 * np], a, bb[0], bb[1]);
					mma16816(dt[2 * np + 1], a, bb[2], bb[3]);
				}
		}
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				dt[nt][e] *= expf(s.g[nt * 8 + col + (e & 1)]);
		mm_ank<DV, DV, DV / 16, GC / 16>(dt, s.X2, s.V, i0, warp, lane);
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++)
				dt[nt][e] *= s.b[nt * 8 + col + (e & 1)];
		mm_tkn<GC, GC, GC / 16>(dt, sP, sDB, i0, warp, lane);
		__syncthreads(); /* DB read by every warp: it becomes M2 */
		put64(sM2, dt, i0, lane);
	}
	float dk[DK / 8][4];
	acc_zero(dk);
	mm_tkn<GC, DK, DK / 16>(dk, sZ, s.Q, i0, warp, lane);
	__syncthreads();
	/* dMx = -Tmᵀ dTm Tmᵀ, Y = dMx ⊙ E, Yb (into Z), dk += Yb K */
	{
		float R[GC / 8][4], da[GC / 8][4];
		acc_zero(R);
		acc_zero(da);
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
			if (kk >= warp) {
				uint32_t a[4];
				ld_a_t<GC>(a, s.Tm, i0, kk * 16, lane);
#pragma unroll
				for (int np = 0; np < GC / 16; np++)
					if (np <= warp) {
						uint32_t bb[4];
						ld_b_kn<GC>(bb, sM2, kk * 16, np * 16, lane);
						mma16816(R[2 * np], a, bb[0], bb[1]);
						mma16816(R[2 * np + 1], a, bb[2], bb[3]);
					}
			}
#pragma unroll
		for (int kk = 0; kk < GC / 16; kk++)
			if (kk <= warp) {
				uint32_t a[4];
				c_to_a(a, R[2 * kk], R[2 * kk + 1]);
#pragma unroll
				for (int np = 0; np < GC / 16; np++)
					if (np <= warp) {
						uint32_t bb[4];
						ld_b_nk<GC>(bb, s.Tm, np * 16, kk * 16, lane);
						mma16816(da[2 * np], a, bb[0], bb[1]);
						mma16816(da[2 * np + 1], a, bb[2], bb[3]);
					}
			}
		acc_zero(R); /* now K Kᵀ */
		mm_ank<DK, DK, DK / 16, GC / 16>(R, s.K, s.K, i0, warp, lane);
#pragma unroll
		for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int i = r0 + (e >> 1) * 8, jj = nt * 8 + col + (e & 1);
				float y = jj < i ? -expf(s.g[i] - s.g[jj]) * da[nt][e] : 0.0f;
				float yk = y * R[nt][e], yb = s.b[i] * y;
				if (e < 2) {
					rb_lo += yk;
					rg_lo += s.b[i] * yk;
				} else {
					rb_hi += yk;
					rg_hi += s.b[i] * yk;
				}
				colp[nt][e & 1] += s.b[i] * yk;
				da[nt][e] = yb;
			}
		mm_rkn<DK, DK / 16>(dk, da, s.K, warp, lane);
		put64(sZ, da, i0, lane);
	}
	__syncthreads();
	/* dk += Ybᵀ K + diag(beta gamma) Tmᵀ dW; dV = diag(beta) Tmᵀ dU + (A ⊙
	 * Λ)ᵀ dÕ */
	mm_tkn<GC, DK, DK / 16>(dk, sZ, s.K, i0, warp, lane);
	{
		float t[DK / 8][4];
		acc_zero(t);
		mm_tkn<GC, DK, DK / 16>(t, s.Tm, sdW, i0, warp, lane);
		float x_lo = 0, x_hi = 0;
		dot_rows<DK>(x_lo, x_hi, t, s.K, r0, lane);
		const float bg_lo = s.b[r0] * gm_lo, bg_hi = s.b[r0 + 8] * gm_hi;
		rb_lo += gm_lo * x_lo;
		rb_hi += gm_hi * x_hi;
		rg_lo += bg_lo * x_lo;
		rg_hi += bg_hi * x_hi;
#pragma unroll
		for (int nt = 0; nt < DK / 8; nt++) {
			dk[nt][0] += bg_lo * t[nt][0];
			dk[nt][1] += bg_lo * t[nt][1];
			dk[nt][2] += bg_hi * t[nt][2];
			dk[nt][3] += bg_hi * t[nt][3];
		}
		put_grad<DK>(gr.k, dk, tok0, H, r0, n, lane);
	}
	{
		float t[DV / 8][4], o[DV / 8][4];
		acc_zero(t);
		acc_zero(o);
		mm_tkn<GC, DV, DV / 16>(t, s.Tm, s.X2, i0, warp, lane);
		dot_rows<DV>(rb_lo, rb_hi, t, s.V, r0, lane);
		mm_tkn<GC, DV, DV / 16>(o, sAL, s.dO, i0, warp, lane);
		const float b_lo = s.b[r0], b_hi = s.b[r0 + 8];
#pragma unroll
		for (int nt = 0; nt < DV / 8; nt++) {
			t[nt][0] = b_lo * t[nt][0] + scale * o[nt][0];
			t[nt][1] = b_lo * t[nt][1] + scale * o[nt][1];
			t[nt][2] = b_hi * t[nt][2] + scale * o[nt][2];
			t[nt][3] = b_hi * t[nt][3] + scale * o[nt][3];
		}
		put_grad<DV>(gr.v, t, tok0, H, r0, n, lane);
	}
	/* the sums: rows over the quad, columns over the lanes of a column and
	 * the warps, dgn over the block */
	rg_lo = quad_sum(rg_lo);
	rg_hi = quad_sum(rg_hi);
	rb_lo = quad_sum(rb_lo);
	rb_hi = quad_sum(rb_hi);
#pragma unroll
	for (int nt = 0; nt < GC / 8; nt++)
#pragma unroll
		for (int e = 0; e < 2; e++) {
			float x = colp[nt][e];
#pragma unroll
			for (int o = 4; o < 32; o <<= 1)
				x += __shfl_xor_sync(0xffffffffu, x, o);
			if (lane < 4)
				s.colw[warp][nt * 8 + col + e] = x;
		}
	dgn = warp_sum(dgn);
	if (lane == 0)
		s.red[warp] = dgn;
	if ((lane & 3) == 0) {
		s.row[r0] = rg_lo;
		s.row[r0 + 8] = rg_hi;
	}
	__syncthreads();
	if (tid < GC) {
		float x = s.row[tid] - s.colw[0][tid] - s.colw[1][tid] - s.colw[2][tid] - s.colw[3][tid];
		if (tid == n - 1)
			x += s.red[0] + s.red[1] + s.red[2] + s.red[3];
		s.g[tid] = x;
	}
	if ((lane & 3) == 0 && gr.be.p) {
		if (r0 < n)
			gadd(gr.be, tok0 + (int64_t)r0 * H,
			     rb_lo + s.colb[0][r0] + s.colb[1][r0] + s.colb[2][r0] + s.colb[3][r0]);
		if (r0 + 8 < n)
			gadd(gr.be, tok0 + (int64_t)(r0 + 8) * H,
			     rb_hi + s.colb[0][r0 + 8] + s.colb[1][r0 + 8] + s.colb[2][r0 + 8] +
				     s.colb[3][r0 + 8]);
	}
	__syncthreads();
	if (la)
		put_dloga(gr.la, s.g, tok0, H, n, tid);
	/* dlam of the row: levels 0..6 in lam, 6 + l (live l) in lamc; every
	 * old value loaded before the first store */
	if (gr.lam.p && tid < n) {
		constexpr int NV = 7 + LL_LW - 1;
		const int64_t base = (tok0 + (int64_t)tid * H) * NL;
		float old[NV];
#pragma unroll
		for (int lv = 0; lv < NV; lv++)
			if (lv < NL && (lv < 7 || ((ci >> (lv - 7)) & 1)))
				old[lv] = gget(gr.lam, base + lv);
#pragma unroll
		for (int lv = 0; lv < NV; lv++)
			if (lv < NL && (lv < 7 || ((ci >> (lv - 7)) & 1)))
				gset(gr.lam, base + lv,
				     old[lv] + (lv < 7 ? s.lam[tid][lv] : s.lamc[tid][lv - GC_LOG]));
	}
}

template <int DK, int DV, int BV>
static int ll_bwalk_launch(lmk_cuda_backend *b, bf16 *Dgs, bf16 *Ds, const bf16 *dout,
			   const bf16 *k, const bf16 *lam, const bf16 *Qe, const bf16 *W,
			   const float *G, int64_t B, int64_t Tn, int64_t H, int64_t NL, int nch,
			   int nlevc, float scale)
{
	size_t sw = ll_bwalk_bytes<DK, BV>(nlevc - 1);
	LMK_CK(cudaFuncSetAttribute(gdn_ll_bwalk<DK, DV, BV>,
				    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sw));
	gdn_ll_bwalk<DK, DV, BV><<<dim3((unsigned)(B * H), DV / BV), TC_THREADS, sw, b->stream>>>(
		Dgs, Ds, dout, k, lam, Qe, W, G, Tn, H, NL, nch, nlevc, scale);
	LMK_CK_LAUNCH();
	return 0;
}

/* The log-linear tensor-core backward (see above). Scratch a head: nch*GC
 * (2 DK + DV + GC) bf16, nch*GC floats, and (2 NS + nch) DK DV bf16 for
 * the saved states (NS = ll_first(nch), about nch log2(nch) / 2).
 * @return : 1 when the levels do not fit (the caller runs the general
 * kernels), else 0 or < 0 */
template <int DK, int DV>
static int ll_bwd_launch(lmk_cuda_backend *b, gdn_grads gr, const bf16 *dout, const bf16 *q,
			 const bf16 *k, const bf16 *v, const bf16 *la, const bf16 *be,
			 const bf16 *lam, int64_t B, int64_t Tn, int64_t H, int64_t NL, float scale)
{
	const int nch = (int)((Tn + GC - 1) / GC), nlevc = levels_of(nch);
	if (nlevc > LL_LW || ll_walk_bytes<DK, 16>(nlevc - 1) > LL_SMEM_MAX ||
	    ll_bwalk_bytes<DK, 16>(nlevc - 1) > LL_SMEM_MAX)
		return 1;
	const int64_t rows = B * H * nch * GC, NS = ll_first(nch), DD = (int64_t)DK * DV;
	size_t sz[8] = {(size_t)rows * DK, (size_t)rows * DK, (size_t)rows * DV, (size_t)rows * GC,
			(size_t)rows * 2, (size_t)(B * H * NS * DD), (size_t)(B * H * NS * DD),
			(size_t)(B * H * nch * DD)};
	size_t off[9] = {0}; /* bf16 elements; G takes 2 per float */
	for (int i = 0; i < 8; i++)
		off[i + 1] = off[i] + (sz[i] + 127) / 128 * 128;
	bf16 *scr = (bf16 *)lmk_cuda_scratch(b, off[8] * sizeof(bf16));
	if (!scr)
		return lmk_errcode();
	bf16 *W = scr + off[0], *Qe = scr + off[1], *U = scr + off[2], *Tm = scr + off[3];
	float *G = (float *)(scr + off[4]);
	bf16 *Ss = scr + off[5], *Ds = scr + off[6], *Dgs = scr + off[7];
	size_t sp = sizeof(tc_prep_smem<DK, DV>), si = sizeof(ll_intra_smem<DK, DV>);
	size_t sg = sizeof(ll_bgrad_smem<DK, DV>);
	LMK_CK(cudaFuncSetAttribute(gdn_tc_prep<DK, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)sp));
	LMK_CK(cudaFuncSetAttribute(gdn_ll_intra<DK, DV>,
				    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)si));
	LMK_CK(cudaFuncSetAttribute(gdn_ll_bgrad<DK, DV>,
				    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sg));
	dim3 gc((unsigned)nch, (unsigned)(B * H));
	gdn_tc_prep<DK, DV><<<gc, TC_THREADS, sp, b->stream>>>(W, U, G, Tm, k, v, la, be, Tn, H,
								 nch);
	LMK_CK_LAUNCH();
	gdn_ll_intra<DK, DV><<<gc, TC_THREADS, si, b->stream>>>((bf16 *)NULL, Qe, q, k, v, be, lam,
								  W, G, Tm, Tn, H, NL, nch, scale);
	LMK_CK_LAUNCH();
	if (nch > 1) {
		int rc = ll_walk<DK, DV, true>(b, (bf16 *)NULL, Ss, k, lam, Qe, W, U, G, B, Tn, H, NL,
					       nch, nlevc, scale);
		if (rc < 0)
			return rc;
		const int bv = ll_bv<DK, DV, true>(B * H, nlevc);
		if constexpr (DK == 64)
			if (bv == 64)
				rc = ll_bwalk_launch<DK, DV, 64>(b, Dgs, Ds, dout, k, lam, Qe, W, G, B,
								 Tn, H, NL, nch, nlevc, scale);
		if (bv == 32)
			rc = ll_bwalk_launch<DK, DV, 32>(b, Dgs, Ds, dout, k, lam, Qe, W, G, B, Tn, H,
							 NL, nch, nlevc, scale);
		else if (bv == 16)
			rc = ll_bwalk_launch<DK, DV, 16>(b, Dgs, Ds, dout, k, lam, Qe, W, G, B, Tn, H,
							 NL, nch, nlevc, scale);
		if (rc < 0)
			return rc;
	}
	gdn_ll_bgrad<DK, DV><<<gc, TC_THREADS, sg, b->stream>>>(gr, dout, q, k, v, la, be, lam, G,
								  Tm, W, U, Qe, Ss, Dgs, Ds, Tn, H,
								  NL, nch, nlevc, scale);
	LMK_CK_LAUNCH();
	return 0;
}

static int tc_backward(lmk_cuda_backend *b, lmk_dtype dt, gdn_grads gr, const void *dout,
		       const void *q, const void *k, const void *v, const void *la, const void *be,
		       const void *lam, int64_t B, int64_t Tn, int64_t H, int64_t Dk, int64_t Dv,
		       int64_t NL, float scale)
{
	if (dt != LMK_BF16 || (Dk != 64 && Dk != 128) || (Dv != 64 && Dv != 128))
		return 1;
	const bf16 *DO = (const bf16 *)dout, *Q = (const bf16 *)q, *K = (const bf16 *)k;
	const bf16 *V = (const bf16 *)v, *LA = (const bf16 *)la, *BE = (const bf16 *)be;
	const bf16 *LM = (const bf16 *)lam;
	if (lam && Dk == 64 && Dv == 64)
		return ll_bwd_launch<64, 64>(b, gr, DO, Q, K, V, LA, BE, LM, B, Tn, H, NL, scale);
	if (lam && Dk == 64)
		return ll_bwd_launch<64, 128>(b, gr, DO, Q, K, V, LA, BE, LM, B, Tn, H, NL, scale);
	if (lam && Dv == 64)
		return ll_bwd_launch<128, 64>(b, gr, DO, Q, K, V, LA, BE, LM, B, Tn, H, NL, scale);
	if (lam)
		return ll_bwd_launch<128, 128>(b, gr, DO, Q, K, V, LA, BE, LM, B, Tn, H, NL, scale);
	if (Dk == 64 && Dv == 64)
		return tc_bwd_launch<64, 64>(b, gr, DO, Q, K, V, LA, BE, B, Tn, H, scale);
	if (Dk == 64)
		return tc_bwd_launch<64, 128>(b, gr, DO, Q, K, V, LA, BE, B, Tn, H, scale);
	if (Dv == 64)
		return tc_bwd_launch<128, 64>(b, gr, DO, Q, K, V, LA, BE, B, Tn, H, scale);
	return tc_bwd_launch<128, 128>(b, gr, DO, Q, K, V, LA, BE, B, Tn, H, scale);
}

/* The chunked launches. */
template <class T>
static int chunk_fwd_launch(lmk_cuda_backend *b, T *out, const T *q, const T *k, const T *v,
			    const T *la, const T *be, const T *lam, int64_t B, int64_t Tn,
			    int64_t H, int64_t Dk, int64_t Dv, int64_t NL, float scale)
{
	int nch = (int)((Tn + GC - 1) / GC), nlevc = lam ? levels_of(nch) : 1;
	int cb = lam ? 8 : 16;
	size_t rbytes = sizeof(float) * (size_t)(B * H * nch) * (size_t)rec_size((int)Dk, (int)Dv);
	float *rec = (float *)lmk_cuda_scratch(b, rbytes);
	if (!rec)
		return lmk_errcode();
	size_t s1 = sizeof(float) * setup_floats((int)Dk);
	size_t s2 = sizeof(float) * state_floats((int)Dk, nlevc, cb);
	if (s2 > 220 * 1024)
		return lmk_err(LMK_EUNSUP, "gdn: %d chunk levels do not fit in shared memory", nlevc);
	LMK_CK(cudaFuncSetAttribute(gdn_chunk_prep<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)s1));
	LMK_CK(cudaFuncSetAttribute(gdn_chunk_state<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)s2));
	gdn_chunk_prep<T><<<dim3((unsigned)nch, (unsigned)(B * H)), 256, s1, b->stream>>>(
		rec, q, k, v, la, be, lam, Tn, H, (int)Dk, (int)Dv, NL, nch, scale);
	LMK_CK_LAUNCH();
	gdn_chunk_state<T><<<dim3((unsigned)(B * H), (unsigned)((Dv + cb - 1) / cb)), 256, s2,
			     b->stream>>>(out, (float *)NULL, rec, lam, Tn, H, (int)Dk, (int)Dv, NL,
					  nch, nlevc, cb, scale);
	LMK_CK_LAUNCH();
	return 0;
}

template <class T>
static int chunk_bwd_launch(lmk_cuda_backend *b, gdn_grads gr, const T *dout, const T *q,
			    const T *k, const T *v, const T *la, const T *be, const T *lam,
			    int64_t B, int64_t Tn, int64_t H, int64_t Dk, int64_t Dv, int64_t NL,
			    float scale)
{
	int nch = (int)((Tn + GC - 1) / GC), nlevc = lam ? levels_of(nch) : 1, cb = lam ? 8 : 16;
	int64_t nrec = B * H * nch * rec_size((int)Dk, (int)Dv), nst = B * H * nch * nlevc * Dk * Dv;
	int64_t nloc = B * H * nch * (int64_t)GC * (3 * Dk + 3 * Dv);
	float *rec = (float *)lmk_cuda_scratch(b, sizeof(float) * (size_t)(nrec + 2 * nst + nloc));
	if (!rec)
		return lmk_errcode();
	float *sin = rec + nrec, *dsl = sin + nst, *loc = dsl + nst;
	size_t s1 = sizeof(float) * setup_floats((int)Dk);
	size_t s2 = sizeof(float) * state_floats((int)Dk, nlevc, cb);
	size_t s3 = sizeof(float) * bstate_floats((int)Dk, nlevc, cb);
	size_t s4 = sizeof(float) * local_floats((int)Dk);
	if (s2 > 220 * 1024 || s3 > 220 * 1024)
		return lmk_err(LMK_EUNSUP, "gdn: %d chunk levels do not fit in shared memory", nlevc);
	LMK_CK(cudaFuncSetAttribute(gdn_chunk_prep<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)s1));
	LMK_CK(cudaFuncSetAttribute(gdn_chunk_state<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)s2));
	LMK_CK(cudaFuncSetAttribute(gdn_chunk_bstate<T>,
				    cudaFuncAttributeMaxDynamicSharedMemorySize, (int)s3));
	LMK_CK(cudaFuncSetAttribute(gdn_chunk_local<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)s4));
	dim3 gc((unsigned)nch, (unsigned)(B * H)), gs((unsigned)(B * H), (unsigned)((Dv + cb - 1) / cb));
	gdn_chunk_prep<T><<<gc, 256, s1, b->stream>>>(rec, q, k, v, la, be, lam, Tn, H, (int)Dk,
						      (int)Dv, NL, nch, scale);
	LMK_CK_LAUNCH();
	gdn_chunk_state<T><<<gs, 256, s2, b->stream>>>((T *)NULL, sin, rec, lam, Tn, H, (int)Dk,
						       (int)Dv, NL, nch, nlevc, cb, scale);
	LMK_CK_LAUNCH();
	gdn_chunk_bstate<T><<<gs, 256, s3, b->stream>>>(dsl, rec, dout, lam, Tn, H, (int)Dk, (int)Dv,
							NL, nch, nlevc, cb, scale);
	LMK_CK_LAUNCH();
	gdn_chunk_local<T><<<gc, 256, s4, b->stream>>>(gr, loc, rec, sin, dsl, dout, q, k, v, la, be,
						       lam, Tn, H, (int)Dk, (int)Dv, NL, nch, nlevc,
						       scale);
	LMK_CK_LAUNCH();
	return 0;
}

extern "C" int lmk_cuda_gdn_forward(void *be, lmk_dtype dt, void *out, const void *q,
				    const void *k, const void *v, const void *loga,
				    const void *beta, const void *lam, int64_t B, int64_t Tn,
				    int64_t H, int64_t Dk, int64_t Dv, int64_t NL, float scale,
				    int algo, int chunk)
{
	if (check_dims("gdn", Dk, Dv) < 0)
		return LMK_EUNSUP;
	if (B * Tn * H == 0)
		return 0;
	if (algo != GDN_RECURRENT) {
		int rc = tc_forward(LMK_BE(be), dt, out, q, k, v, loga, beta, lam, B, Tn, H, Dk, Dv,
				    NL, scale);
		if (rc <= 0)
			return rc;
		LMK_DT_SWITCH(dt, "gdn",
			      return chunk_fwd_launch<T>(LMK_BE(be), (T *)out, (const T *)q,
							 (const T *)k, (const T *)v, (const T *)loga,
							 (const T *)beta, (const T *)lam, B, Tn, H, Dk,
							 Dv, NL, scale));
	}
	int nlev = lam ? levels_of(Tn) : 1;
	LMK_DT_SWITCH(dt, "gdn",
		      return fwd_launch<T>(LMK_BE(be), (T *)out, (const T *)q, (const T *)k,
					   (const T *)v, (const T *)loga, (const T *)beta,
					   (const T *)lam, (float *)NULL, B, Tn, H, Dk, Dv, NL, nlev,
					   0, scale));
	return 0;
}

extern "C" int lmk_cuda_gdn_backward(void *be, lmk_dtype dt, lmk_gbuf dq, lmk_gbuf dk,
				     lmk_gbuf dv, lmk_gbuf dloga, lmk_gbuf dbeta, lmk_gbuf dlam,
				     const void *dout, const void *q, const void *k, const void *v,
				     const void *loga, const void *beta, const void *lam, int64_t B,
				     int64_t Tn, int64_t H, int64_t Dk, int64_t Dv, int64_t NL,
				     float scale, int algo, int chunk)
{
	const lmk_gbuf gs[6] = {dq, dk, dv, dloga, dbeta, dlam};
	for (int i = 0; i < 6; i++)
		if (check_gbuf("gdn", dt, gs[i]) < 0)
			return LMK_EUNSUP;
	if (check_dims("gdn", Dk, Dv) < 0)
		return LMK_EUNSUP;
	if (B * Tn * H == 0)
		return 0;
	lmk_cuda_backend *b = LMK_BE(be);
	gdn_grads gr = {to_gacc(dq), to_gacc(dk), to_gacc(dv), to_gacc(dloga), to_gacc(dbeta),
			to_gacc(dlam)};
	if (algo != GDN_RECURRENT) {
		int rc = tc_backward(b, dt, gr, dout, q, k, v, loga, beta, lam, B, Tn, H, Dk, Dv,
				     NL, scale);
		if (rc <= 0)
			return rc;
		LMK_DT_SWITCH(dt, "gdn",
			      return chunk_bwd_launch<T>(b, gr, (const T *)dout, (const T *)q,
							 (const T *)k, (const T *)v, (const T *)loga,
							 (const T *)beta, (const T *)lam, B, Tn, H, Dk,
							 Dv, NL, scale));
	}
	int nlev = lam ? levels_of(Tn) : 1, rpl = rows_per_lane(Dk), dkp = rpl * GDN_G;
	int cpb = (int)((Dv + 3) / 4 * 4), bd = cpb * GDN_G, nwarp = bd / 32;
	/* windows of ~sqrt(T) steps: checkpoints plus one window is the least
	 * state memory for one recomputation */
	int64_t W = 16;
	while (W * W < Tn)
		W += 16;
	int64_t nw = (Tn + W - 1) / W, SZ = (int64_t)nlev * rpl * bd;
	size_t bytes = sizeof(float) * (size_t)(B * H) * (size_t)((nw + W + 1) * SZ);
	float *scr = (float *)lmk_cuda_scratch(b, bytes);
	if (!scr)
		return lmk_errcode();
	size_t smem = sizeof(float) * (size_t)(2 * dkp + 2 * cpb + nlev + 2 +
					       nwarp * (2 * dkp + 2 + nlev));
	LMK_DT_SWITCH(dt, "gdn", {
		if (smem > 48 * 1024)
			LMK_CK(cudaFuncSetAttribute(gdn_bwd_kernel<T>,
						    cudaFuncAttributeMaxDynamicSharedMemorySize,
						    (int)smem));
		gdn_bwd_kernel<T><<<(unsigned)(B * H), bd, smem, b->stream>>>(
			gr, (const T *)dout, (const T *)q, (const T *)k, (const T *)v,
			(const T *)loga, (const T *)beta, (const T *)lam, scr, Tn, H, (int)Dk,
			(int)Dv, NL, nlev, rpl, W, scale);
		LMK_CK_LAUNCH();
	});
	return 0;
}
