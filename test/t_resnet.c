/* t_resnet.c - the executable network on tiny hand-built ResNets:
 *  - eval forward (BN folded into the convs) against a naive double-precision
 *    reference network written here from the architecture description, at
 *    every kept point, for bottleneck v1.5 (stride on the 3x3), bottleneck v1
 *    (stride on the first 1x1, conv biases, eps 1e-3) and basic blocks;
 *  - the unfolded eval path (a trainable network run with training = 0)
 *    equals the folded one (BN-fold equivalence);
 *  - starting from a cached activation at the cut gives the same result;
 *  - backward of the whole network (freeze "none": stem, blocks, fc) and of
 *    a partly frozen one against central finite differences of the
 *    train-mode forward, for every parameter tensor (sampled entries);
 *  - gradients accumulate, running statistics and num_batches_tracked move
 *    only in training mode, parameter and tensor lists are complete.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "blas.h"
#include "resnet.h"
#include "test.h"

static uint64_t g_seed = 777;

static float rnd(void)
{
    g_seed = g_seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(g_seed >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* ---------------------------------------------------------- tiny arch */

/* Everything a hand-built arch points to, freed at once. */
static float *g_pool[512];
static int g_npool;

static float *arr(int n, float scale, float offset)
{
    float *p = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) p[i] = rnd() * scale + offset;
    g_pool[g_npool++] = p;
    return p;
}

static void mk_conv(kt_conv_desc *d, const char *name, int cin, int cout, int k, int stride,
                    int bias)
{
    snprintf(d->name, sizeof d->name, "%s", name);
    d->cin = cin, d->cout = cout, d->k = k, d->stride = stride, d->pad = (k - 1) / 2;
    /* He-like scale keeps activations O(1) through the blocks. */
    d->w = arr(cout * cin * k * k, (float)(1.7 / sqrt(cin * k * k)), 0.0f);
    d->bias = bias ? arr(cout, 0.1f, 0.0f) : NULL;
}

/* Shifts every BN beta: the backward tests use 1.5 so that most ReLU inputs
 * sit well above 0 and finite differences rarely straddle a kink. */
static float g_beta_offset;

static void mk_bn(kt_bn_desc *d, const char *name, int c, float eps)
{
    snprintf(d->name, sizeof d->name, "%s", name);
    d->c = c, d->eps = eps;
    d->gamma = arr(c, 0.2f, 1.0f), d->beta = arr(c, 0.2f, g_beta_offset);
    d->mean = arr(c, 0.2f, 0.0f), d->var = arr(c, 0.3f, 1.0f);
}

typedef struct {
    int bottleneck, stride_on_3x3, bias;
    float eps;
    const char *what;
} variant;

/* stem 3->4 (7x7/2), then layer1.0 (down, stride 1), layer2.0 (down,
 * stride 2), layer2.1 (identity), avgpool, fc to 3 classes. */
static kt_arch *tiny_arch(const variant *v)
{
    kt_arch *a = calloc(1, sizeof *a);
    snprintf(a->variant, sizeof a->variant, "tiny");
    a->nstages = 4, a->bottleneck = v->bottleneck, a->stride_on_3x3 = v->stride_on_3x3;
    mk_conv(&a->stem_conv, "conv1", 3, 4, 7, 2, v->bias);
    mk_bn(&a->stem_bn, "bn1", 4, v->eps);
    a->nblocks = 3;
    a->blocks = calloc(3, sizeof *a->blocks);
    const int stage[3] = {1, 2, 2}, idx[3] = {0, 0, 1}, cin[3] = {4, 8, 12};
    const int cout[3] = {8, 12, 12}, width[3] = {3, 5, 5}, stride[3] = {1, 2, 1};
    for (int b = 0; b < 3; b++) {
        kt_block_desc *B = &a->blocks[b];
        char nm[48];
        snprintf(B->name, sizeof B->name, "layer%d.%d", stage[b], idx[b]);
        B->stage = stage[b], B->bottleneck = v->bottleneck;
        B->cin = cin[b], B->cout = cout[b], B->stride = stride[b];
        int nconv = v->bottleneck ? 3 : 2;
        for (int i = 0; i < nconv; i++) {
            int ci = i == 0 ? cin[b] : width[b], co = i == nconv - 1 ? cout[b] : width[b];
            int k = v->bottleneck && i != 1 ? 1 : 3, s = 1;
            if (v->bottleneck) {
                if ((v->stride_on_3x3 && i == 1) || (!v->stride_on_3x3 && i == 0)) s = stride[b];
            } else if (i == 0) {
                s = stride[b];
            }
            snprintf(nm, sizeof nm, "%s.conv%d", B->name, i + 1);
            mk_conv(&B->conv[i], nm, ci, co, k, s, v->bias);
            snprintf(nm, sizeof nm, "%s.bn%d", B->name, i + 1);
            mk_bn(&B->bn[i], nm, co, v->eps);
        }
        B->has_down = b < 2;
        if (B->has_down) {
            snprintf(nm, sizeof nm, "%s.downsample.0", B->name);
            mk_conv(&B->down, nm, cin[b], cout[b], 1, stride[b], v->bias);
            snprintf(nm, sizeof nm, "%s.downsample.1", B->name);
            mk_bn(&B->down_bn, nm, cout[b], v->eps);
        }
    }
    a->depth[0] = 1, a->depth[1] = 2;
    a->features = 12, a->num_classes = 3;
    a->fc_w = arr(3 * 12, 0.5f, 0.0f), a->fc_b = arr(3, 0.1f, 0.0f);
    return a;
}

