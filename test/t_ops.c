/* t_ops.c - every op in ops.c against an independent reference:
 *  - convolution against a naive direct loop in double, on odd shapes
 *    (stride 2, 1x1, batch 1, padding 0, 7x7/2 pad 3, non-square, chunked
 *    im2col), forward and backward, including the fused epilogues;
 *  - every backward against central finite differences in double of the
 *    float32 forward, on tiny shapes: L = sum(r * out) for a random r, so
 *    dL/dout = r, and the relative error ||num - ana|| / max(||num||, ||ana||)
 *    must stay under a threshold set far above float32 noise (~1e-5 here)
 *    and far below what a wrong term gives (>= 1e-2);
 *  - accumulation: gradients are pre-filled and must be added to.
 * kt_blas_init runs first so the GEMMs use the kernels kt would use.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "ops.h"
#include "test.h"

static uint64_t g_seed = 12345;

/* Uniform in [-1, 1) from a 64-bit LCG: reproducible across platforms. */
static float rnd(void)
{
    g_seed = g_seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(g_seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *rand_buf(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = rnd();
    return p;
}

static float *zero_buf(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(float)); }

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

typedef double (*loss_fn)(void *ctx);

/* Relative error between the analytic gradient g and central differences of
 * f with respect to x[0..n). The step actually taken is measured in double
 * because x +- h rounds in float32. */
static double fd_relerr(loss_fn f, void *ctx, float *x, const float *g, int64_t n, float h)
{
    double d2 = 0, n2 = 0, a2 = 0;
    for (int64_t i = 0; i < n; i++) {
        float save = x[i];
        float xp = save + h, xm = save - h;
        x[i] = xp;
        double lp = f(ctx);
        x[i] = xm;
        double lm = f(ctx);
        x[i] = save;
        double num = (lp - lm) / ((double)xp - (double)xm);
        d2 += (num - g[i]) * (num - g[i]);
        n2 += num * num;
        a2 += (double)g[i] * g[i];
    }
    double den = sqrt(n2 > a2 ? n2 : a2);
    return den > 0 ? sqrt(d2) / den : sqrt(d2);
}

/* Analytic gradient minus what was pre-filled (checks += semantics). */
static void unfill(float *g, int64_t n, float fill)
{
    for (int64_t i = 0; i < n; i++) g[i] -= fill;
}

static void fill(float *g, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++) g[i] = v;
}

static double max_rel_diff(const float *a, const double *ref, int64_t n)
{
    double mx = 0, mr = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - ref[i]);
        if (d > mx) mx = d;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    return mr > 0 ? mx / mr : mx;
}

/* ------------------------------------------------------------ conv */

/* Direct convolution in double, [C][N][H][W] layout. */
static void naive_conv(double *out, const float *in, const float *w, const float *b,
                       const kt_conv_shape *s)
{
    for (int co = 0; co < s->cout; co++)
        for (int n = 0; n < s->n; n++)
            for (int oy = 0; oy < s->ho; oy++)
                for (int ox = 0; ox < s->wo; ox++) {
                    double acc = b ? b[co] : 0.0;
                    for (int ci = 0; ci < s->cin; ci++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                int iy = oy * s->stride - s->pad + ky;
                                int ix = ox * s->stride - s->pad + kx;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                                acc += (double)in[((size_t)(ci * s->n + n) * s->h + iy) * s->w + ix] *
                                       w[((size_t)(co * s->cin + ci) * s->k + ky) * s->k + kx];
                            }
                    out[((size_t)(co * s->n + n) * s->ho + oy) * s->wo + ox] = acc;
                }
}

/* Direct backward in double: dw[co][ci][ky][kx] = sum dout*in, din = sum dout*w. */
static void naive_conv_backward(double *din, double *dw, const float *dout, const float *in,
                                const float *w, const kt_conv_shape *s)
{
    size_t nin = (size_t)s->cin * s->n * s->h * s->w, nw = (size_t)s->cout * s->cin * s->k * s->k;
    memset(din, 0, sizeof(double) * nin);
    memset(dw, 0, sizeof(double) * nw);
    for (int co = 0; co < s->cout; co++)
        for (int n = 0; n < s->n; n++)
            for (int oy = 0; oy < s->ho; oy++)
                for (int ox = 0; ox < s->wo; ox++) {
                    double g = dout[((size_t)(co * s->n + n) * s->ho + oy) * s->wo + ox];
                    for (int ci = 0; ci < s->cin; ci++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                int iy = oy * s->stride - s->pad + ky;
                                int ix = ox * s->stride - s->pad + kx;
                                if (iy < 0 || iy >= s->h || ix < 0 || ix >= s->w) continue;
                                size_t ii = ((size_t)(ci * s->n + n) * s->h + iy) * s->w + ix;
                                size_t wi = ((size_t)(co * s->cin + ci) * s->k + ky) * s->k + kx;
                                din[ii] += g * w[wi];
                                dw[wi] += g * in[ii];
                            }
                }
}

typedef struct {
    int n, cin, h, w, cout, k, stride, pad;
    const char *what;
} conv_case;

/* Forward (plain, +bias, fused ADD|RELU) and backward against the naive
 * loops; used for odd shapes and for shapes big enough to chunk im2col. */
static void check_conv_vs_naive(const conv_case *c)
{
    kt_conv_shape s;
    kt_conv_shape_init(&s, c->n, c->cin, c->h, c->w, c->cout, c->k, c->stride, c->pad);
    int64_t nin = (int64_t)s.cin * s.n * s.h * s.w, nout = (int64_t)s.cout * s.n * s.ho * s.wo;
    int64_t nw = (int64_t)s.cout * s.cin * s.k * s.k;
    float *in = rand_buf(nin), *w = rand_buf(nw), *b = rand_buf(s.cout);
    float *out = zero_buf(nout), *work = zero_buf((int64_t)kt_conv_workspace(&s));
    double *ref = malloc(sizeof(double) * nout), *ref2 = malloc(sizeof(double) * nout);

    naive_conv(ref, in, w, NULL, &s);
    kt_conv_forward(out, work, in, w, NULL, &s);
    double e = max_rel_diff(out, ref, nout);
    CHECK(e < 1e-5, "conv fwd %s (%dx%d k%d s%d p%d n%d): max err %.2e", c->what, c->h, c->w,
          c->k, c->stride, c->pad, c->n, e);

    naive_conv(ref, in, w, b, &s);
    kt_conv_forward(out, work, in, w, b, &s);
    e = max_rel_diff(out, ref, nout);
    CHECK(e < 1e-5, "conv fwd+bias %s: max err %.2e", c->what, e);

    /* fused: out = relu(prev + conv + bias) */
    float *prev = rand_buf(nout);
    memcpy(out, prev, sizeof(float) * nout);
    for (int64_t i = 0; i < nout; i++) {
        double v = ref[i] + prev[i];
        ref2[i] = v > 0 ? v : 0;
    }
    kt_conv_forward_ex(out, work, in, w, b, &s, KT_CONV_ADD | KT_CONV_RELU);
    e = max_rel_diff(out, ref2, nout);
    CHECK(e < 1e-5, "conv fwd add+relu %s: max err %.2e", c->what, e);

    /* backward with accumulation into pre-filled gradients */
    float *dout = rand_buf(nout), *din = zero_buf(nin), *dw = zero_buf(nw),
          *db = zero_buf(s.cout);
    double *rdin = malloc(sizeof(double) * nin), *rdw = malloc(sizeof(double) * nw);
    fill(din, nin, 0.5f), fill(dw, nw, 0.5f), fill(db, s.cout, 0.5f);
    kt_conv_backward(din, dw, db, work, dout, in, w, &s);
    unfill(din, nin, 0.5f), unfill(dw, nw, 0.5f), unfill(db, s.cout, 0.5f);
    naive_conv_backward(rdin, rdw, dout, in, w, &s);
    double edin = max_rel_diff(din, rdin, nin), edw = max_rel_diff(dw, rdw, nw);
    double *rdb = malloc(sizeof(double) * s.cout);
    for (int co = 0; co < s.cout; co++) {
        rdb[co] = 0;
        for (int64_t i = 0; i < nout / s.cout; i++) rdb[co] += dout[co * (nout / s.cout) + i];
    }
    double edb = max_rel_diff(db, rdb, s.cout);
    CHECK(edin < 1e-4 && edw < 1e-4 && edb < 1e-5,
          "conv bwd %s: din %.2e dw %.2e db %.2e", c->what, edin, edw, edb);
    free(in), free(w), free(b), free(out), free(work), free(ref), free(ref2), free(prev);
    free(dout), free(din), free(dw), free(db), free(rdin), free(rdw), free(rdb);
}

