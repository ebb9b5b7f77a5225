/* ops.c - the network's math, forward and backward; the only user of cblas.h.
 *
 * Layout [C][N][H][W] (see ops.h): a whole batch is one matrix per tensor
 * whose rows are channels, so a convolution is one GEMM
 *     out[cout][N*Ho*Wo] = W[cout][cin*k*k] x col[cin*k*k][N*Ho*Wo]
 * and the per-channel epilogues (bias, BN, ReLU) walk contiguous rows.
 *
 * Why im2col is chunked over images: the column matrix of a 3x3 conv is 9x
 * its input; for layer1 at batch 32 that is 231 MB, more than all the
 * activations together. Splitting the batch into chunks of whole images keeps
 * the workspace bounded (KT_COL_CAP floats) while each GEMM still sees
 * thousands of columns, which is all OpenBLAS needs to run at full speed; the
 * chunk's output is a column block of out (ldc = N*Ho*Wo), so nothing is
 * copied back. A chunk still warm in cache also makes the fused bias/ReLU
 * epilogue cheap.
 *
 * Why 1x1 stride-1 convs skip im2col: their column matrix IS the input.
 * 1x1 stride-2 (Keras v1 blocks, torchvision downsample) gathers every other
 * pixel through the same im2col (k = 1, pad = 0).
 *
 * Precision: GEMMs are float32 (OpenBLAS), reductions that feed statistics
 * (BN mean/variance, pooling, losses) accumulate in double so results do not
 * depend on the summation order more than float32 GEMMs already do.
 */
#include "ops.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <string.h>

/* Column workspace bound: 4M floats = 16 MiB. Measured on the reference
 * machine (bench/infer_bench.sh): larger chunks gave no faster GEMMs. */
#define KT_COL_CAP ((size_t)4 << 20)


/* ------------------------------------------------------ vector kernels */

/* Every elementwise pass and reduction runs over whole activations, so it
 * must go at memory speed. GCC -O2 leaves these loops scalar (and turns
 * "v > 0 ? v : 0" into a branch that mispredicts on half the values), so
 * they are written with GCC vector extensions, a whole vector at a time.
 * Reductions accumulate in float vectors over blocks of KT_BLOCK elements and
 * add each block's total in double: the error stays at float rounding of a
 * block, independent of the length.
 *
 * The kernels (ops_vec.h) are compiled once per instruction set (AVX-512,
 * AVX2, baseline x86-64) and the best copy is picked when the program loads
 * (GNU ifunc). Not with target_clones: GCC 12 lowers the vector comparisons
 * of a cloned function for the baseline target before cloning, so even the
 * AVX-512 clone did ReLU one lane at a time through general registers; the
 * bias/ReLU pass after each conv took 20% of an inference run. A function
 * compiled with its own target attribute gets mask-register code. */
#define KT_BLOCK 1024

/* Macros rather than functions: a 64-byte vector argument would change the
 * calling convention between the copies. VHSUM adds the lanes of v to the
 * double s; VRELU is ReLU keeping NaN (as torch): v where v > 0 or NaN. */
#define VHSUM(s, v)                                 \
    do {                                            \
        for (int j_ = 0; j_ < VL; j_++) s += v[j_]; \
    } while (0)
#define VRELU(v) ((vf)((vi)(v) & (((v) > 0.0f) | ((v) != (v)))))

static inline float srelu(float v) { return v > 0.0f || v != v ? v : 0.0f; }

/* max(a, b) where a NaN in either wins (the max pool's rule). */
static inline float nmax(float a, float b) { return a > b || a != a ? a : b; }

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#define VL 16
#define VK(f) f##_avx512
#define VATTR __attribute__((target("avx512f")))
#include "ops_vec.h"
#undef VL
#undef VK
#undef VATTR
#define VL 8
#define VK(f) f##_avx2
#define VATTR __attribute__((target("avx2")))
#include "ops_vec.h"
#undef VL
#undef VK
#undef VATTR
#define VL 4
#define VK(f) f##_base
#define VATTR
#include "ops_vec.h"
#undef VL
#undef VK
#undef VATTR

/* The resolver runs while the dynamic linker relocates kt, before main and
 * before any constructor: __builtin_cpu_init must come first there.
 * KT_OPS_ISA (2 = AVX2, 1 = baseline) caps the choice at build time, so the
 * test suite can check every copy on one machine (Makefile: t_ops_isa*). */
#ifndef KT_OPS_ISA
#define KT_OPS_ISA 3
#endif
/* The resolvers run before the sanitizers' runtimes are set up, so they
 * must not be instrumented. */