static void free_arch(kt_arch *a)
{
    free(a->blocks), free(a);
    while (g_npool) free(g_pool[--g_npool]);
}

/* ------------------------------------------------- naive reference (eval) */

typedef struct {
    int c, h, w; /* per image; the tensor is [c][n][h][w] */
    double *v;
} dt;

static dt dt_new(int c, int n, int h, int w)
{
    dt t = {c, h, w, calloc((size_t)c * n * h * w, sizeof(double))};
    return t;
}

/* conv + eval BN (+ReLU), straight from the definitions. */
static dt ref_unit(const dt *x, int n, const kt_conv_desc *d, const kt_bn_desc *bn, int relu)
{
    int ho = (x->h + 2 * d->pad - d->k) / d->stride + 1, wo = (x->w + 2 * d->pad - d->k) / d->stride + 1;
    dt y = dt_new(d->cout, n, ho, wo);
    for (int o = 0; o < d->cout; o++)
        for (int i = 0; i < n; i++)
            for (int oy = 0; oy < ho; oy++)
                for (int ox = 0; ox < wo; ox++) {
                    double s = d->bias ? d->bias[o] : 0;
                    for (int c = 0; c < d->cin; c++)
                        for (int ky = 0; ky < d->k; ky++)
                            for (int kx = 0; kx < d->k; kx++) {
                                int iy = oy * d->stride - d->pad + ky, ix = ox * d->stride - d->pad + kx;
                                if (iy < 0 || iy >= x->h || ix < 0 || ix >= x->w) continue;
                                s += x->v[((size_t)(c * n + i) * x->h + iy) * x->w + ix] *
                                     d->w[((o * d->cin + c) * d->k + ky) * d->k + kx];
                            }
                    s = (s - bn->mean[o]) / sqrt(bn->var[o] + (double)bn->eps) * bn->gamma[o] + bn->beta[o];
                    if (relu && s < 0) s = 0;
                    y.v[((size_t)(o * n + i) * ho + oy) * wo + ox] = s;
                }
    return y;
}