typedef struct {
    kt_conv_shape s;
    float *in, *w, *b, *out, *work, *r;
} conv_ctx;

static double conv_loss(void *p)
{
    conv_ctx *c = p;
    kt_conv_forward(c->out, c->work, c->in, c->w, c->b, &c->s);
    return dot(c->out, c->r, (int64_t)c->s.cout * c->s.n * c->s.ho * c->s.wo);
}

/* The backward against finite differences of the forward, which catches a
 * backward and a naive reference that share a misunderstanding. */
static void check_conv_fd(const conv_case *c)
{
    conv_ctx x;
    kt_conv_shape_init(&x.s, c->n, c->cin, c->h, c->w, c->cout, c->k, c->stride, c->pad);
    int64_t nin = (int64_t)x.s.cin * x.s.n * x.s.h * x.s.w;
    int64_t nout = (int64_t)x.s.cout * x.s.n * x.s.ho * x.s.wo;
    int64_t nw = (int64_t)x.s.cout * x.s.cin * x.s.k * x.s.k;
    x.in = rand_buf(nin), x.w = rand_buf(nw), x.b = rand_buf(x.s.cout), x.r = rand_buf(nout);
    x.out = zero_buf(nout), x.work = zero_buf((int64_t)kt_conv_workspace(&x.s));
    float *din = zero_buf(nin), *dw = zero_buf(nw), *db = zero_buf(x.s.cout);
    kt_conv_backward(din, dw, db, x.work, x.r, x.in, x.w, &x.s);
    double ei = fd_relerr(conv_loss, &x, x.in, din, nin, 1e-2f);
    double ew = fd_relerr(conv_loss, &x, x.w, dw, nw, 1e-2f);
    double eb = fd_relerr(conv_loss, &x, x.b, db, x.s.cout, 1e-2f);
    CHECK(ei < 1e-3 && ew < 1e-3 && eb < 1e-3, "conv grad fd %s: din %.2e dw %.2e db %.2e",
          c->what, ei, ew, eb);
    /* NULL gradients are skipped, the others still computed */
    float *dw2 = zero_buf(nw);
    kt_conv_backward(NULL, dw2, NULL, x.work, x.r, x.in, x.w, &x.s);
    CHECK(memcmp(dw, dw2, sizeof(float) * nw) == 0, "conv bwd %s: dw alone equals dw with din",
          c->what);
    free(x.in), free(x.w), free(x.b), free(x.r), free(x.out), free(x.work);
    free(din), free(dw), free(db), free(dw2);
}

/* A stand-in thread pool: runs the parts of [0, count) one after the other
 * in three uneven pieces, last first, so a conv that depended on the order
 * or on the whole range in one call would show it. */
static int g_par_calls;

static void fake_par(void *ctx, void (*fn)(const void *, int64_t, int64_t), const void *arg,
                     int64_t count)
{
    (void)ctx;
    g_par_calls++;
    int64_t a = count / 5, b = count / 2;
    fn(arg, b, count);
    fn(arg, 0, a);
    fn(arg, a, b);
}

/* With kt_conv_shape.par set, forward (bias + ReLU + accumulate) and
 * backward give the serial results: the loops bit for bit, the GEMMs split
 * into parts within float rounding (OpenBLAS picks its kernel, and so its
 * summation order, by the size of each call). */
static void check_conv_par(const conv_case *c)
{
    kt_conv_shape s;
    kt_conv_shape_init(&s, c->n, c->cin, c->h, c->w, c->cout, c->k, c->stride, c->pad);
    int64_t nin = (int64_t)s.cin * s.n * s.h * s.w, nout = (int64_t)s.cout * s.n * s.ho * s.wo;
    int64_t nw = (int64_t)s.cout * s.cin * s.k * s.k;
    float *in = rand_buf(nin), *w = rand_buf(nw), *b = rand_buf(s.cout), *dout = rand_buf(nout);
    float *o[2], *di[2], *dw[2], *work = zero_buf((int64_t)kt_conv_workspace(&s));
    for (int v = 0; v < 2; v++) {
        s.par = v ? fake_par : NULL;
        o[v] = zero_buf(nout), di[v] = zero_buf(nin), dw[v] = zero_buf(nw);
        memcpy(o[v], dout, sizeof(float) * nout);
        kt_conv_forward_ex(o[v], work, in, w, b, &s, KT_CONV_ADD | KT_CONV_RELU);
        kt_conv_backward(di[v], dw[v], NULL, work, dout, in, w, &s);
    }
    double eo = 0, ei = 0, ew = 0, mo = 0, mi = 0, mw = 0;
    for (int64_t i = 0; i < nout; i++) eo = fmax(eo, fabs(o[0][i] - o[1][i])), mo = fmax(mo, fabs(o[0][i]));
    for (int64_t i = 0; i < nin; i++) ei = fmax(ei, fabs(di[0][i] - di[1][i])), mi = fmax(mi, fabs(di[0][i]));
    for (int64_t i = 0; i < nw; i++) ew = fmax(ew, fabs(dw[0][i] - dw[1][i])), mw = fmax(mw, fabs(dw[0][i]));
    CHECK(g_par_calls > 0 && eo <= 1e-6 * mo && ei <= 1e-6 * mi && ew <= 1e-6 * mw,
          "conv %s with a thread pool (par) gives the serial result: out %.1e din %.1e dw %.1e",
          c->what, eo / mo, ei / mi, ew / mw);
    free(in), free(w), free(b), free(dout), free(work);
    for (int v = 0; v < 2; v++) free(o[v]), free(di[v]), free(dw[v]);
}