#define KT_NO_SANITIZE __attribute__((no_sanitize("address", "undefined")))
#define VK_PICK(f)                                                                   \
    KT_NO_SANITIZE static __typeof__(f##_base) *f##_pick(void)                       \
    {                                                                                \
        __builtin_cpu_init();                                                        \
        if (KT_OPS_ISA >= 3 && __builtin_cpu_supports("avx512f")) return f##_avx512; \
        if (KT_OPS_ISA >= 2 && __builtin_cpu_supports("avx2")) return f##_avx2;      \
        return f##_base;                                                             \
    }                                                                                \
    static __typeof__(f##_base) f __attribute__((ifunc(#f "_pick")))
VK_PICK(vk_bias_act);
VK_PICK(vk_sum);
VK_PICK(vk_dot);
VK_PICK(vk_axpb);
VK_PICK(vk_bn_dx);
VK_PICK(vk_relu);
VK_PICK(vk_relu_grad);
VK_PICK(vk_gather2);
VK_PICK(vk_add);
VK_PICK(vk_vmax3);
VK_PICK(vk_maxpool_arg);
VK_PICK(vk_wino_in);
VK_PICK(vk_wino_out);
VK_PICK(vk_wino_dout);
#else
#define VL 4
#define VK(f) f
#define VATTR
#include "ops_vec.h"
#undef VK
#undef VATTR
#endif

/* ---------------------------------------------------------------- conv */

void kt_conv_shape_init(kt_conv_shape *s, int n, int cin, int h, int w, int cout, int k,
                        int stride, int pad)
{
    s->n = n, s->cin = cin, s->h = h, s->w = w;
    s->cout = cout, s->k = k, s->stride = stride, s->pad = pad;
    s->ho = (h + 2 * pad - k) / stride + 1;
    s->wo = (w + 2 * pad - k) / stride + 1;
    s->par = NULL, s->par_ctx = NULL;
}

static int conv_is_direct(const kt_conv_shape *s)
{
    return s->k == 1 && s->stride == 1 && s->pad == 0;
}

/* Images per im2col chunk: as many as fit under the cap, at least one. */
static int conv_chunk(const kt_conv_shape *s)
{
    size_t per_image = (size_t)s->cin * s->k * s->k * s->ho * s->wo;
    size_t nc = KT_COL_CAP / per_image;
    if (nc < 1) nc = 1;
    if (nc > (size_t)s->n) nc = (size_t)s->n;
    return (int)nc;
}

static size_t wino_workspace(const kt_conv_shape *s);

size_t kt_conv_workspace(const kt_conv_shape *s)
{
    if (conv_is_direct(s)) return 0;
    size_t ws = (size_t)s->cin * s->k * s->k * s->ho * s->wo * (size_t)conv_chunk(s);
    if (kt_conv_wino_ok(s) && wino_workspace(s) > ws) ws = wino_workspace(s);
    return ws;
}

/* Output columns ox in [lo, hi] read input column ox*stride - pad + kx inside
 * [0, w); the others read padding. */
static void valid_range(int *lo, int *hi, int kx, const kt_conv_shape *s, int w, int wo)
{
    int a = s->pad - kx; /* ox*stride >= a */
    int l = a > 0 ? (a + s->stride - 1) / s->stride : 0;
    int b = w - 1 + s->pad - kx; /* ox*stride <= b */
    int h = b >= 0 ? b / s->stride : -1;
    if (h > wo - 1) h = wo - 1;
    *lo = l, *hi = h;
}

/* im2col of a stride-1 'same' conv (ho = h, wo = w): for a tap (ky, kx) the
 * column row of an image is the input plane shifted by (ky-p)*w + (kx-p)
 * elements, so one memcpy moves all valid rows at once; the few entries that
 * wrapped around a row edge or fell into the padding are zeroed after. */
static void im2col_same(float *dst, const float *src, int ky, int kx, const kt_conv_shape *s)
{
    const int p = s->pad, h = s->h, w = s->w;
    const ptrdiff_t plane = (ptrdiff_t)h * w, shift = (ptrdiff_t)(ky - p) * w + (kx - p);
    int y0 = p - ky > 0 ? p - ky : 0, y1 = h - 1 + p - ky < h - 1 ? h - 1 + p - ky : h - 1;
    if (y1 < y0) {
        memset(dst, 0, sizeof(float) * plane);
        return;
    }
    memset(dst, 0, sizeof(float) * y0 * w);
    memset(dst + (ptrdiff_t)(y1 + 1) * w, 0, sizeof(float) * (h - 1 - y1) * w);
    ptrdiff_t a = (ptrdiff_t)y0 * w, b = (ptrdiff_t)(y1 + 1) * w;
    if (a + shift < 0) a = -shift;
    if (b + shift > plane) b = plane - shift;
    if (b > a) memcpy(dst + a, src + a + shift, sizeof(float) * (b - a));
    int lo = p - kx > 0 ? p - kx : 0, hi = w - 1 + p - kx < w - 1 ? w - 1 + p - kx : w - 1;
    if (lo == 0 && hi == w - 1) return;
    for (int y = y0; y <= y1; y++) {
        float *r = dst + (ptrdiff_t)y * w;
        for (int x = 0; x < lo; x++) r[x] = 0.0f;
        for (int x = hi + 1; x < w; x++) r[x] = 0.0f;
    }
}

/* The conv's own loops (im2col, col2im, epilogue) go over input or output
 * channels, which are independent: a caller with a thread pool (kt_conv_shape
 * par) gets them split by channel ranges. */
typedef struct {
    float *x;               /* col (im2col), din (col2im), out (epilogue) */
    const float *y;         /* in (im2col), col (col2im), bias (epilogue) */
    const kt_conv_shape *s;
    int n0, nc, relu;
    size_t ld, off, len;    /* epilogue */
} conv_job;

static void run_range(const kt_conv_shape *s, void (*fn)(const void *, int64_t, int64_t),
                      const void *j, int64_t count)
{
    if (s->par)
        s->par(s->par_ctx, fn, j, count);
    else
        fn(j, 0, count);
}

/* C = op(A) op(B) + beta C (row-major), split over the conv's thread pool
 * (kt_conv_shape.par) in blocks of 16 columns of C, or of rows when C has
 * more rows than columns; every part is a single-threaded OpenBLAS call on
 * its own thread. OpenBLAS's own threads stay off (blas.c): after each
 * threaded call its idle workers spin in sched_yield for a while, and in
 * training they took a fifth of the CPU from the BN and ReLU loops that run
 * between GEMMs. The split depends only on the shape and the thread count,
 * so a run is reproducible for a given thread count; other counts may round
 * differently, since OpenBLAS picks its kernel by the size of each call. */
typedef struct {
    enum CBLAS_TRANSPOSE ta, tb;
    int m, n, k, lda, ldb, ldc, rows;
    const float *a, *b;
    float beta, *c;
    int nb;                 /* blocks of 16 per GEMM */
    size_t sa, sb, sc;      /* a batch of GEMMs: strides between their a, b, c */
} gemm_job;

/* Blocks [lo, hi) of the batch, one OpenBLAS call per GEMM they touch. */
static void gemm_range(const void *arg, int64_t lo, int64_t hi)
{
    const gemm_job *g = arg;
    const int tr = g->ta == CblasTrans, tc = g->tb == CblasTrans;
    for (int64_t q = lo / g->nb; q * g->nb < hi; q++) {
        const float *a = g->a + q * g->sa, *b = g->b + q * g->sb;
        float *c = g->c + q * g->sc;
        int i0 = (int)((lo > q * g->nb ? lo - q * g->nb : 0) * 16);
        int i1 = (int)((hi < (q + 1) * g->nb ? hi - q * g->nb : g->nb) * 16);
        if (g->rows) {
            if (i1 > g->m) i1 = g->m;
            cblas_sgemm(CblasRowMajor, g->ta, g->tb, i1 - i0, g->n, g->k, 1.0f,
                        a + (tr ? (size_t)i0 : (size_t)i0 * g->lda), g->lda, b, g->ldb, g->beta,
                        c + (size_t)i0 * g->ldc, g->ldc);
        } else {
            if (i1 > g->n) i1 = g->n;
            cblas_sgemm(CblasRowMajor, g->ta, g->tb, g->m, i1 - i0, g->k, 1.0f, a, g->lda,
                        b + (tc ? (size_t)i0 * g->ldb : (size_t)i0), g->ldb, g->beta, c + i0,
                        g->ldc);
        }
    }
}

/* nbat GEMMs of the same shape, the q-th on a + q*sa, b + q*sb, c + q*sc,
 * in one pass over the pool (Winograd's 16 per chunk). */
static void gemm_batch(const kt_conv_shape *s, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb,
                       int m, int n, int k, const float *a, int lda, size_t sa, const float *b,
                       int ldb, size_t sb, float beta, float *c, int ldc, size_t sc, int nbat)
{
    gemm_job g = {ta, tb, m, n, k, lda, ldb, ldc, m > n, a, b, beta, c, 0, sa, sb, sc};
    g.nb = ((g.rows ? m : n) + 15) / 16;
    run_range(s, gemm_range, &g, (int64_t)g.nb * nbat);
}

static void gemm(const kt_conv_shape *s, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m,
                 int n, int k, const float *a, int lda, const float *b, int ldb, float beta,
                 float *c, int ldc)
{
    gemm_batch(s, ta, tb, m, n, k, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
}

/* col[(ci*k+ky)*k+kx][img*Ho*Wo + oy*Wo + ox] = in[ci][n0+img][iy][ix] for the
 * images [n0, n0+nc) and input channels [c0, c1), zero where the tap falls
 * into the padding. */
static void im2col_range(const void *arg, int64_t c0, int64_t c1)
{
    const conv_job *j = arg;
    const kt_conv_shape *s = j->s;
    float *col = j->x;
    const float *in = j->y;
    const int n0 = j->n0, nc = j->nc;
    const int k = s->k, st = s->stride, h = s->h, w = s->w, ho = s->ho, wo = s->wo;
    const size_t plane = (size_t)h * w, oplane = (size_t)ho * wo, ld = oplane * nc;
    if (st == 1 && ho == h && wo == w) {
        for (int ci = (int)c0; ci < c1; ci++)
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++)
                    for (int img = 0; img < nc; img++)
                        im2col_same(col + ((size_t)(ci * k + ky) * k + kx) * ld + img * oplane,
                                    in + ((size_t)ci * s->n + n0 + img) * plane, ky, kx, s);
        return;
    }
    for (int ci = (int)c0; ci < c1; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = col + ((size_t)(ci * k + ky) * k + kx) * ld;
                int lo, hi;
                valid_range(&lo, &hi, kx, s, w, wo);
                for (int img = 0; img < nc; img++) {
                    const float *src = in + ((size_t)ci * s->n + n0 + img) * plane;
                    float *dst = row + img * oplane;
                    for (int oy = 0; oy < ho; oy++, dst += wo) {
                        int iy = oy * st - s->pad + ky;
                        if (iy < 0 || iy >= h || hi < lo) {
                            memset(dst, 0, sizeof(float) * wo);
                            continue;
                        }
                        const float *srow = src + (size_t)iy * w - s->pad + kx;
                        if (lo > 0) memset(dst, 0, sizeof(float) * lo);
                        if (st == 1) {
                            memcpy(dst + lo, srow + lo, sizeof(float) * (hi - lo + 1));
                        } else if (st == 2) {
                            vk_gather2(dst + lo, srow + 2 * lo, (size_t)(hi - lo + 1));
                        } else {
                            for (int ox = lo; ox <= hi; ox++) dst[ox] = srow[ox * st];
                        }
                        if (hi < wo - 1) memset(dst + hi + 1, 0, sizeof(float) * (wo - 1 - hi));
                    }
                }
            }
}

static void im2col(float *col, const float *in, const kt_conv_shape *s, int n0, int nc)
{
    conv_job j = {.x = col, .y = in, .s = s, .n0 = n0, .nc = nc};
    run_range(s, im2col_range, &j, s->cin);
}

/* The adjoint of im2col: every column entry is added back to the input pixel
 * it was copied from (taps in the padding are dropped). Input channels
 * [c0, c1). */
static void col2im_range(const void *arg, int64_t c0, int64_t c1)
{
    const conv_job *j = arg;
    const kt_conv_shape *s = j->s;
    float *din = j->x;
    const float *col = j->y;
    const int n0 = j->n0, nc = j->nc;
    const int k = s->k, st = s->stride, h = s->h, w = s->w, ho = s->ho, wo = s->wo;
    const size_t plane = (size_t)h * w, oplane = (size_t)ho * wo, ld = oplane * nc;
    for (int ci = (int)c0; ci < c1; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *row = col + ((size_t)(ci * k + ky) * k + kx) * ld;
                int lo, hi;
                valid_range(&lo, &hi, kx, s, w, wo);
                for (int img = 0; img < nc; img++) {
                    float *dst = din + ((size_t)ci * s->n + n0 + img) * plane;
                    const float *src = row + img * oplane;
                    for (int oy = 0; oy < ho; oy++, src += wo) {
                        int iy = oy * st - s->pad + ky;
                        if (iy < 0 || iy >= h) continue;
                        float *drow = dst + (size_t)iy * w - s->pad + kx;
                        if (st == 1 && hi >= lo)
                            vk_add(drow + lo, src + lo, (size_t)(hi - lo + 1), 0);
                        else
                            for (int ox = lo; ox <= hi; ox++) drow[ox * st] += src[ox];
                    }
                }
            }
}

static void col2im(float *din, const float *col, const kt_conv_shape *s, int n0, int nc)
{
    conv_job j = {.x = din, .y = col, .s = s, .n0 = n0, .nc = nc};
    run_range(s, col2im_range, &j, s->cin);
}

/* Bias and ReLU over columns [off, off+len) of rows [c0, c1) of x[c][ld]. */
static void epilogue_range(const void *arg, int64_t c0, int64_t c1)
{
    const conv_job *j = arg;
    for (int64_t ch = c0; ch < c1; ch++)
        vk_bias_act(j->x + ch * j->ld + j->off, j->y ? j->y[ch] : 0.0f, j->len, j->relu);
}

static void epilogue(float *x, const float *bias, int relu, const kt_conv_shape *s, size_t ld,
                     size_t off, size_t len)
{
    conv_job j = {.x = x, .y = bias, .s = s, .relu = relu, .ld = ld, .off = off, .len = len};
    run_range(s, epilogue_range, &j, s->cout);
}

void kt_conv_forward_ex(float *out, float *work, const float *in, const float *w,
                        const float *bias, const kt_conv_shape *s, int flags)
{
    const int kk = s->cin * s->k * s->k;
    const size_t oplane = (size_t)s->ho * s->wo, P = oplane * s->n;
    const float beta = (flags & KT_CONV_ADD) ? 1.0f : 0.0f;
    const int relu = (flags & KT_CONV_RELU) != 0;
    if (conv_is_direct(s)) {
        gemm(s, CblasNoTrans, CblasNoTrans, s->cout, (int)P, kk, w, kk, in, (int)P, beta, out,
             (int)P);
        if (bias || relu) epilogue(out, bias, relu, s, P, 0, P);
        return;
    }
    const int nc = conv_chunk(s);
    for (int n0 = 0; n0 < s->n; n0 += nc) {
        int m = s->n - n0 < nc ? s->n - n0 : nc;
        size_t cols = oplane * m;
        im2col(work, in, s, n0, m);
        gemm(s, CblasNoTrans, CblasNoTrans, s->cout, (int)cols, kk, w, kk, work, (int)cols, beta,
             out + n0 * oplane, (int)P);
        if (bias || relu) epilogue(out, bias, relu, s, P, n0 * oplane, cols);
    }
}

void kt_conv_forward(float *out, float *work, const float *in, const float *w, const float *bias,
                     const kt_conv_shape *s)
{
    kt_conv_forward_ex(out, work, in, w, bias, s, 0);
}

/* ------------------------------------------------------------ winograd */

/* Winograd F(2x2, 3x3) (Lavin and Gray, 2016) for 3x3 stride-1 convs with
 * padding 1, the convs that carry half of ResNet-50's multiplies. Each
 * output tile of 2x2 pixels comes from a 4x4 input patch d:
 *     Y = A^T [ (G g G^T) .* (B^T d B) ] A
 * and the elementwise product, summed over input channels, is 16 GEMMs
 *     M[xi][cout][tiles] = U[xi][cout][cin] x V[xi][cin][tiles]
 * of 16 * cin * cout multiplies per tile of 4 pixels where im2col needs
 * 36 * cin * cout: 2.25x fewer. B, A and G hold only 0, +-1 and 1/2, so the
 * transforms add a few float roundings per value (measured against the
 * direct conv in t_ops); F(4x4, 3x3) would cut the multiplies to 1/4 but its
 * transforms amplify rounding by ~10x, too close to the oracle's tolerance.
 *
 * The tiles are processed in chunks of whole tile rows (all of an image's
 * tile rows in turn, then the next image's), sized so V and M stay near the
 * caches; a chunk's columns are laid out row after row with VL floats of
 * slack at the end, so the vector transforms may run past a row's last tile
 * (the next row overwrites those columns, the last row's land in the slack). */

#define KT_WINO_CAP ((size_t)1 << 20) /* floats of V + M per chunk */
#define KT_WINO_MIN 256               /* tile columns per chunk, at least */
#define KT_WINO_VL 16                 /* the widest vector of ops_vec.h */

int kt_conv_wino_ok(const kt_conv_shape *s)
{
    return s->k == 3 && s->stride == 1 && s->pad == 1;
}

typedef struct {
    int th, tw, twp;        /* tile rows, tiles per row, tw rounded up to KT_WINO_VL */
    int rows, rc;           /* tile rows in all, per chunk */
    size_t ld, pw;          /* column stride of V and M; padded input row */
} wino_geom;

static wino_geom wino_geometry(const kt_conv_shape *s)
{
    wino_geom g;
    g.th = (s->h + 1) / 2, g.tw = (s->w + 1) / 2;
    g.twp = (g.tw + KT_WINO_VL - 1) / KT_WINO_VL * KT_WINO_VL;
    g.rows = s->n * g.th;
    size_t cols = KT_WINO_CAP / (16 * (size_t)(s->cin + s->cout));
    if (cols < KT_WINO_MIN) cols = KT_WINO_MIN;
    int rc = (int)((cols + g.tw - 1) / g.tw);
    if (rc >= g.rows) {
        rc = g.rows;
    } else { /* equal chunks rather than a small last one */
        int nch = (g.rows + rc - 1) / rc;
        rc = (g.rows + nch - 1) / nch;
    }
    g.rc = rc;
    g.ld = (size_t)rc * g.tw + KT_WINO_VL;
    g.pw = 2 * (size_t)g.twp + 2;
    return g;
}

/* V, M, then padded rows: 4 per input channel (the input transform), or 3
 * per output channel (the weight gradient's: 2 rows of the output gradient
 * and a zero row). */
static size_t wino_workspace(const kt_conv_shape *s)
{
    wino_geom g = wino_geometry(s);
    size_t rows = 4 * (size_t)s->cin > 3 * (size_t)s->cout ? 4 * (size_t)s->cin
                                                           : 3 * (size_t)s->cout;
    return 16 * (size_t)(s->cin + s->cout) * g.ld + rows * g.pw;
}

typedef struct {
    float *u;
    const float *w;
    int cout, cin, flip;
} wino_w_job;

/* Kernels [lo, hi) of the cout*cin (run on the conv's pool: in training
 * the weights change every step and are transformed twice per step). */
static void wino_w_range(const void *arg, int64_t lo, int64_t hi)
{
    const wino_w_job *j = arg;
    float *u = j->u;
    const float *w = j->w;
    const int cin = j->cin, cout = j->cout, flip = j->flip;
    const size_t plane = (size_t)cout * cin;
    for (size_t oc = (size_t)lo; oc < (size_t)hi; oc++) {
        float g[9], t[4][3], r[4][4];
        for (int i = 0; i < 9; i++) g[i] = w[oc * 9 + (flip ? 8 - i : i)];
        /* flipped, the kernel of (o, c) belongs to output c, input o */
        const size_t dst = flip ? (oc % cin) * cout + oc / cin : oc;
        for (int c = 0; c < 3; c++) { /* G g: rows of the 4x3 */
            t[0][c] = g[c];
            t[1][c] = 0.5f * (g[c] + g[3 + c] + g[6 + c]);
            t[2][c] = 0.5f * (g[c] - g[3 + c] + g[6 + c]);
            t[3][c] = g[6 + c];
        }
        for (int i = 0; i < 4; i++) { /* (G g) G^T */
            r[i][0] = t[i][0];
            r[i][1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
            r[i][2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
            r[i][3] = t[i][2];
        }
        for (int xi = 0; xi < 16; xi++) u[xi * plane + dst] = r[xi / 4][xi % 4];
    }
}

void kt_conv_wino_weights(float *u, const float *w, const kt_conv_shape *s, int flip)
{
    wino_w_job j = {u, w, s->cout, s->cin, flip};
    run_range(s, wino_w_range, &j, (int64_t)s->cout * s->cin);
}

typedef struct {
    const kt_conv_shape *s;
    const wino_geom *g;
    float *V, *M, *pin, *out;
    const float *in, *bias;
    const float *dout;      /* weight gradient: the output gradient */
    int r0, nr, add, relu;
} wino_job;

/* V for input channels [c0, c1) over the chunk's tile rows. */
static void wino_in_range(const void *arg, int64_t c0, int64_t c1)
{
    const wino_job *j = arg;
    const kt_conv_shape *s = j->s;
    const wino_geom *g = j->g;
    const size_t ldx = (size_t)s->cin * g->ld;
    for (int64_t ci = c0; ci < c1; ci++) {
        /* Input row y (from -1) lives in padded row (y+1) % 4, so a tile row
         * that follows the one before it in the same image finds its top
         * two rows (that one's bottom two) in place and copies two. */
        float *pb = j->pin + (size_t)ci * 4 * g->pw;
        for (int r = 0; r < j->nr; r++) {
            int img = (j->r0 + r) / g->th, ty = (j->r0 + r) % g->th;
            const float *plane = j->in + ((size_t)ci * s->n + img) * s->h * s->w;
            const float *p[4];
            for (int k = 0; k < 4; k++) { /* input row 2ty-1+k, column x at [x+1] */
                int y = 2 * ty - 1 + k;
                float *q = pb + (size_t)((y + 1) % 4) * g->pw;
                p[k] = q;
                if (k < 2 && r > 0 && ty > 0) continue;
                if (y < 0 || y >= s->h) {
                    memset(q, 0, sizeof(float) * g->pw);
                    continue;
                }
                q[0] = 0.0f;
                memcpy(q + 1, plane + (size_t)y * s->w, sizeof(float) * s->w);
                memset(q + 1 + s->w, 0, sizeof(float) * (g->pw - 1 - s->w));
            }
            vk_wino_in(j->V + (size_t)ci * g->ld + (size_t)r * g->tw, ldx, p, (size_t)g->tw);
        }
    }
}

/* Output channels [c0, c1): the tiles back to pixels with bias, shortcut
 * and ReLU. */
static void wino_out_range(const void *arg, int64_t c0, int64_t c1)
{
    const wino_job *j = arg;
    const kt_conv_shape *s = j->s;
    const wino_geom *g = j->g;
    const size_t ldx = (size_t)s->cout * g->ld;
    for (int64_t co = c0; co < c1; co++) {
        float b = j->bias ? j->bias[co] : 0.0f;
        for (int r = 0; r < j->nr; r++) {
            int img = (j->r0 + r) / g->th, ty = (j->r0 + r) % g->th;
            float *o = j->out + (((size_t)co * s->n + img) * s->h + 2 * ty) * s->w;
            vk_wino_out(o, 2 * ty + 1 < s->h ? o + s->w : NULL,
                        j->M + (size_t)co * g->ld + (size_t)r * g->tw, ldx, b, (size_t)g->tw,
                        (size_t)s->w, j->add, j->relu);
        }
    }
}

void kt_conv_wino_forward(float *out, float *work, const float *in, const float *u,
                          const float *bias, const kt_conv_shape *s, int flags)
{
    assert(kt_conv_wino_ok(s));
    const wino_geom g = wino_geometry(s);
    float *V = work, *M = V + 16 * (size_t)s->cin * g.ld;
    float *pin = M + 16 * (size_t)s->cout * g.ld;
    wino_job j = {.s = s, .g = &g, .V = V, .M = M, .pin = pin, .out = out,
                  .in = in, .bias = bias, .add = (flags & KT_CONV_ADD) != 0,
                  .relu = (flags & KT_CONV_RELU) != 0};
    const size_t plane = (size_t)s->cout * s->cin;
    for (j.r0 = 0; j.r0 < g.rows; j.r0 += g.rc) {
        j.nr = g.rows - j.r0 < g.rc ? g.rows - j.r0 : g.rc;
        const int cols = j.nr * g.tw;
        run_range(s, wino_in_range, &j, s->cin);
        gemm_batch(s, CblasNoTrans, CblasNoTrans, s->cout, cols, s->cin, u, s->cin, plane, V,
                   (int)g.ld, (size_t)s->cin * g.ld, 0.0f, M, (int)g.ld, (size_t)s->cout * g.ld,
                   16);
        run_range(s, wino_out_range, &j, s->cout);
    }
}

/* The weight gradient in the Winograd domain. With V = B^T d B the input
 * tiles and g the output gradient's 2x2 tiles, Y = A^T (U .* V) A gives
 *     dU[xi][cout][cin] = sum over tiles of (A g A^T)[xi] V[xi]
 * 16 GEMMs of 16 * cin * cout multiplies per tile where im2col's dW takes
 * 36 * cin * cout, and dW += G^T dU G. The forward's chunks and input
 * transform are reused; M's space holds the transformed output gradient.
 * Tiles that overhang an odd-sized map read zeros for the missing outputs:
 * those outputs are dropped in the forward, so they have no gradient. */
static void wino_dout_range(const void *arg, int64_t c0, int64_t c1)
{
    const wino_job *j = arg;
    const kt_conv_shape *s = j->s;
    const wino_geom *g = j->g;
    /* rw: the row length vk_wino_dout reads */
    const size_t ldx = (size_t)s->cout * g->ld, rw = 2 * (size_t)g->twp;
    for (int64_t co = c0; co < c1; co++) {
        float *q0 = j->pin + (size_t)co * 3 * g->pw, *q1 = q0 + g->pw, *z = q1 + g->pw;
        memset(z, 0, sizeof(float) * rw);
        for (int r = 0; r < j->nr; r++) {
            int img = (j->r0 + r) / g->th, ty = (j->r0 + r) % g->th;
            const float *o = j->dout + (((size_t)co * s->n + img) * s->h + 2 * ty) * s->w;
            memcpy(q0, o, sizeof(float) * s->w);
            memset(q0 + s->w, 0, sizeof(float) * (rw - s->w));
            int two = 2 * ty + 1 < s->h;
            if (two) {
                memcpy(q1, o + s->w, sizeof(float) * s->w);
                memset(q1 + s->w, 0, sizeof(float) * (rw - s->w));
            }
            vk_wino_dout(j->M + (size_t)co * g->ld + (size_t)r * g->tw, ldx, q0, two ? q1 : z,
                         (size_t)g->tw);
        }
    }
}

/* dW += G^T dU G for kernels [lo, hi) of the cout*cin. */
static void wino_dw_range(const void *arg, int64_t lo, int64_t hi)
{
    const wino_w_job *j = arg;
    const float *du = j->w;
    const size_t plane = (size_t)j->cout * j->cin;
    for (size_t oc = (size_t)lo; oc < (size_t)hi; oc++) {
        float t[3][4];
        for (int c = 0; c < 4; c++) {
            float u0 = du[c * plane + oc], u1 = du[(4 + c) * plane + oc];
            float u2 = du[(8 + c) * plane + oc], u3 = du[(12 + c) * plane + oc];
            t[0][c] = u0 + 0.5f * (u1 + u2);
            t[1][c] = 0.5f * (u1 - u2);
            t[2][c] = 0.5f * (u1 + u2) + u3;
        }
        float *d = j->u + oc * 9;
        for (int a = 0; a < 3; a++) {
            d[3 * a] += t[a][0] + 0.5f * (t[a][1] + t[a][2]);
            d[3 * a + 1] += 0.5f * (t[a][1] - t[a][2]);
            d[3 * a + 2] += 0.5f * (t[a][1] + t[a][2]) + t[a][3];
        }
    }
}

/* dbias[c] += the sum of output channel c's gradient. */
static void bias_grad(float *dbias, const float *dout, const kt_conv_shape *s)
{
    const size_t P = (size_t)s->ho * s->wo * s->n;
    for (int c = 0; c < s->cout; c++) dbias[c] += (float)vk_sum(dout + c * P, P, 0.0f, NULL);
}

void kt_conv_wino_weight_grad(float *dw, float *dbias, float *du, float *work, const float *dout,
                              const float *in, const kt_conv_shape *s)
{
    assert(kt_conv_wino_ok(s));
    const wino_geom g = wino_geometry(s);
    float *V = work, *M = V + 16 * (size_t)s->cin * g.ld;
    float *pin = M + 16 * (size_t)s->cout * g.ld;
    wino_job j = {.s = s, .g = &g, .V = V, .M = M, .pin = pin, .in = in, .dout = dout};
    const size_t plane = (size_t)s->cout * s->cin;
    if (dbias) bias_grad(dbias, dout, s);
    for (j.r0 = 0; j.r0 < g.rows; j.r0 += g.rc) {
        j.nr = g.rows - j.r0 < g.rc ? g.rows - j.r0 : g.rc;
        run_range(s, wino_in_range, &j, s->cin);
        run_range(s, wino_dout_range, &j, s->cout);
        gemm_batch(s, CblasNoTrans, CblasTrans, s->cout, s->cin, j.nr * g.tw, M, (int)g.ld,
                   (size_t)s->cout * g.ld, V, (int)g.ld, (size_t)s->cin * g.ld,
                   j.r0 ? 1.0f : 0.0f, du, s->cin, plane, 16);
    }
    wino_w_job b = {dw, du, s->cout, s->cin, 0}; /* u: dW, w: dU */
    run_range(s, wino_dw_range, &b, (int64_t)plane);
}

/* With col = im2col(in) and out = W col:
 *   dW += dout col^T      (each weight sums over every output pixel it touched)
 *   dcol = W^T dout, din += col2im(dcol)
 * col is rebuilt from in chunk by chunk (not kept from the forward) and the
 * same workspace then receives dcol, so backward needs no extra memory. */
void kt_conv_backward(float *din, float *dw, float *dbias, float *work, const float *dout,
                      const float *in, const float *w, const kt_conv_shape *s)
{
    const int kk = s->cin * s->k * s->k;
    const size_t oplane = (size_t)s->ho * s->wo, P = oplane * s->n;
    if (dbias) bias_grad(dbias, dout, s);
    if (conv_is_direct(s)) {
        if (dw)
            gemm(s, CblasNoTrans, CblasTrans, s->cout, kk, (int)P, dout, (int)P, in, (int)P, 1.0f,
                 dw, kk);
        if (din)
            gemm(s, CblasTrans, CblasNoTrans, kk, (int)P, s->cout, w, kk, dout, (int)P, 1.0f, din,
                 (int)P);
        return;
    }
    const int nc = conv_chunk(s);
    for (int n0 = 0; n0 < s->n; n0 += nc) {
        int m = s->n - n0 < nc ? s->n - n0 : nc;
        size_t cols = oplane * m;
        const float *dchunk = dout + n0 * oplane;
        if (dw) {
            im2col(work, in, s, n0, m);
            gemm(s, CblasNoTrans, CblasTrans, s->cout, kk, (int)cols, dchunk, (int)P, work,
                 (int)cols, 1.0f, dw, kk);
        }
        if (din) {
            gemm(s, CblasTrans, CblasNoTrans, kk, (int)cols, s->cout, w, kk, dchunk, (int)P, 0.0f,
                 work, (int)cols);
            col2im(din, work, s, n0, m);
        }
    }
}

/* ---------------------------------------------------------- batch norm */

/* Two passes: the mean, then squared deviations from it (the one-pass
 * E[x^2]-E[x]^2 form cancels badly when |mean| >> std, which happens after
 * ReLU). The deviations are taken from the float mean mf and corrected by
 * their own sum d1: var = (sum (x-mf)^2 - d1^2/m) / m is exact algebra. */
void kt_bn_train_forward(float *out, float *save_mean, float *save_rstd, float *running_mean,
                         float *running_var, const float *in, const float *gamma,
                         const float *beta, int c, int64_t m, float eps, float momentum, int relu)
{
    for (int ch = 0; ch < c; ch++) {
        const float *x = in + ch * m;
        float mf = (float)(vk_sum(x, (size_t)m, 0.0f, NULL) / (double)m);
        double sq, d1 = vk_sum(x, (size_t)m, mf, &sq);
        double mean = mf + d1 / (double)m;
        sq -= d1 * d1 / (double)m;
        double var = sq / (double)m; /* biased: what the batch is normalised with */
        double rstd = 1.0 / sqrt(var + eps);
        float a = (float)(rstd * gamma[ch]);
        float b = (float)(beta[ch] - mean * rstd * gamma[ch]);
        vk_axpb(out + ch * m, x, a, b, (size_t)m, relu);
        save_mean[ch] = (float)mean;
        save_rstd[ch] = (float)rstd;
        /* The running variance is the unbiased estimate, as torchvision. */
        double unbiased = m > 1 ? sq / (double)(m - 1) : var;
        running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean);
        running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
    }
}

/* With xh = (x - mean) * rstd and y = gamma*xh + beta, the batch statistics
 * depend on every x, which gives
 *   din = gamma*rstd/m * (m*dout - sum(dout) - xh*sum(dout*xh)).
 * The two sums are also dbeta and dgamma. A ReLU's mask and the choice
 * between accumulating and writing din ride along in the same two passes:
 * a separate masking pass and zeroing pass each cost a trip through memory
 * as long as the BN's own. */
void kt_bn_train_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                          const float *relu_out, const float *in, const float *save_mean,
                          const float *save_rstd, const float *gamma, int c, int64_t m, int acc)
{
    for (int ch = 0; ch < c; ch++) {
        const float *x = in + ch * m, *dy = dout + ch * m;
        const float *mk = relu_out ? relu_out + ch * m : NULL;
        double mean = save_mean[ch], rstd = save_rstd[ch], sdy, sdyx;
        vk_dot(dy, mk, x, save_mean[ch], (size_t)m, &sdy, &sdyx);
        sdyx *= rstd;
        if (dbeta) dbeta[ch] += (float)sdy;
        if (dgamma) dgamma[ch] += (float)sdyx;
        if (!din) continue;
        /* din = k*dout + a*x + b: one fused multiply-add pass. */
        double k = gamma[ch] * rstd;
        double mdy = sdy / (double)m, mdyx = sdyx / (double)m;
        vk_bn_dx(din + ch * m, dy, mk, x, (float)k, (float)(-k * mdyx * rstd),
                 (float)(-k * mdy + k * mdyx * rstd * mean), (size_t)m, acc);
    }
}

void kt_bn_fold_params(float *scale, float *shift, const float *gamma, const float *beta,
                       const float *mean, const float *var, int c, float eps)
{
    for (int ch = 0; ch < c; ch++) {
        double sc = gamma[ch] / sqrt((double)var[ch] + eps);
        scale[ch] = (float)sc;
        shift[ch] = (float)(beta[ch] - mean[ch] * sc);
    }
}

void kt_bn_eval_forward(float *out, const float *in, const float *scale, const float *shift,
                        int c, int64_t m, int relu)
{
    for (int ch = 0; ch < c; ch++)
        vk_axpb(out + ch * m, in + ch * m, scale[ch], shift[ch], (size_t)m, relu);
}

/* Eval mode normalises with constants, so the input gradient is a per-channel
 * scale; only gamma/beta see the data. */
void kt_bn_eval_backward(float *din, float *dgamma, float *dbeta, const float *dout,
                         const float *in, const float *mean, const float *var,
                         const float *gamma, int c, int64_t m, float eps)
{
    for (int ch = 0; ch < c; ch++) {
        const float *x = in + ch * m, *dy = dout + ch * m;
        double rstd = 1.0 / sqrt((double)var[ch] + eps);
        if (dgamma || dbeta) {
            double sdy, sdyx;
            vk_dot(dy, NULL, x, mean[ch], (size_t)m, &sdy, &sdyx);
            if (dbeta) dbeta[ch] += (float)sdy;
            if (dgamma) dgamma[ch] += (float)(sdyx * rstd);
        }
        if (din)
            vk_bn_dx(din + ch * m, dy, NULL, x, (float)(gamma[ch] * rstd), 0.0f, 0.0f, (size_t)m,
                     1);
    }
}

/* ---------------------------------------------------------- activations */

void kt_relu_forward(float *out, const float *in, int64_t n) { vk_relu(out, in, (size_t)n); }

/* The mask is taken from the output: out > 0 exactly where in > 0. */
void kt_relu_backward(float *din, const float *dout, const float *out, int64_t n)
{
    vk_relu_grad(din, dout, out, (size_t)n, 1);
}

void kt_relu_grad(float *din, const float *dout, const float *out, int64_t n)
{
    vk_relu_grad(din, dout, out, (size_t)n, 0);
}

/* gelu(x) = x * Phi(x), Phi the standard normal CDF (torch's default, not the
 * tanh approximation); d/dx = Phi(x) + x * phi(x). */
void kt_gelu_forward(float *out, const float *in, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double x = in[i];
        out[i] = (float)(0.5 * x * (1.0 + erf(x * M_SQRT1_2)));
    }
}

void kt_gelu_backward(float *din, const float *dout, const float *in, int64_t n)
{
    const double inv_sqrt_2pi = 0.3989422804014327;
    for (int64_t i = 0; i < n; i++) {
        double x = in[i];
        double cdf = 0.5 * (1.0 + erf(x * M_SQRT1_2));
        double pdf = inv_sqrt_2pi * exp(-0.5 * x * x);
        din[i] += (float)(dout[i] * (cdf + x * pdf));
    }
}

/* ---------------------------------------------------------------- pools */

/* The stem's 3x3 / 2 pool with padding 1, without argmax (inference): the
 * vertical max of the three input rows is taken 16 lanes at a time, then
 * the horizontal max of three neighbours of that row. Same values as the
 * general loop. */
static void maxpool_3x3s2(float *out, const float *in, size_t planes, int h, int w, int ho,
                          int wo, float *t)
{
    for (size_t p = 0; p < planes; p++) {
        const float *src = in + p * h * w;
        float *dst = out + p * ho * wo;
        for (int oy = 0; oy < ho; oy++) {
            int y = 2 * oy;
            const float *r0 = src + (size_t)y * w;
            vk_vmax3(t, r0, y > 0 ? r0 - w : NULL, y + 1 < h ? r0 + w : NULL, (size_t)w);
            for (int ox = 0; ox < wo; ox++) {
                int x = 2 * ox;
                float m = t[x];
                if (x > 0) m = nmax(t[x - 1], m);
                if (x + 1 < w) m = nmax(t[x + 1], m);
                dst[oy * wo + ox] = m;
            }
        }
    }
}

/* The 3x3 stride-2 pad-1 pool with its argmax (a trainable stem), a row of
 * outputs at a time in vectors; rows padded with -inf in t (3 rows of tw). */
static void maxpool_3x3s2_arg(float *out, int32_t *argmax, const float *in, size_t planes,
                              int h, int w, int ho, int wo, float *t, size_t tw)
{
    for (size_t p = 0; p < planes; p++) {
        const float *src = in + p * h * w;
        for (int oy = 0; oy < ho; oy++) {
            const float *q[3];
            int32_t ry[3];
            for (int k = 0; k < 3; k++) {
                int y = 2 * oy - 1 + k;
                float *r = t + k * tw;
                size_t x = 0;
                if (y >= 0 && y < h) {
                    r[0] = -INFINITY;
                    memcpy(r + 1, src + (size_t)y * w, sizeof(float) * w);
                    x = (size_t)w + 1;
                }
                for (; x < tw; x++) r[x] = -INFINITY;
                q[k] = r, ry[k] = y * w;
            }
            int32_t first = (2 * oy - 1 > 0 ? 2 * oy - 1 : 0) * w;
            vk_maxpool_arg(out + (p * ho + oy) * wo, argmax + (p * ho + oy) * wo, q, ry, first,
                           (size_t)wo);
        }
    }
}

/* Taps in the padding are skipped (never win), as torch's max pool does. A
 * strictly greater value replaces the max, so ties keep the first tap, and a
 * NaN wins and sticks, which is torch's rule too. */
void kt_maxpool_forward(float *out, int32_t *argmax, const float *in, int c, int n, int h, int w,
                        int k, int stride, int pad, int ho, int wo)
{
    float row[3 * 1056];
    if (k == 3 && stride == 2 && pad == 1 && w <= 1024) {
        if (argmax) /* rows of 2*ceil(wo/16)*16 + 2 floats, what vk_maxpool_arg reads */
            maxpool_3x3s2_arg(out, argmax, in, (size_t)c * n, h, w, ho, wo, row,
                              2 * (size_t)((wo + 15) / 16) * 16 + 2);
        else
            maxpool_3x3s2(out, in, (size_t)c * n, h, w, ho, wo, row);
        return;
    }
    const size_t planes = (size_t)c * n;
    for (size_t p = 0; p < planes; p++) {
        const float *src = in + p * h * w;
        float *dst = out + p * ho * wo;
        int32_t *am = argmax ? argmax + p * ho * wo : NULL;
        for (int oy = 0; oy < ho; oy++) {
            int y0 = oy * stride - pad, y1 = y0 + k;
            if (y0 < 0) y0 = 0;
            if (y1 > h) y1 = h;
            for (int ox = 0; ox < wo; ox++) {
                int x0 = ox * stride - pad, x1 = x0 + k;
                if (x0 < 0) x0 = 0;
                if (x1 > w) x1 = w;
                float best = -INFINITY;
                int32_t bi = y0 * w + x0;
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) {
                        float v = src[y * w + x];
                        if (v > best || isnan(v)) {
                            best = v;
                            bi = y * w + x;
                            if (isnan(v)) goto done;
                        }
                    }
            done:
                dst[oy * wo + ox] = best;
                if (am) am[oy * wo + ox] = bi;
            }
        }
    }
}