/* Reference activations at every point: [0] input ... [npoints-1] logits. */
static void ref_forward(dt *pts, const kt_arch *a, const float *in, int n, int S)
{
    pts[0] = dt_new(3, n, S, S);
    for (size_t i = 0; i < (size_t)3 * n * S * S; i++) pts[0].v[i] = in[i];
    dt c = ref_unit(&pts[0], n, &a->stem_conv, &a->stem_bn, 1);
    int ph = (c.h - 1) / 2 + 1, pw = (c.w - 1) / 2 + 1;
    pts[1] = dt_new(c.c, n, ph, pw);
    for (int p = 0; p < c.c * n; p++)
        for (int oy = 0; oy < ph; oy++)
            for (int ox = 0; ox < pw; ox++) {
                double m = -INFINITY;
                for (int y = oy * 2 - 1; y <= oy * 2 + 1; y++)
                    for (int x = ox * 2 - 1; x <= ox * 2 + 1; x++)
                        if (y >= 0 && y < c.h && x >= 0 && x < c.w) m = fmax(m, c.v[(p * c.h + y) * c.w + x]);
                pts[1].v[(p * ph + oy) * pw + ox] = m;
            }
    free(c.v);
    for (int b = 0; b < a->nblocks; b++) {
        const kt_block_desc *B = &a->blocks[b];
        const dt *x = &pts[b + 1];
        int nconv = B->bottleneck ? 3 : 2;
        dt t = ref_unit(x, n, &B->conv[0], &B->bn[0], 1);
        for (int i = 1; i < nconv; i++) {
            dt t2 = ref_unit(&t, n, &B->conv[i], &B->bn[i], i < nconv - 1);
            free(t.v);
            t = t2;
        }
        dt sc = B->has_down ? ref_unit(x, n, &B->down, &B->down_bn, 0) : *x;
        for (size_t i = 0; i < (size_t)t.c * n * t.h * t.w; i++) t.v[i] = fmax(0, t.v[i] + sc.v[i]);
        if (B->has_down) free(sc.v);
        pts[b + 2] = t;
    }
    const dt *l = &pts[a->nblocks + 1];
    dt avg = dt_new(a->features, n, 1, 1), lg = dt_new(a->num_classes, n, 1, 1);
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < l->c; ch++) {
            double s = 0;
            for (int j = 0; j < l->h * l->w; j++) s += l->v[(size_t)(ch * n + i) * l->h * l->w + j];
            avg.v[i * a->features + ch] = s / (l->h * l->w); /* [n][c] like kt */
        }
    for (int i = 0; i < n; i++)
        for (int o = 0; o < a->num_classes; o++) {
            double s = a->fc_b[o];
            for (int f = 0; f < a->features; f++) s += avg.v[i * a->features + f] * a->fc_w[o * a->features + f];
            lg.v[i * a->num_classes + o] = s;
        }
    pts[a->nblocks + 2] = avg, pts[a->nblocks + 3] = lg;
}

static double rel_err(const float *x, const dt *ref, int n)
{
    size_t m = (size_t)ref->c * n * ref->h * ref->w;
    double d = 0, r = 0;
    for (size_t i = 0; i < m; i++) d += pow(x[i] - ref->v[i], 2), r += ref->v[i] * ref->v[i];
    return sqrt(d / (r > 0 ? r : 1));
}

static int g_chunk; /* kt_resnet_plan.chunk for the nets made next */

static kt_resnet *mk_net(const kt_arch *a, int batch, int S, int freeze, int stop, int train)
{
    kt_resnet_plan plan = {.batch = batch, .image_size = S, .freeze = freeze, .stop = stop,
                           .train = train, .chunk = g_chunk};
    kt_resnet *r = NULL;
    kt_err err = {0};
    if (kt_resnet_init(&r, a, &plan, &err) != KT_OK) printf("# init failed: %s\n", err.msg);
    return r;
}