typedef struct {
    kt_conv_shape s;
    float *in, *u, *out, *work, *r, *w;
} wino_ctx;

static double wino_loss(void *p)
{
    wino_ctx *c = p;
    kt_conv_wino_forward(c->out, c->work, c->in, c->u, NULL, &c->s, 0);
    return dot(c->out, c->r, (int64_t)c->s.cout * c->s.n * c->s.h * c->s.w);
}

/* The same as a function of the untransformed weights. */
static double wino_w_loss(void *p)
{
    wino_ctx *c = p;
    kt_conv_wino_weights(c->u, c->w, &c->s, 0);
    return wino_loss(p);
}

/* Winograd against the naive loops: plain, +bias, fused ADD|RELU, and with
 * a thread pool (bit-identical to serial). */
static void check_wino(const conv_case *c)
{
    kt_conv_shape s;
    kt_conv_shape_init(&s, c->n, c->cin, c->h, c->w, c->cout, 3, 1, 1);
    int64_t nin = (int64_t)s.cin * s.n * s.h * s.w, nout = (int64_t)s.cout * s.n * s.ho * s.wo;
    int64_t nw = (int64_t)s.cout * s.cin * 9;
    float *in = rand_buf(nin), *w = rand_buf(nw), *b = rand_buf(s.cout);
    float *u = zero_buf(16 * (int64_t)s.cout * s.cin), *prev = rand_buf(nout);
    float *out = zero_buf(nout), *out2 = zero_buf(nout);
    float *work = zero_buf((int64_t)kt_conv_workspace(&s));
    double *ref = malloc(sizeof(double) * nout), *ref2 = malloc(sizeof(double) * nout);
    kt_conv_wino_weights(u, w, &s, 0);

    naive_conv(ref, in, w, NULL, &s);
    kt_conv_wino_forward(out, work, in, u, NULL, &s, 0);
    double e = max_rel_diff(out, ref, nout);
    CHECK(kt_conv_wino_ok(&s) && e < 1e-5, "winograd fwd %s (%dx%d n%d %d->%d): max err %.2e",
          c->what, c->h, c->w, c->n, c->cin, c->cout, e);
    naive_conv(ref, in, w, b, &s);
    for (int64_t i = 0; i < nout; i++) {
        double v = ref[i] + prev[i];
        ref2[i] = v > 0 ? v : 0;
    }
    kt_conv_wino_forward(out, work, in, u, b, &s, KT_CONV_RELU);
    for (int64_t i = 0; i < nout; i++) ref[i] = ref[i] > 0 ? ref[i] : 0;
    e = max_rel_diff(out, ref, nout);
    CHECK(e < 1e-5, "winograd fwd+bias+relu %s: max err %.2e", c->what, e);
    memcpy(out, prev, sizeof(float) * nout);
    kt_conv_wino_forward(out, work, in, u, b, &s, KT_CONV_ADD | KT_CONV_RELU);
    e = max_rel_diff(out, ref2, nout);
    CHECK(e < 1e-5, "winograd fwd add+relu %s: max err %.2e", c->what, e);
    s.par = fake_par;
    memcpy(out2, prev, sizeof(float) * nout);
    kt_conv_wino_forward(out2, work, in, u, b, &s, KT_CONV_ADD | KT_CONV_RELU);
    e = max_rel_diff(out2, ref2, nout);
    CHECK(e < 1e-5, "winograd %s with a thread pool: max err %.2e", c->what, e);

    /* flipped weights: the input gradient, accumulated */
    kt_conv_shape ts = s;
    ts.cin = s.cout, ts.cout = s.cin, ts.par = NULL;
    float *dout = rand_buf(nout), *din = zero_buf(nin), *ut = zero_buf(16 * (int64_t)s.cout * s.cin);
    float *twork = zero_buf((int64_t)kt_conv_workspace(&ts));
    double *rdin = malloc(sizeof(double) * nin), *rdw = malloc(sizeof(double) * nw);
    fill(din, nin, 0.5f);
    kt_conv_wino_weights(ut, w, &s, 1);
    kt_conv_wino_forward(din, twork, dout, ut, NULL, &ts, KT_CONV_ADD);
    unfill(din, nin, 0.5f);
    naive_conv_backward(rdin, rdw, dout, in, w, &s);
    e = max_rel_diff(din, rdin, nin);
    CHECK(e < 1e-5, "winograd input gradient %s (flipped weights): max err %.2e", c->what, e);
    if (nin <= 4096) { /* and against finite differences of the Winograd forward */
        wino_ctx x = {s, in, u, out, work, dout, NULL};
        x.s.par = NULL;
        memset(din, 0, sizeof(float) * nin);
        kt_conv_wino_forward(din, twork, dout, ut, NULL, &ts, KT_CONV_ADD);
        double ef = fd_relerr(wino_loss, &x, in, din, nin, 1e-2f);
        CHECK(ef < 1e-3, "winograd input gradient fd %s: %.2e", c->what, ef);
    }

    /* the weight gradient in the Winograd domain, accumulated, serial and on
     * the stand-in pool */
    float *dw = zero_buf(nw), *du = zero_buf(16 * (int64_t)s.cout * s.cin);
    float *db = zero_buf(s.cout);
    double *rdb = calloc((size_t)s.cout, sizeof(double));
    for (int o = 0; o < s.cout; o++)
        for (int64_t i = 0; i < nout / s.cout; i++) rdb[o] += dout[o * (nout / s.cout) + i];
    for (int v = 0; v < 2; v++) {
        s.par = v ? fake_par : NULL;
        fill(dw, nw, 0.5f), fill(db, s.cout, 0.5f);
        kt_conv_wino_weight_grad(dw, db, du, work, dout, in, &s);
        unfill(dw, nw, 0.5f), unfill(db, s.cout, 0.5f);
        e = max_rel_diff(dw, rdw, nw);
        double eb = max_rel_diff(db, rdb, s.cout);
        CHECK(e < 1e-5 && eb < 1e-5, "winograd weight and bias gradients %s%s: max err %.2e, %.2e",
              c->what, v ? " with a thread pool" : "", e, eb);
    }
    free(db), free(rdb);
    if (nw <= 4096) { /* and against finite differences of the Winograd forward */
        wino_ctx x = {s, in, u, out, work, dout, w};
        x.s.par = NULL;
        memset(dw, 0, sizeof(float) * nw);
        kt_conv_wino_weight_grad(dw, NULL, du, work, dout, in, &x.s);
        double ef = fd_relerr(wino_w_loss, &x, w, dw, nw, 1e-2f);
        CHECK(ef < 1e-3, "winograd weight gradient fd %s: %.2e", c->what, ef);
    }
    free(dw), free(du);
    free(in), free(w), free(b), free(u), free(prev), free(out), free(out2), free(work);
    free(ref), free(ref2), free(dout), free(din), free(ut), free(twork), free(rdin), free(rdw);
}