void kt_maxpool_backward(float *din, const float *dout, const int32_t *argmax, int c, int n,
                         int h, int w, int ho, int wo)
{
    const size_t planes = (size_t)c * n;
    for (size_t p = 0; p < planes; p++) {
        float *dst = din + p * h * w;
        const float *src = dout + p * ho * wo;
        const int32_t *am = argmax + p * ho * wo;
        for (int i = 0; i < ho * wo; i++) dst[am[i]] += src[i];
    }
}

void kt_avgpool_forward(float *out, const float *in, int c, int n, int hw)
{
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < n; i++) {
            const float *x = in + ((size_t)ch * n + i) * hw;
            double s = 0;
            for (int j = 0; j < hw; j++) s += x[j];
            out[(size_t)i * c + ch] = (float)(s / hw);
        }
}

void kt_avgpool_backward(float *din, const float *dout, int c, int n, int hw)
{
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < n; i++) {
            float g = dout[(size_t)i * c + ch] / (float)hw;
            float *x = din + ((size_t)ch * n + i) * hw;
            for (int j = 0; j < hw; j++) x[j] += g;
        }
}

/* ---------------------------------------------------------------- linear */

void kt_linear_forward(float *out, const float *in, const float *w, const float *b, int n, int i,
                       int o)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, o, i, 1.0f, in, i, w, i, 0.0f, out,
                o);
    if (b)
        for (int r = 0; r < n; r++)
            for (int j = 0; j < o; j++) out[(size_t)r * o + j] += b[j];
}