static void test_eval(const variant *v)
{
    const int n = 2, S = 19;
    kt_arch *a = tiny_arch(v);
    int np = kt_arch_npoints(a), logits = np - 1;
    float *in = malloc(sizeof(float) * 3 * n * S * S);
    for (int i = 0; i < 3 * n * S * S; i++) in[i] = rnd();
    dt ref[16];
    ref_forward(ref, a, in, n, S);

    /* Folded inference to every stop point. */
    for (int p = 1; p < np; p++) {
        kt_resnet *r = mk_net(a, 3, S, 0, p, 0);
        const float *y = r ? kt_resnet_forward(r, 0, in, n, 0) : NULL;
        char nm[32];
        kt_arch_point_name(a, p, nm, sizeof nm);
        double e = y ? rel_err(y, &ref[p], n) : 1;
        CHECK(e < 2e-6, "%s: folded forward to %s vs naive reference: rel %.2e", v->what, nm, e);
        kt_resnet_free(r);
    }
    /* Unfolded eval BN (everything trainable, training = 0): same network. */
    kt_resnet *rt = mk_net(a, n, S, 0, logits, 1);
    const float *y = rt ? kt_resnet_forward(rt, 0, in, n, 0) : NULL;
    double e = y ? rel_err(y, &ref[logits], n) : 1;
    int kept = 1;
    for (int p = 0; rt && p < np; p++) kept &= kt_resnet_activation(rt, p) != NULL;
    CHECK(e < 2e-6 && kept, "%s: unfolded eval BN equals folded and reference: rel %.2e", v->what, e);
    double e1 = rt ? rel_err(kt_resnet_activation(rt, 3), &ref[3], n) : 1;
    CHECK(e1 < 2e-6, "%s: kept activation layer2.0 of a trainable net: rel %.2e", v->what, e1);

    /* Cut at layer1.0 (point 2): frozen part folded, rest unfolded; then
     * start from the cached activation at the cut. */
    kt_resnet *rc = mk_net(a, n, S, 2, logits, 1);
    const float *y2 = rc ? kt_resnet_forward(rc, 0, in, n, 0) : NULL;
    e = y2 ? rel_err(y2, &ref[logits], n) : 1;
    CHECK(e < 2e-6, "%s: cut at layer1.0, eval: rel %.2e", v->what, e);
    const float *cut = rc ? kt_resnet_activation(rc, 2) : NULL;
    float *cached = NULL;
    if (cut) {
        size_t m = (size_t)ref[2].c * n * ref[2].h * ref[2].w;
        cached = malloc(sizeof(float) * m);
        memcpy(cached, cut, sizeof(float) * m);
        y2 = kt_resnet_forward(rc, 2, cached, n, 0);
        e = rel_err(y2, &ref[logits], n);
    }
    CHECK(cut && e < 2e-6, "%s: forward from the cached cut activation: rel %.2e", v->what, e);
    /* from a cached frozen point before the cut: an identity block must not
     * write over the caller's input */
    kt_resnet *rf = mk_net(a, n, S, logits, logits, 0);
    if (rf && cached) {
        float *c3 = malloc(sizeof(float) * ref[3].c * n * ref[3].h * ref[3].w);
        for (size_t i = 0; i < (size_t)ref[3].c * n * ref[3].h * ref[3].w; i++) c3[i] = (float)ref[3].v[i];
        float first = c3[0];
        y2 = kt_resnet_forward(rf, 3, c3, n, 0);
        e = rel_err(y2, &ref[logits], n);
        CHECK(e < 2e-6 && c3[0] == first, "%s: from layer2.0 into an identity block: rel %.2e, input intact",
              v->what, e);
        free(c3);
    }
    kt_resnet_free(rf), kt_resnet_free(rc), kt_resnet_free(rt);
    free(cached);
    for (int p = 0; p < np; p++) free(ref[p].v);
    free(in);
    free_arch(a);
}

/* ------------------------------------------------------ backward vs FD */

typedef struct {
    kt_resnet *r;
    const float *in;
    const float *w; /* [n][outsz] loss weights */
    int n, from;
    size_t outsz;
} fd_ctx;

static double fd_loss(fd_ctx *c)
{
    const float *y = kt_resnet_forward(c->r, c->from, c->in, c->n, 1);
    double s = 0;
    for (size_t i = 0; i < c->outsz * c->n; i++) s += (double)y[i] * c->w[i];
    return s;
}

/* Central difference of the loss in parameter entry x with step h. */
static double fd_at(fd_ctx *c, float *x, float h)
{
    float save = *x, xp = save + h, xm = save - h;
    *x = xp;
    double lp = fd_loss(c);
    *x = xm;
    double lm = fd_loss(c);
    *x = save;
    return (lp - lm) / ((double)xp - xm);
}

/* For every parameter, up to 5 spread entries: central differences in
 * double of the float32 train-mode forward. A step can move a ReLU input
 * across 0 (a kink), which breaks the difference quotient, so each entry is
 * estimated with steps h and h/2: when the two disagree the entry straddles
 * a kink and is skipped (at most a quarter may be). The accepted estimates
 * must match the analytic gradient: per tensor, ||num - ana|| /
 * (max(||num||, ||ana||) + floor), the floor (5% of the largest gradient
 * seen) covering gradients that are zero in exact arithmetic, such as a conv
 * bias right before a train-mode BN. */