static void test_conv(void)
{
    static const conv_case odd[] = {
        {2, 3, 7, 9, 5, 3, 1, 1, "3x3 s1 p1 non-square"},
        {3, 4, 9, 8, 6, 3, 2, 1, "3x3 s2 p1"},
        {1, 3, 11, 10, 4, 7, 2, 3, "7x7 s2 p3 batch 1"},
        {2, 5, 6, 7, 3, 1, 1, 0, "1x1 s1"},
        {2, 5, 7, 6, 4, 1, 2, 0, "1x1 s2"},
        {1, 2, 6, 5, 3, 3, 1, 0, "3x3 p0 batch 1"},
        {2, 3, 5, 5, 2, 3, 2, 0, "3x3 s2 p0 odd"},
        {1, 1, 3, 3, 1, 3, 1, 1, "1 channel 3x3"},
        {2, 3, 4, 4, 3, 5, 3, 2, "5x5 s3 p2"},
        {2, 2, 6, 5, 3, 5, 1, 2, "5x5 s1 p2 (same)"},
        {3, 2, 3, 4, 2, 7, 1, 3, "7x7 s1 p3 on 3x4 (taps past the plane)"},
        {1, 2, 1, 6, 2, 3, 1, 1, "3x3 s1 p1 on one row"},
    };
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        check_conv_vs_naive(&odd[i]);
        check_conv_fd(&odd[i]);
    }
    /* Big enough per image (cin*k*k*ho*wo > half the 4M-float cap) that im2col
     * runs in several chunks with a partial last one. */
    static const conv_case chunked[] = {
        {3, 48, 58, 58, 4, 3, 1, 1, "chunked 3x3 s1"},
        {3, 24, 116, 116, 4, 7, 2, 3, "chunked 7x7 s2"},
    };
    check_conv_par(&odd[1]);
    check_conv_par(&chunked[0]);
    check_conv_par(&chunked[1]);
    for (size_t i = 0; i < sizeof chunked / sizeof chunked[0]; i++) {
        kt_conv_shape s;
        const conv_case *c = &chunked[i];
        kt_conv_shape_init(&s, c->n, c->cin, c->h, c->w, c->cout, c->k, c->stride, c->pad);
        size_t per = (size_t)s.cin * s.k * s.k * s.ho * s.wo;
        CHECK(kt_conv_workspace(&s) < per * s.n, "%s: workspace %zu is chunked (< %zu)", c->what,
              kt_conv_workspace(&s), per * s.n);
        check_conv_vs_naive(c);
    }
    /* Odd sizes (partial tiles), one row, one channel, batches, and one
     * big enough (128 + 128 channels) to run in several chunks of tile rows. */
    static const conv_case wino[] = {
        {2, 3, 7, 9, 5, 3, 1, 1, "odd non-square"},
        {1, 2, 1, 6, 2, 3, 1, 1, "one row"},
        {1, 1, 3, 3, 1, 3, 1, 1, "one channel 3x3"},
        {4, 5, 8, 8, 7, 3, 1, 1, "even 8x8 batch 4"},
        {1, 3, 2, 40, 3, 3, 1, 1, "wide: 20 tiles a row"},
        {3, 128, 21, 22, 128, 3, 1, 1, "chunked"},
    };
    for (size_t i = 0; i < sizeof wino / sizeof wino[0]; i++) check_wino(&wino[i]);
    kt_conv_shape s;
    kt_conv_shape_init(&s, 1, 8, 8, 8, 8, 3, 2, 1);
    CHECK(!kt_conv_wino_ok(&s), "winograd is not for stride 2");
    kt_conv_shape_init(&s, 4, 8, 5, 5, 8, 1, 1, 0);
    CHECK(kt_conv_workspace(&s) == 0, "1x1 s1 conv needs no workspace");
    kt_conv_shape_init(&s, 4, 8, 224, 224, 8, 7, 2, 3);
    CHECK(s.ho == 112 && s.wo == 112, "7x7/2 pad 3 on 224 gives 112 (got %dx%d)", s.ho, s.wo);
}

/* ------------------------------------------------------------ batch norm */

typedef struct {
    int c;
    int64_t m;
    float *in, *gamma, *beta, *out, *r, *mean, *rstd, *rm, *rv;
} bn_ctx;

static double bn_train_loss(void *p)
{
    bn_ctx *b = p;
    kt_bn_train_forward(b->out, b->mean, b->rstd, b->rm, b->rv, b->in, b->gamma, b->beta, b->c,
                        b->m, 1e-5f, 0.1f, 0);
    return dot(b->out, b->r, b->c * b->m);
}