/* out = in W^T + b  =>  din += dout W,  dW += dout^T in,  db += column sums. */
void kt_linear_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                        const float *w, int n, int i, int o)
{
    if (din)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, i, o, 1.0f, dout, o, w, i, 1.0f,
                    din, i);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o, i, n, 1.0f, dout, o, in, i, 1.0f,
                    dw, i);
    if (db)
        for (int j = 0; j < o; j++) {
            double s = 0;
            for (int r = 0; r < n; r++) s += dout[(size_t)r * o + j];
            db[j] += (float)s;
        }
}

/* ------------------------------------------------------- dropout, softmax */

/* Kept values are scaled by 1/(1-p) so the expected activation is unchanged
 * and evaluation needs no rescaling (torch's inverted dropout). p = 1 drops
 * everything instead of dividing by zero. */
void kt_dropout_forward(float *out, const float *in, const uint8_t *mask, float p, int64_t n)
{
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    for (int64_t i = 0; i < n; i++) out[i] = mask[i] ? in[i] * scale : 0.0f;
}

void kt_dropout_backward(float *din, const float *dout, const uint8_t *mask, float p, int64_t n)
{
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    for (int64_t i = 0; i < n; i++)
        if (mask[i]) din[i] += dout[i] * scale;
}

/* Subtracting the row max keeps exp() from overflowing; the result is the
 * same softmax. */