static double check_params(fd_ctx *c, const char *what, float h, int *skipped, int *total)
{
    kt_resnet *r = c->r;
    for (int i = 0; i < kt_resnet_nparams(r); i++) {
        kt_param *p = kt_resnet_param(r, i);
        memset(p->grad, 0, sizeof(float) * p->numel);
    }
    fd_loss(c);
    kt_resnet_backward(r, c->w, c->n);
    double worst = 0, gmax = 0;
    char wname[64] = "";
    *skipped = *total = 0;
    for (int i = 0; i < kt_resnet_nparams(r); i++) {
        kt_param *p = kt_resnet_param(r, i);
        for (int64_t j = 0; j < p->numel; j++) gmax = fmax(gmax, fabs(p->grad[j]));
    }
    for (int i = 0; i < kt_resnet_nparams(r); i++) {
        kt_param *p = kt_resnet_param(r, i);
        double d2 = 0, n2 = 0, a2 = 0;
        int64_t step = p->numel / 5 + 1;
        for (int64_t j = (i * 7) % step; j < p->numel; j += step) {
            double n1 = fd_at(c, &p->data[j], h), nh = fd_at(c, &p->data[j], h / 2);
            double ana = p->grad[j];
            ++*total;
            if (fabs(n1 - nh) > 0.01 * fmax(fabs(n1), fabs(nh)) + 1e-3) {
                ++*skipped;
                continue;
            }
            d2 += (nh - ana) * (nh - ana), n2 += nh * nh, a2 += ana * ana;
        }
        double e = sqrt(d2) / (sqrt(fmax(n2, a2)) + 0.05 * gmax);
        if (e > worst) worst = e, snprintf(wname, sizeof wname, "%s", p->name);
    }
    printf("# %s: worst parameter %s (%.2e), %d of %d entries skipped at kinks\n", what, wname,
           worst, *skipped, *total);
    return worst;
}

static void test_backward(const variant *v)
{
    /* 37: the stem and its pool leave 10x10 maps, so layer1's 3x3 convs
     * train through Winograd (forward, input and weight gradients); later
     * stages are too small for it and take im2col. (How many entries sit at
     * a ReLU or max-pool kink depends on the size; at 37 few do.) */
    const int n = 3, S = 37;
    g_beta_offset = 1.5f;
    kt_arch *a = tiny_arch(v);
    g_beta_offset = 0.0f;
    int np = kt_arch_npoints(a), logits = np - 1, avgp = np - 2;
    float *in = malloc(sizeof(float) * 3 * n * S * S);
    for (int i = 0; i < 3 * n * S * S; i++) in[i] = rnd();
    float *w = malloc(sizeof(float) * 64 * n);
    for (int i = 0; i < 64 * n; i++) w[i] = rnd();

    /* freeze "none": stem, every block and fc train */
    fd_ctx c = {mk_net(a, n, S, 0, logits, 1), in, w, n, 0, 3};
    if (c.r) {
        int nconv = v->bottleneck ? 3 : 2;
        /* units: stem + 3 blocks*nconv + 2 downsamples; 3 or 4 params each; fc 2 */
        int want = (1 + 3 * nconv + 2) * (3 + (v->bias ? 1 : 0)) + 2;
        CHECK(kt_resnet_nparams(c.r) == want && kt_resnet_nbuffers(c.r) == (1 + 3 * nconv + 2) * 3,
              "%s: %d params, %d buffers for freeze none", v->what, kt_resnet_nparams(c.r),
              kt_resnet_nbuffers(c.r));
        int sk, tot;
        double e = check_params(&c, v->what, 4e-3f, &sk, &tot);
        CHECK(e < 5e-2 && sk * 4 <= tot,
              "%s: whole-network backward (freeze none) vs finite differences: %.2e (%d/%d skipped)",
              v->what, e, sk, tot);
        /* gradients accumulate over two backward calls */
        kt_param *p = kt_resnet_param(c.r, 0);
        float g0 = p->grad[1];
        fd_loss(&c);
        kt_resnet_backward(c.r, w, n);
        CHECK(fabsf(p->grad[1] - 2 * g0) <= 1e-5f * fabsf(g0) + 1e-7f,
              "%s: backward accumulates into grads (%g then %g)", v->what, g0, p->grad[1]);
        kt_buffer *nbt = NULL;
        for (int i = 0; i < kt_resnet_nbuffers(c.r); i++)
            if (strstr(kt_resnet_buffer(c.r, i)->name, "bn1.num_batches_tracked") &&
                !strstr(kt_resnet_buffer(c.r, i)->name, "layer"))
                nbt = kt_resnet_buffer(c.r, i);
        int64_t before = nbt ? nbt->idata[0] : -1;
        kt_resnet_forward(c.r, 0, in, n, 0);
        CHECK(nbt && before > 0 && nbt->idata[0] == before,
              "%s: stem num_batches_tracked counts training forwards only (%lld)", v->what,
              (long long)before);
    }
    kt_resnet_free(c.r);

    /* cut at layer1.0, stop at avgpool (a training head's input) */
    fd_ctx c2 = {mk_net(a, n, S, 2, avgp, 1), in, w, n, 0, 12};
    if (c2.r) {
        int nconv = v->bottleneck ? 3 : 2;
        int want = (2 * nconv + 1) * (3 + (v->bias ? 1 : 0));
        CHECK(kt_resnet_nparams(c2.r) == want, "%s: cut at layer1.0 trains %d params (want %d)",
              v->what, kt_resnet_nparams(c2.r), want);
        int sk, tot;
        double e = check_params(&c2, v->what, 4e-3f, &sk, &tot);
        CHECK(e < 5e-2 && sk * 4 <= tot,
              "%s: backward from avgpool, cut at layer1.0, vs finite differences: %.2e (%d/%d skipped)",
              v->what, e, sk, tot);
        int nt = 0;
        const kt_wtensor *t = kt_resnet_tensors(c2.r, &nt);
        int found_frozen = 0;
        for (int i = 0; i < nt; i++)
            if (strcmp(t[i].name, "layer1.0.conv1.weight") == 0)
                found_frozen = t[i].data == a->blocks[0].conv[0].w;
        int want_t = (1 + 3 * nconv + 2) * (6 + (v->bias ? 1 : 0));
        CHECK(nt == want_t && found_frozen,
              "%s: checkpoint tensors list all %d backbone tensors, frozen ones as loaded", v->what, nt);
    }
    kt_resnet_free(c2.r);
    free(in), free(w);
    free_arch(a);
}