static void test_bn_train(void)
{
    bn_ctx b = {.c = 3, .m = 10};
    int64_t n = b.c * b.m;
    b.in = rand_buf(n), b.gamma = rand_buf(b.c), b.beta = rand_buf(b.c), b.r = rand_buf(n);
    for (int64_t i = 0; i < n; i++) b.in[i] = 2.0f * b.in[i] + 0.7f; /* non-zero mean */
    b.out = zero_buf(n), b.mean = zero_buf(b.c), b.rstd = zero_buf(b.c);
    b.rm = zero_buf(b.c), b.rv = zero_buf(b.c);
    float rm0[3] = {0.2f, -0.1f, 0.0f}, rv0[3] = {1.0f, 0.5f, 2.0f};
    memcpy(b.rm, rm0, sizeof rm0), memcpy(b.rv, rv0, sizeof rv0);
    kt_bn_train_forward(b.out, b.mean, b.rstd, b.rm, b.rv, b.in, b.gamma, b.beta, b.c, b.m,
                        1e-5f, 0.1f, 0);
    /* Direct definition: biased variance to normalise, unbiased in the running
     * update, running = 0.9 running + 0.1 batch. */
    double ey = 0, est = 0;
    for (int ch = 0; ch < b.c; ch++) {
        double mu = 0, var = 0;
        for (int64_t i = 0; i < b.m; i++) mu += b.in[ch * b.m + i];
        mu /= b.m;
        for (int64_t i = 0; i < b.m; i++) var += pow(b.in[ch * b.m + i] - mu, 2);
        for (int64_t i = 0; i < b.m; i++) {
            double y = (b.in[ch * b.m + i] - mu) / sqrt(var / b.m + 1e-5) * b.gamma[ch] + b.beta[ch];
            ey = fmax(ey, fabs(y - b.out[ch * b.m + i]));
        }
        est = fmax(est, fabs(b.rm[ch] - (0.9 * rm0[ch] + 0.1 * mu)));
        est = fmax(est, fabs(b.rv[ch] - (0.9 * rv0[ch] + 0.1 * var / (b.m - 1))));
        est = fmax(est, fabs(b.rstd[ch] - 1.0 / sqrt(var / b.m + 1e-5)) / b.rstd[ch]);
    }
    CHECK(ey < 1e-5, "bn train fwd vs definition: max err %.2e", ey);
    /* the fused ReLU is the ReLU of the plain output */
    float *o2 = zero_buf(n), sm[3], sr[3], rm2[3], rv2[3];
    kt_bn_train_forward(o2, sm, sr, rm2, rv2, b.in, b.gamma, b.beta, b.c, b.m, 1e-5f, 0.1f, 1);
    int same = 1;
    for (int64_t i = 0; i < n; i++) same &= o2[i] == (b.out[i] > 0 ? b.out[i] : 0.0f);
    kt_bn_eval_forward(o2, b.in, b.gamma, b.beta, b.c, b.m, 1);
    for (int64_t i = 0; i < n; i++) {
        float v = b.in[i] * b.gamma[i / b.m] + b.beta[i / b.m];
        same &= o2[i] == (v > 0 ? v : 0.0f);
    }
    CHECK(same, "bn train and eval forward with fused ReLU");
    free(o2);
    CHECK(est < 1e-6, "bn train running stats (unbiased var, momentum 0.1): max err %.2e", est);

    float *din = zero_buf(n), *dg = zero_buf(b.c), *dbt = zero_buf(b.c);
    fill(din, n, 0.25f), fill(dg, b.c, 0.25f), fill(dbt, b.c, 0.25f);
    kt_bn_train_backward(din, dg, dbt, b.r, NULL, b.in, b.mean, b.rstd, b.gamma, b.c, b.m, 1);
    unfill(din, n, 0.25f), unfill(dg, b.c, 0.25f), unfill(dbt, b.c, 0.25f);
    double ei = fd_relerr(bn_train_loss, &b, b.in, din, n, 1e-2f);
    double eg = fd_relerr(bn_train_loss, &b, b.gamma, dg, b.c, 1e-2f);
    double eb = fd_relerr(bn_train_loss, &b, b.beta, dbt, b.c, 1e-2f);
    CHECK(ei < 1e-3 && eg < 1e-3 && eb < 1e-3, "bn train grad fd: din %.2e dgamma %.2e dbeta %.2e",
          ei, eg, eb);

    /* A ReLU's mask given to the backward is the same as masking dout first,
     * and acc 0 writes din instead of adding to it; 2 x 37 values reach the
     * vector body and the scalar tail. */
    {
        const int c = 2, m = 37;
        float *x = rand_buf(c * m), *g = rand_buf(c * m), *mask = rand_buf(c * m);
        float *gm = zero_buf(c * m), *d1 = zero_buf(c * m), *d2 = zero_buf(c * m);
        float smu[2], srs[2], rm[2] = {0}, rv[2] = {1, 1}, gam[2] = {0.7f, -1.3f}, bet[2] = {0};
        float dg1[2] = {0}, db1[2] = {0}, dg2[2] = {0}, db2[2] = {0};
        kt_bn_train_forward(gm, smu, srs, rm, rv, x, gam, bet, c, m, 1e-5f, 0.1f, 0);
        mask[3] = 0.0f, mask[40] = -0.0f; /* zeros of both signs are masked out */
        for (int i = 0; i < c * m; i++) gm[i] = mask[i] > 0 ? g[i] : 0.0f, d2[i] = 1e3f;
        kt_bn_train_backward(d1, dg1, db1, gm, NULL, x, smu, srs, gam, c, m, 1);
        kt_bn_train_backward(d2, dg2, db2, g, mask, x, smu, srs, gam, c, m, 0);
        int eq = dg1[0] == dg2[0] && dg1[1] == dg2[1] && db1[0] == db2[0] && db1[1] == db2[1];
        for (int i = 0; i < c * m; i++) eq &= d1[i] == d2[i];
        CHECK(eq, "bn train backward with a ReLU mask, writing din: the masked, accumulated result");
        free(x), free(g), free(mask), free(gm), free(d1), free(d2);
    }
    free(b.in), free(b.gamma), free(b.beta), free(b.r), free(b.out), free(b.mean), free(b.rstd);
    free(b.rm), free(b.rv), free(din), free(dg), free(dbt);
}

typedef struct {
    int c;
    int64_t m;
    float *in, *gamma, *beta, *mean, *var, *out, *r, *scale, *shift;
} bne_ctx;

static double bn_eval_loss(void *p)
{
    bne_ctx *b = p;
    kt_bn_fold_params(b->scale, b->shift, b->gamma, b->beta, b->mean, b->var, b->c, 1e-3f);
    kt_bn_eval_forward(b->out, b->in, b->scale, b->shift, b->c, b->m, 0);
    return dot(b->out, b->r, b->c * b->m);
}

static void test_bn_eval(void)
{
    bne_ctx b = {.c = 4, .m = 7};
    int64_t n = b.c * b.m;
    b.in = rand_buf(n), b.gamma = rand_buf(b.c), b.beta = rand_buf(b.c), b.mean = rand_buf(b.c);
    b.var = rand_buf(b.c), b.r = rand_buf(n), b.out = zero_buf(n);
    b.scale = zero_buf(b.c), b.shift = zero_buf(b.c);
    for (int ch = 0; ch < b.c; ch++) b.var[ch] = 0.1f + fabsf(b.var[ch]);
    bn_eval_loss(&b);
    double e = 0;
    for (int ch = 0; ch < b.c; ch++)
        for (int64_t i = 0; i < b.m; i++) {
            double y = (b.in[ch * b.m + i] - b.mean[ch]) / sqrt(b.var[ch] + 1e-3) * b.gamma[ch] +
                       b.beta[ch];
            e = fmax(e, fabs(y - b.out[ch * b.m + i]));
        }
    CHECK(e < 1e-6, "bn eval fwd (folded scale/shift, eps 1e-3) vs definition: %.2e", e);
    float *din = zero_buf(n), *dg = zero_buf(b.c), *dbt = zero_buf(b.c);
    kt_bn_eval_backward(din, dg, dbt, b.r, b.in, b.mean, b.var, b.gamma, b.c, b.m, 1e-3f);
    double ei = fd_relerr(bn_eval_loss, &b, b.in, din, n, 1e-2f);
    double eg = fd_relerr(bn_eval_loss, &b, b.gamma, dg, b.c, 1e-2f);
    double eb = fd_relerr(bn_eval_loss, &b, b.beta, dbt, b.c, 1e-2f);
    CHECK(ei < 1e-3 && eg < 1e-3 && eb < 1e-3, "bn eval grad fd: din %.2e dgamma %.2e dbeta %.2e",
          ei, eg, eb);

    /* Folding into a conv: W' = W*scale per output channel, b' = shift. */
    kt_conv_shape s;
    kt_conv_shape_init(&s, 2, 3, 6, 5, b.c, 3, 1, 1);
    int64_t nin = 2 * 3 * 6 * 5, nout = (int64_t)b.c * 2 * 6 * 5, nw = (int64_t)b.c * 27;
    float *x = rand_buf(nin), *w = rand_buf(nw), *wf = zero_buf(nw), *y1 = zero_buf(nout),
          *y2 = zero_buf(nout), *work = zero_buf((int64_t)kt_conv_workspace(&s));
    kt_conv_forward(y1, work, x, w, NULL, &s);
    kt_bn_eval_forward(y1, y1, b.scale, b.shift, b.c, nout / b.c, 0);
    for (int co = 0; co < b.c; co++)
        for (int j = 0; j < 27; j++) wf[co * 27 + j] = w[co * 27 + j] * b.scale[co];
    kt_conv_forward(y2, work, x, wf, b.shift, &s);
    double ef = 0, mx = 0;
    for (int64_t i = 0; i < nout; i++) ef = fmax(ef, fabs(y1[i] - y2[i])), mx = fmax(mx, fabs(y1[i]));
    CHECK(ef / mx < 1e-5, "conv+bn eval == conv with folded weights: %.2e", ef / mx);
    free(x), free(w), free(wf), free(y1), free(y2), free(work);
    free(b.in), free(b.gamma), free(b.beta), free(b.mean), free(b.var), free(b.r), free(b.out);
    free(b.scale), free(b.shift), free(din), free(dg), free(dbt);
}