void kt_softmax(float *probs, const float *logits, int n, int k)
{
    for (int r = 0; r < n; r++) {
        const float *z = logits + (size_t)r * k;
        float *p = probs + (size_t)r * k;
        float mx = z[0];
        for (int j = 1; j < k; j++) mx = z[j] > mx ? z[j] : mx;
        double s = 0;
        for (int j = 0; j < k; j++) s += exp((double)z[j] - mx);
        for (int j = 0; j < k; j++) p[j] = (float)(exp((double)z[j] - mx) / s);
    }
}

/* torch's CrossEntropyLoss(weight=w, label_smoothing=e, reduction="mean"),
 * with lp = log_softmax(z), W = sum_i w[y_i] (n without weights):
 *   loss = (1-e)/W * sum_i w[y_i] * -lp_i[y_i]  +  e/(C*W) * sum_i sum_c w_c * -lp_i[c]
 * Both terms share W as torch normalises its smoothing term by the target
 * weights too. Since d(-lp_i[c])/dz_i = p_i - onehot(c):
 *   dz_i = ((1-e) w[y_i] (p_i - onehot(y_i)) + e/C (sum_c w_c * p_i - w)) / W. */
double kt_softmax_ce(float *dlogits, const float *logits, const int *labels,
                     const float *class_weights, float label_smoothing, int n, int k)
{
    const double e = label_smoothing;
    double wsum = 0, sw = 0, nll = 0, smooth = 0;
    for (int c = 0; c < k; c++) sw += class_weights ? class_weights[c] : 1.0;
    for (int r = 0; r < n; r++) wsum += class_weights ? class_weights[labels[r]] : 1.0;
    for (int r = 0; r < n; r++) {
        const float *z = logits + (size_t)r * k;
        double mx = z[0];
        for (int j = 1; j < k; j++) mx = z[j] > mx ? z[j] : mx;
        double s = 0;
        for (int j = 0; j < k; j++) s += exp(z[j] - mx);
        double lse = mx + log(s);
        int y = labels[r];
        double wy = class_weights ? class_weights[y] : 1.0;
        nll += wy * (lse - z[y]);
        for (int j = 0; j < k; j++) smooth += (class_weights ? class_weights[j] : 1.0) * (lse - z[j]);
        if (dlogits) {
            float *d = dlogits + (size_t)r * k;
            for (int j = 0; j < k; j++) {
                double p = exp(z[j] - lse);
                double wj = class_weights ? class_weights[j] : 1.0;
                double g = (1.0 - e) * wy * (p - (j == y)) + e / k * (sw * p - wj);
                d[j] = (float)(g / wsum);
            }
        }
    }
    return ((1.0 - e) * nll + e / k * smooth) / wsum;
}

void kt_add_inplace(float *y, const float *x, int64_t n) { vk_add(y, x, (size_t)n, 0); }

void kt_add_relu(float *y, const float *x, int64_t n) { vk_add(y, x, (size_t)n, 1); }
