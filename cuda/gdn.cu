/* gdn.cu: Gated DeltaNet and its log-linear version on the GPU (gdn_cuda.h).
 * The recurrence of lib/gdn.c, split by value column: column c of every
 * level state S^(l) (Dk x Dv) evolves on its own given k_t, beta_t, a_t and
 * v_t[c], so a group of 8 lanes owns one column, each lane rows g, g+8, ...
 * (rows padded to a multiple of 8 with k = q = 0), and the only sums a
 * column needs (kᵀS, qᵀS) are shuffles inside the group.
 * State layout of a block: element (l, row g+8i, column of thread tid) at
 * (l*rpl + i)*bd + tid (bd threads), so that each thread touches only its own
 * elements (no synchronisation for the state) and a warp's accesses are
 * consecutive. Shape letters as in lib/gdn.h; the variant is the first one
 * (correctness over speed): no tensor cores yet. */
#include "common.cuh"
#include "gdn_cuda.h"

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

extern "C" int lmk_cuda_gdn_forward(void *be, lmk_dtype dt, void *out, const void *q,
				    const void *k, const void *v, const void *loga,
				    const void *beta, const void *lam, int64_t B, int64_t Tn,
				    int64_t H, int64_t Dk, int64_t Dv, int64_t NL, float scale,
				    int chunk)
{
	if (check_dims("gdn", Dk, Dv) < 0)
		return LMK_EUNSUP;
	if (B * Tn * H == 0)
		return 0;
	int nlev = lam ? levels_of(Tn) : 1;
	LMK_DT_SWITCH(dt, "gdn",
		      return fwd_launch<T>(LMK_BE(be), (T *)out, (const T *)q, (const T *)k,
					   (const T *)v, (const T *)loga, (const T *)beta,
					   (const T *)lam, (float *)NULL, B, Tn, H, Dk, Dv, NL, nlev,
					   0, scale));
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

extern "C" int lmk_cuda_gdn_backward(void *be, lmk_dtype dt, lmk_gbuf dq, lmk_gbuf dk,
				     lmk_gbuf dv, lmk_gbuf dloga, lmk_gbuf dbeta, lmk_gbuf dlam,
				     const void *dout, const void *q, const void *k, const void *v,
				     const void *loga, const void *beta, const void *lam, int64_t B,
				     int64_t Tn, int64_t H, int64_t Dk, int64_t Dv, int64_t NL,
				     float scale, int chunk)
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
	gdn_grads gr = {to_gacc(dq), to_gacc(dk), to_gacc(dv), to_gacc(dloga), to_gacc(dbeta),
			to_gacc(dlam)};
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