/* ------------------------------------------------------ elementwise ops */

typedef struct {
    int64_t n;
    float *in, *out, *r, p;
    uint8_t *mask;
    int kind; /* 0 relu, 1 gelu, 2 dropout */
} ew_ctx;

static double ew_loss(void *p)
{
    ew_ctx *e = p;
    if (e->kind == 0) kt_relu_forward(e->out, e->in, e->n);
    if (e->kind == 1) kt_gelu_forward(e->out, e->in, e->n);
    if (e->kind == 2) kt_dropout_forward(e->out, e->in, e->mask, e->p, e->n);
    return dot(e->out, e->r, e->n);
}

static void test_elementwise(void)
{
    ew_ctx e = {.n = 40};
    e.in = rand_buf(e.n), e.out = zero_buf(e.n), e.r = rand_buf(e.n);
    e.mask = malloc((size_t)e.n);
    /* Keep inputs away from ReLU's kink so the differences stay one-sided. */
    for (int64_t i = 0; i < e.n; i++) {
        e.in[i] = e.in[i] * 2.0f + (e.in[i] >= 0 ? 0.1f : -0.1f);
        e.mask[i] = (uint8_t)(i % 3 != 0);
    }
    float *din = zero_buf(e.n);
    const char *names[3] = {"relu", "gelu", "dropout p=0.3"};
    for (e.kind = 0; e.kind < 3; e.kind++) {
        e.p = 0.3f;
        ew_loss(&e);
        fill(din, e.n, 0.5f);
        if (e.kind == 0) kt_relu_backward(din, e.r, e.out, e.n);
        if (e.kind == 1) kt_gelu_backward(din, e.r, e.in, e.n);
        if (e.kind == 2) kt_dropout_backward(din, e.r, e.mask, e.p, e.n);
        unfill(din, e.n, 0.5f);
        double err = fd_relerr(ew_loss, &e, e.in, din, e.n, 1e-3f);
        CHECK(err < 1e-3, "%s grad fd: %.2e", names[e.kind], err);
    }
    float x[4] = {1.0f, -1.0f, 0.0f, 3.0f}, y[4];
    kt_gelu_forward(y, x, 4);
    /* gelu(x) = x * Phi(x): Phi(1) = 0.8413447460685429, Phi(3) = 0.9986501019683699 */
    CHECK(fabs(y[0] - 0.8413447460685429) < 1e-6 && fabs(y[1] + 0.1586552539314571) < 1e-6 &&
              y[2] == 0.0f && fabs(y[3] - 3 * 0.9986501019683699) < 1e-6,
          "gelu is the exact erf form: %.7f %.7f %.7f", y[0], y[1], y[3]);
    kt_dropout_forward(y, x, (const uint8_t[]){1, 0, 1, 1}, 0.5f, 4);
    CHECK(y[0] == 2.0f && y[1] == 0.0f && y[3] == 6.0f, "dropout scales kept values by 1/(1-p)");
    kt_dropout_forward(y, x, (const uint8_t[]){1, 1, 1, 1}, 1.0f, 4);
    CHECK(y[0] == 0.0f && y[3] == 0.0f, "dropout p=1 gives zeros, not inf");

    float c2[3] = {1, 2, 3};
    kt_add_inplace(c2, (const float[]){0.5f, -2, 1}, 3);
    CHECK(c2[0] == 1.5f && c2[1] == 0.0f && c2[2] == 4.0f, "add_inplace");
    /* 37 values: the vector body and the scalar tail */
    float y37[37], x37[37], g37[37], d37[37];
    int okv = 1;
    for (int i = 0; i < 37; i++) y37[i] = (float)(i % 5) - 2.0f, x37[i] = (float)(i % 3) - 1.0f, g37[i] = (float)i;
    y37[7] = NAN;
    kt_relu_grad(d37, g37, y37, 37);
    for (int i = 0; i < 37; i++) okv &= d37[i] == (y37[i] > 0 ? g37[i] : 0.0f);
    kt_add_relu(y37, x37, 37);
    for (int i = 0; i < 37; i++) {
        float v = (float)(i % 5) - 2.0f + x37[i];
        okv &= i == 7 ? isnan(y37[i]) : y37[i] == (v > 0 ? v : 0.0f);
    }
    CHECK(okv, "add_relu (NaN propagates as in torch) and relu_grad over a vector body and tail");
    free(e.in), free(e.out), free(e.r), free(e.mask), free(din);
}

/* ------------------------------------------------------------ pools */

typedef struct {
    int c, n, h, w, k, stride, pad, ho, wo;
    float *in, *out, *r;
    int32_t *am;
} pool_ctx;

static double maxpool_loss(void *p)
{
    pool_ctx *q = p;
    kt_maxpool_forward(q->out, q->am, q->in, q->c, q->n, q->h, q->w, q->k, q->stride, q->pad,
                       q->ho, q->wo);
    return dot(q->out, q->r, (int64_t)q->c * q->n * q->ho * q->wo);
}

static double avgpool_loss(void *p)
{
    pool_ctx *q = p;
    kt_avgpool_forward(q->out, q->in, q->c, q->n, q->h * q->w);
    return dot(q->out, q->r, (int64_t)q->c * q->n);
}