static void test_plan_errors(void)
{
    variant v = {1, 1, 0, 1e-5f, "v1.5"};
    kt_arch *a = tiny_arch(&v);
    kt_resnet_plan bad[3] = {{.batch = 0, .image_size = 19, .stop = 5},
                             {.batch = 2, .image_size = 19, .stop = 9},
                             {.batch = 2, .image_size = 19, .freeze = 4, .stop = 3, .train = 1}};
    const char *why[3] = {"batch 0", "stop past logits", "freeze after stop"};
    for (int i = 0; i < 3; i++) {
        kt_resnet *r = NULL;
        kt_err err = {0};
        kt_status st = kt_resnet_init(&r, a, &bad[i], &err);
        CHECK(st == KT_ERR_USAGE && r == NULL && err.msg[0], "plan with %s is refused: %s", why[i],
              err.msg);
    }
    kt_resnet_free(NULL);
    free_arch(a);
}

/* The frozen part splits the batch over threads ("lanes") and each lane's
 * share into chunks: every split must give the single-thread, single-chunk
 * result, for maps (gathered back into [C][N][H][W]) and pooled rows. */
static void test_lanes(void)
{
    variant v = {1, 1, 0, 1e-5f, "v1.5"};
    const int n = 7, S = 19;
    kt_arch *a = tiny_arch(&v);
    int np = kt_arch_npoints(a);
    float *in = malloc(sizeof(float) * 3 * n * S * S);
    for (int i = 0; i < 3 * n * S * S; i++) in[i] = rnd();
    dt ref[16];
    ref_forward(ref, a, in, n, S);
    const int stops[2] = {3, np - 1};
    for (int t = 1; t <= 3; t++)
        for (int chunk = 1; chunk <= 3; chunk += 2)
            for (int si = 0; si < 2; si++) {
                kt_blas_set_threads(t);
                g_chunk = chunk;
                kt_resnet *r = mk_net(a, 8, S, stops[si], stops[si], 0);
                const float *y = r ? kt_resnet_forward(r, 0, in, n, 0) : NULL;
                double e = y ? rel_err(y, &ref[stops[si]], n) : 1;
                CHECK(e < 2e-6, "%d threads, chunks of %d images, 7 of 8 images, stop %d: rel %.2e", t,
                      chunk, stops[si], e);
                kt_resnet_free(r);
            }
    g_chunk = 0;
    kt_blas_set_threads(0);
    for (int p = 0; p < np; p++) free(ref[p].v);
    free(in);
    free_arch(a);
}

int main(int argc, char **argv)
{
    (void)argc;
    kt_blas_init(argv);
    static const variant vs[] = {
        {1, 1, 0, 1e-5f, "bottleneck v1.5"},
        {1, 0, 1, 1e-3f, "bottleneck v1 (Keras: stride on 1x1, conv bias, eps 1e-3)"},
        {0, 1, 0, 1e-5f, "basic"},
    };
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        test_eval(&vs[i]);
        test_backward(&vs[i]);
    }
    test_plan_errors();
    test_lanes();
    TEST_EXIT();
}