static void test_pools(void)
{
    pool_ctx q = {.c = 2, .n = 2, .h = 7, .w = 6, .k = 3, .stride = 2, .pad = 1};
    q.ho = (q.h + 2 * q.pad - q.k) / q.stride + 1, q.wo = (q.w + 2 * q.pad - q.k) / q.stride + 1;
    int64_t nin = (int64_t)q.c * q.n * q.h * q.w, nout = (int64_t)q.c * q.n * q.ho * q.wo;
    /* Distinct values 0.05 apart (a permutation), so no tie flips under +-1e-3. */
    q.in = zero_buf(nin);
    for (int64_t i = 0; i < nin; i++) q.in[i] = (float)((i * 37) % nin) * 0.05f - 2.0f;
    q.out = zero_buf(nout), q.r = rand_buf(nout), q.am = malloc(sizeof(int32_t) * nout);
    maxpool_loss(&q);
    /* Reference max over the window clipped to the image (padding never wins
     * even when every real value is negative). */
    int bad = 0;
    for (int p = 0; p < q.c * q.n; p++)
        for (int oy = 0; oy < q.ho; oy++)
            for (int ox = 0; ox < q.wo; ox++) {
                float best = -INFINITY;
                for (int y = oy * 2 - 1; y < oy * 2 + 2; y++)
                    for (int x = ox * 2 - 1; x < ox * 2 + 2; x++)
                        if (y >= 0 && y < q.h && x >= 0 && x < q.w)
                            best = fmaxf(best, q.in[(p * q.h + y) * q.w + x]);
                bad += q.out[(p * q.ho + oy) * q.wo + ox] != best;
            }
    CHECK(bad == 0 && q.ho == 4 && q.wo == 3, "maxpool 3x3/2 pad 1 fwd vs reference (%d wrong)",
          bad);
    /* The 3x3/2 fast path (no argmax) gives the argmax path's values, NaN
     * included, on odd and even sizes. */
    int same = 1;
    for (int hw = 0; hw < 4; hw++) {
        int hh = 7 + hw, ww = 40 - 3 * hw, pho = (hh - 1) / 2 + 1, pwo = (ww - 1) / 2 + 1;
        int64_t ni = 2 * 3 * hh * ww, no = 2 * 3 * pho * pwo;
        float *x = rand_buf(ni), *o1 = zero_buf(no), *o2 = zero_buf(no);
        int32_t *am = malloc(sizeof(int32_t) * no);
        x[5 * hw + 3] = NAN;
        kt_maxpool_forward(o1, am, x, 2, 3, hh, ww, 3, 2, 1, pho, pwo);
        kt_maxpool_forward(o2, NULL, x, 2, 3, hh, ww, 3, 2, 1, pho, pwo);
        for (int64_t i = 0; i < no; i++) same &= o1[i] == o2[i] || (isnan(o1[i]) && isnan(o2[i]));
        free(x), free(o1), free(o2), free(am);
    }
    CHECK(same, "maxpool 3x3/2 fast path (no argmax) equals the argmax path, NaN included");
    /* The 3x3/2 pool with argmax (vectors of outputs) against the scalar
     * rules: taps in order, strictly greater or the first NaN wins, a NaN
     * sticks, a window of -inf points at its first real tap. Few distinct
     * values, so ties are everywhere; widths give whole vectors and tails. */
    int wrong = 0;
    for (int hw = 0; hw < 5; hw++) {
        int hh = 5 + hw, ww = 3 + 17 * hw, pho = (hh - 1) / 2 + 1, pwo = (ww - 1) / 2 + 1;
        int64_t np = 3, ni = np * hh * ww, no = np * pho * pwo;
        float *x = zero_buf(ni), *o = zero_buf(no);
        int32_t *am = malloc(sizeof(int32_t) * no);
        for (int64_t i = 0; i < ni; i++) x[i] = (float)((i * 7 + hw) % 4) - 1.0f;
        x[(3 * hw + 2) % ni] = NAN, x[(5 * hw + 11) % ni] = NAN;
        for (int64_t i = 0; i < ni; i += 5) x[i] = -INFINITY;
        for (int i = 0; i < ww && i < 6; i++) x[i] = x[ww + i] = -INFINITY; /* -inf windows */
        x[2 * ww + 2] = x[2 * ww + 3] = NAN; /* two NaNs in one window: the first sticks */
        kt_maxpool_forward(o, am, x, 1, (int)np, hh, ww, 3, 2, 1, pho, pwo);
        for (int64_t p = 0; p < np; p++)
            for (int oy = 0; oy < pho; oy++)
                for (int ox = 0; ox < pwo; ox++) {
                    const float *pl = x + p * hh * ww;
                    int y0 = oy * 2 - 1 > 0 ? oy * 2 - 1 : 0, x0 = ox * 2 - 1 > 0 ? ox * 2 - 1 : 0;
                    float best = -INFINITY;
                    int32_t bi = y0 * ww + x0;
                    for (int y = oy * 2 - 1; y < oy * 2 + 2 && !isnan(best); y++)
                        for (int xx = ox * 2 - 1; xx < ox * 2 + 2 && !isnan(best); xx++)
                            if (y >= 0 && y < hh && xx >= 0 && xx < ww &&
                                (pl[y * ww + xx] > best || isnan(pl[y * ww + xx])))
                                best = pl[y * ww + xx], bi = y * ww + xx;
                    int64_t i = (p * pho + oy) * pwo + ox;
                    wrong += am[i] != bi || !(o[i] == best || (isnan(o[i]) && isnan(best)));
                }
        free(x), free(o), free(am);
    }
    CHECK(wrong == 0, "maxpool 3x3/2 with argmax: values and argmax by the scalar rules, "
                      "ties, NaN and -inf windows included (%d wrong)", wrong);
    /* Other shapes take the general loop (ResNet has none): 2x2/2 pad 0 and
     * 3x3/1 pad 1 against the same rules. */
    int gwrong = 0;
    static const int shp[2][3] = {{2, 2, 0}, {3, 1, 1}};
    for (int sidx = 0; sidx < 2; sidx++) {
        int kk = shp[sidx][0], st = shp[sidx][1], pd = shp[sidx][2], hh = 7, ww = 9;
        int pho = (hh + 2 * pd - kk) / st + 1, pwo = (ww + 2 * pd - kk) / st + 1;
        float *x = zero_buf(hh * ww), *o = zero_buf(pho * pwo);
        int32_t *am = malloc(sizeof(int32_t) * pho * pwo);
        for (int i = 0; i < hh * ww; i++) x[i] = (float)((i * 5) % 3);
        x[20] = x[21] = NAN;
        kt_maxpool_forward(o, am, x, 1, 1, hh, ww, kk, st, pd, pho, pwo);
        for (int oy = 0; oy < pho; oy++)
            for (int ox = 0; ox < pwo; ox++) {
                int y0 = oy * st - pd > 0 ? oy * st - pd : 0, x0 = ox * st - pd > 0 ? ox * st - pd : 0;
                float best = -INFINITY;
                int32_t bi = y0 * ww + x0;
                for (int y = oy * st - pd; y < oy * st - pd + kk && !isnan(best); y++)
                    for (int xx = ox * st - pd; xx < ox * st - pd + kk && !isnan(best); xx++)
                        if (y >= 0 && y < hh && xx >= 0 && xx < ww &&
                            (x[y * ww + xx] > best || isnan(x[y * ww + xx])))
                            best = x[y * ww + xx], bi = y * ww + xx;
                int i = oy * pwo + ox;
                gwrong += am[i] != bi || !(o[i] == best || (isnan(o[i]) && isnan(best)));
            }
        free(x), free(o), free(am);
    }
    CHECK(gwrong == 0, "maxpool 2x2/2 and 3x3/1 (the general loop) with argmax by the same rules "
                       "(%d wrong)", gwrong);
    float *din = zero_buf(nin);
    fill(din, nin, 0.5f);
    kt_maxpool_backward(din, q.r, q.am, q.c, q.n, q.h, q.w, q.ho, q.wo);
    unfill(din, nin, 0.5f);
    double e = fd_relerr(maxpool_loss, &q, q.in, din, nin, 1e-3f);
    CHECK(e < 1e-3, "maxpool grad fd: %.2e", e);

    float *ain = rand_buf(nin), *aout = zero_buf(q.c * q.n), *ar = rand_buf(q.c * q.n);
    pool_ctx a = q;
    a.in = ain, a.out = aout, a.r = ar;
    avgpool_loss(&a);
    double ea = 0;
    for (int ch = 0; ch < a.c; ch++)
        for (int i = 0; i < a.n; i++) {
            double s = 0;
            for (int j = 0; j < a.h * a.w; j++) s += ain[(ch * a.n + i) * a.h * a.w + j];
            ea = fmax(ea, fabs(s / (a.h * a.w) - aout[i * a.c + ch]));
        }
    CHECK(ea < 1e-6, "avgpool fwd [c][n][hw] -> [n][c]: %.2e", ea);
    memset(din, 0, sizeof(float) * nin);
    kt_avgpool_backward(din, ar, a.c, a.n, a.h * a.w);
    e = fd_relerr(avgpool_loss, &a, a.in, din, nin, 1e-2f);
    CHECK(e < 1e-3, "avgpool grad fd: %.2e", e);
    free(q.in), free(q.out), free(q.r), free(q.am), free(din), free(ain), free(aout), free(ar);
}

/* ------------------------------------------------------ linear, softmax */

typedef struct {
    int n, i, o;
    float *in, *w, *b, *out, *r;
} lin_ctx;

static double linear_loss(void *p)
{
    lin_ctx *l = p;
    kt_linear_forward(l->out, l->in, l->w, l->b, l->n, l->i, l->o);
    return dot(l->out, l->r, (int64_t)l->n * l->o);
}

static void test_linear(void)
{
    lin_ctx l = {.n = 3, .i = 5, .o = 4};
    l.in = rand_buf(l.n * l.i), l.w = rand_buf(l.o * l.i), l.b = rand_buf(l.o);
    l.out = zero_buf(l.n * l.o), l.r = rand_buf(l.n * l.o);
    linear_loss(&l);
    double e = 0;
    for (int r = 0; r < l.n; r++)
        for (int j = 0; j < l.o; j++) {
            double s = l.b[j];
            for (int k = 0; k < l.i; k++) s += (double)l.in[r * l.i + k] * l.w[j * l.i + k];
            e = fmax(e, fabs(s - l.out[r * l.o + j]));
        }
    CHECK(e < 1e-5, "linear fwd (torch layout w[o][i]): %.2e", e);
    float *din = zero_buf(l.n * l.i), *dw = zero_buf(l.o * l.i), *db = zero_buf(l.o);
    fill(din, l.n * l.i, 0.5f), fill(dw, l.o * l.i, 0.5f), fill(db, l.o, 0.5f);
    kt_linear_backward(din, dw, db, l.r, l.in, l.w, l.n, l.i, l.o);
    unfill(din, l.n * l.i, 0.5f), unfill(dw, l.o * l.i, 0.5f), unfill(db, l.o, 0.5f);
    double ei = fd_relerr(linear_loss, &l, l.in, din, l.n * l.i, 1e-2f);
    double ew = fd_relerr(linear_loss, &l, l.w, dw, l.o * l.i, 1e-2f);
    double eb = fd_relerr(linear_loss, &l, l.b, db, l.o, 1e-2f);
    CHECK(ei < 1e-3 && ew < 1e-3 && eb < 1e-3, "linear grad fd: din %.2e dw %.2e db %.2e", ei, ew,
          eb);
    free(l.in), free(l.w), free(l.b), free(l.out), free(l.r), free(din), free(dw), free(db);
}

typedef struct {
    int n, k;
    float *z, *cw, ls;
    int *y;
} ce_ctx;

static double ce_loss(void *p)
{
    ce_ctx *c = p;
    return kt_softmax_ce(NULL, c->z, c->y, c->cw, c->ls, c->n, c->k);
}

/* Reference: torch's loss written as a target distribution,
 * q = (1-e) onehot + e/C, loss = -sum_i sum_c w_c q_ic log p_ic / sum_i w[y_i]. */
static double ce_reference(const ce_ctx *c)
{
    double num = 0, den = 0;
    for (int r = 0; r < c->n; r++) {
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < c->k; j++) mx = fmax(mx, c->z[r * c->k + j]);
        for (int j = 0; j < c->k; j++) s += exp(c->z[r * c->k + j] - mx);
        for (int j = 0; j < c->k; j++) {
            double lp = c->z[r * c->k + j] - mx - log(s);
            double q = (1 - c->ls) * (j == c->y[r]) + c->ls / c->k;
            num -= (c->cw ? c->cw[j] : 1.0) * q * lp;
        }
        den += c->cw ? c->cw[c->y[r]] : 1.0;
    }
    return num / den;
}

static void test_softmax_ce(void)
{
    int y[5] = {0, 3, 1, 1, 2};
    float cw[4] = {0.5f, 2.0f, 1.0f, 3.0f};
    ce_ctx c = {.n = 5, .k = 4, .y = y};
    c.z = rand_buf(c.n * c.k);
    for (int i = 0; i < c.n * c.k; i++) c.z[i] *= 3.0f;
    float *dz = zero_buf(c.n * c.k);
    for (int v = 0; v < 4; v++) {
        c.cw = (v & 1) ? cw : NULL;
        c.ls = (v & 2) ? 0.1f : 0.0f;
        double loss = kt_softmax_ce(dz, c.z, c.y, c.cw, c.ls, c.n, c.k);
        double ref = ce_reference(&c);
        CHECK(fabs(loss - ref) < 1e-6 * fabs(ref), "softmax ce loss (weights %d, smoothing %.1f): %.8f vs %.8f",
              v & 1, c.ls, loss, ref);
        double e = fd_relerr(ce_loss, &c, c.z, dz, c.n * c.k, 1e-2f);
        CHECK(e < 1e-3, "softmax ce grad fd (weights %d, smoothing %.1f): %.2e", v & 1, c.ls, e);
    }
    /* softmax rows sum to 1 and survive large logits */
    float z[6] = {1000, 999, 998, -5, 0, 5}, p[6];
    kt_softmax(p, z, 2, 3);
    double e0 = 1 / (1 + exp(-1.0) + exp(-2.0));
    CHECK(fabs(p[0] - e0) < 1e-6 && fabs(p[3] + p[4] + p[5] - 1) < 1e-6 && !isnan(p[1]),
          "softmax with logits near 1000: %.6f", p[0]);
    free(c.z), free(dz);
}

int main(int argc, char **argv)
{
    (void)argc;
    kt_blas_init(argv);
    printf("# blas core %s (%s), %d threads\n", kt_blas_core(), kt_blas_note(), kt_blas_threads());
    test_conv();
    test_bn_train();
    test_bn_eval();
    test_elementwise();
    test_pools();
    test_linear();
    test_softmax_ce();
    TEST_EXIT();
}
