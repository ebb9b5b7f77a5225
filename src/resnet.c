/* resnet.c - the backbone as an executable network (see resnet.h).
 *
 * The network is a chain of "units" (a conv and the batch norm after it):
 * the stem unit, then 2 or 3 units per block plus the shortcut's unit.
 *
 * Frozen units (producing points <= freeze) have their batch norm folded into
 * the conv once, at init: W' = W * gamma/sqrt(var+eps) per output channel and
 * b' = beta - mean * gamma/sqrt(var+eps) (+ the conv's own bias, scaled). The
 * frozen forward is then conv GEMMs with a fused bias/ReLU epilogue, and the
 * residual add rides on the last conv's GEMM as beta = 1 accumulation into
 * the shortcut (identity: in place over the block input; projection: over the
 * shortcut conv's output, its bias merged into the last conv's). Activations
 * ping-pong between two buffers, so the frozen part's memory does not grow
 * with depth and nothing is kept for a backward it never gets. It runs
 * data-parallel in image lanes, in chunks of a few images (see lane below):
 * its memory depends on the chunk, not on the batch size.
 *
 * Trainable units own float32 copies of their parameters, gradients and
 * running statistics, and keep what their backward needs: the conv output
 * (the BN's input) and the BN/ReLU output (the next conv's input and the ReLU
 * mask). Backward walks the blocks in reverse with a handful of scratch
 * gradient buffers sized for the largest trainable block.
 *
 * Every buffer is sized in kt_resnet_init for the planned batch and image
 * size; forward and backward only compute shapes for the actual n.
 */
#include "resnet.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "blas.h"
#include "ops.h"

#define BN_MOMENTUM 0.1f /* torchvision's default */
#define KT_LANE_PIXELS (4.0 * 224 * 224) /* input pixels per lane chunk */
#define KT_SPIN_NS 100000 /* the pool spins this long before it sleeps */

typedef struct {
    const kt_conv_desc *cd;
    const kt_bn_desc *bd;
    kt_conv_shape s;        /* at the planned batch; n replaced per call */
    int relu;               /* a ReLU follows the BN inside the unit */
    int trainable;
    float *fw, *fb;         /* frozen: BN folded in, [cout][cin*k*k], [cout] */
    int wino;               /* runs as Winograd F(2x2, 3x3) (see unit_init) */
    float *fu;              /* frozen Winograd unit: fw transformed, [16][cout][cin],
                             * and fw freed */
    /* trainable, all owned: */
    float *w, *dw;          /* [cout][cin*k*k] */
    float *b, *db;          /* conv bias [cout] (Keras) or NULL */
    float *g, *dg, *be, *dbe, *rm, *rv; /* BN [cout] */
    float *smean, *srstd;   /* batch statistics saved for the backward */
    float *scale, *shift;   /* eval-mode BN of a trainable unit */
    int64_t nbt;            /* num_batches_tracked */
    float *c;               /* kept conv output [cout][n][ho][wo] */
    float *y;               /* kept BN (+ReLU) output, NULL for a block's last unit */
} unit;

typedef struct {
    const kt_block_desc *d;
    int nconv;
    unit u[3], down;
    int trainable;
    float *fbias;           /* frozen: last conv's bias (+ shortcut BN's), [cout] */
    float *out;             /* trainable: kept block output [cout][n][ho][wo] */
    size_t in_sz, out_sz;   /* floats per image */
} block;

/* The frozen part runs data-parallel: the batch is split into one slice of
 * images per thread ("lane"), each lane runs the whole frozen network on its
 * slice with single-threaded GEMMs. Every conv, im2col, epilogue and pool then
 * runs on all cores, where splitting each GEMM would parallelise only the
 * GEMMs (and scales poorly on the small late-stage ones). The trainable
 * part, whose batch-norm statistics span the whole batch, runs on the whole
 * batch with each GEMM and loop split over the same threads (kt_resnet_par);
 * the two phases never overlap. OpenBLAS itself stays single-threaded. */
typedef struct {
    struct kt_resnet *r;
    float *P[2], *T1, *T2, *work;
    int i0, ni;             /* this call's images */
    int solo;               /* the only lane: its convs run on the thread pool */
    const float *out;       /* a single lane's frozen output map (no gather) */
    pthread_t th;
} lane;

struct kt_resnet {
    const kt_arch *a;
    kt_resnet_plan plan;
    int npoints, p_avg, p_logits;
    unit stem;
    int pool_h, pool_w;     /* stem max pool output */
    float *stem_out;        /* trainable stem: kept pool output */
    int32_t *argmax;        /* trainable stem: max pool argmax */
    block *blocks;
    int fc_trainable;
    float *fcw, *dfcw, *fcb, *dfcb; /* trainable fc copies (else the arch's) */
    /* frozen part: image lanes, each with ping-pong activations and block
     * intermediates for up to lane_b images (see lane) */
    int nlanes, lane_b;
    lane *lanes;
    float *fout;            /* [C][batch][H][W] frozen output gathered from several lanes */
    pthread_mutex_t mu;     /* guards the sleeps on go and done */
    pthread_cond_t go, done;
    atomic_int gen, ndone, quit; /* job generation, workers finished with it */
    atomic_int sleepers, waiting; /* workers asleep on go; caller asleep on done */
    int64_t spin_ns;        /* how long a waiting side spins before it sleeps */
    int nthreads_started;
    int nthr;               /* threads of the pool (lanes[0] is the caller) */
    int job_kind;           /* 0: frozen lanes, 1: par_for ranges */
    int job_from, job_n;
    const float *job_in;
    void (*job_fn)(const void *ctx, int64_t lo, int64_t hi);
    const void *job_ctx;
    int64_t job_count;
    float *work;            /* im2col workspace of lane 0 and the trainable part */
    float *wu;              /* a trainable Winograd unit's transformed weights,
                             * rebuilt before each use [16][cout][cin] */
    float *avg, *logits;    /* [n][features], [n][classes] */
    /* backward scratch (train only) */
    float *G[2], *SC1, *SC2, *SW1, *SW2, *davg;
    const float **act;      /* [npoints] kept activations of the last forward */
    const float *input;     /* the last forward's input (stem backward) */
    int n;                  /* images in the last forward */
    kt_param *params;
    int nparams;
    kt_buffer *buffers;
    int nbuffers;
    kt_wtensor *tensors;
    int ntensors;
    char (*names)[64];      /* storage for tensors[].name */
};

/* ------------------------------------------------------------- init */

/* Buffers of 2 MiB and more (activations, scratch: gigabytes when
 * everything trains) are advised for transparent huge pages over their
 * 2 MiB-aligned interior. With 4 KiB pages the first step faulted in ~900k
 * pages: a two-epoch full-training run took ~58 s instead of ~51 s on the VM
 * kt was developed on, and later steps ran 0-5% slower (fewer TLB misses on
 * the strided im2col and GEMM packing reads, presumably). The advice is only
 * a hint: it fails harmlessly where THP is off. */
#define HUGE_SZ ((size_t)2 << 20)

static float *alloc_f(size_t n, int *oom)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) *oom = 1;
#ifdef MADV_HUGEPAGE
    uintptr_t lo = ((uintptr_t)p + HUGE_SZ - 1) & ~(uintptr_t)(HUGE_SZ - 1);
    uintptr_t hi = ((uintptr_t)p + n * sizeof(float)) & ~(uintptr_t)(HUGE_SZ - 1);
    if (p && hi > lo) madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#endif
    return p;
}

static size_t conv_out_size(const kt_conv_shape *s) { return (size_t)s->cout * s->ho * s->wo; }

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* Sets up a unit for input [cin][1][h][w] (per-image shape; n set per call)
 * and allocates its parameters: folded copies when frozen, trainable copies
 * otherwise (activations are allocated later, once batch sizes are known). */
static void unit_init(unit *u, const kt_conv_desc *cd, const kt_bn_desc *bd, int h, int w,
                      int relu, int trainable, int *oom)
{
    u->cd = cd, u->bd = bd, u->relu = relu, u->trainable = trainable;
    kt_conv_shape_init(&u->s, 1, cd->cin, h, w, cd->cout, cd->k, cd->stride, cd->pad);
    size_t nw = (size_t)cd->cout * cd->cin * cd->k * cd->k, kk = nw / cd->cout;
    /* Winograd pays once a plane holds a few tiles: not on the 7x7 maps of
     * the last stage at 224 (8x8 of padded tiles, 30% wasted). */
    u->wino = kt_conv_wino_ok(&u->s) && h >= 8 && w >= 8;
    if (!trainable) {
        /* y = (conv(x) + cb - mean) * sc + beta with sc = gamma/sqrt(var+eps):
         * scale the weights by sc and fold the rest into one bias. Done in
         * double so the folded network is as close to the unfolded one as the
         * float32 storage allows. */
        u->fw = alloc_f(nw, oom), u->fb = alloc_f(cd->cout, oom);
        if (*oom) return;
        for (int o = 0; o < cd->cout; o++) {
            double sc = bd->gamma[o] / sqrt((double)bd->var[o] + bd->eps);
            for (size_t i = 0; i < kk; i++) u->fw[o * kk + i] = (float)(cd->w[o * kk + i] * sc);
            double cb = cd->bias ? cd->bias[o] : 0.0;
            u->fb[o] = (float)((cb - bd->mean[o]) * sc + bd->beta[o]);
        }
        if (u->wino) {
            u->fu = alloc_f(16 * (size_t)cd->cout * cd->cin, oom);
            if (*oom) return;
            kt_conv_wino_weights(u->fu, u->fw, &u->s, 0);
            free(u->fw);
            u->fw = NULL;
        }
        return;
    }
    int c = cd->cout;
    u->w = alloc_f(nw, oom), u->dw = alloc_f(nw, oom);
    if (cd->bias) u->b = alloc_f(c, oom), u->db = alloc_f(c, oom);
    u->g = alloc_f(c, oom), u->dg = alloc_f(c, oom), u->be = alloc_f(c, oom);
    u->dbe = alloc_f(c, oom), u->rm = alloc_f(c, oom), u->rv = alloc_f(c, oom);
    u->smean = alloc_f(c, oom), u->srstd = alloc_f(c, oom);
    u->scale = alloc_f(c, oom), u->shift = alloc_f(c, oom);
    if (*oom) return;
    memcpy(u->w, cd->w, sizeof(float) * nw);
    if (cd->bias) memcpy(u->b, cd->bias, sizeof(float) * c);
    memcpy(u->g, bd->gamma, sizeof(float) * c), memcpy(u->be, bd->beta, sizeof(float) * c);
    memcpy(u->rm, bd->mean, sizeof(float) * c), memcpy(u->rv, bd->var, sizeof(float) * c);
}

static void unit_free(unit *u)
{
    free(u->fw), free(u->fu), free(u->fb), free(u->w), free(u->dw), free(u->b), free(u->db);
    free(u->g), free(u->dg), free(u->be), free(u->dbe), free(u->rm), free(u->rv);
    free(u->smean), free(u->srstd), free(u->scale), free(u->shift), free(u->c), free(u->y);
}

static void add_param(kt_resnet *r, const char *base, const char *suffix, float *data, float *grad,
                      const kt_conv_shape *s, int ndim, int no_decay, int backbone)
{
    kt_param *p = &r->params[r->nparams++];
    snprintf(p->name, sizeof p->name, "%.40s%s", base, suffix);
    p->data = data, p->grad = grad, p->ndim = ndim, p->no_decay = no_decay;
    p->backbone = backbone;
    if (ndim == 4) {
        p->shape[0] = s->cout, p->shape[1] = s->cin, p->shape[2] = s->k, p->shape[3] = s->k;
    } else {
        p->shape[0] = s->cout;
    }
    p->numel = 1;
    for (int i = 0; i < ndim; i++) p->numel *= p->shape[i];
}

static void add_buffer(kt_resnet *r, const char *base, const char *suffix, float *data,
                       int64_t *idata, int c)
{
    kt_buffer *b = &r->buffers[r->nbuffers++];
    snprintf(b->name, sizeof b->name, "%.40s%s", base, suffix);
    b->data = data, b->idata = idata;
    b->numel = idata ? 1 : c;
    b->ndim = idata ? 0 : 1;
    b->shape[0] = c;
}

static const int64_t ZERO_I64 = 0;

static void add_tensor(kt_resnet *r, const char *base, const char *suffix, const float *data,
                       const int64_t *idata, int ndim, const int64_t *shape)
{
    kt_wtensor *t = &r->tensors[r->ntensors];
    char *nm = r->names[r->ntensors++];
    snprintf(nm, 64, "%.40s%s", base, suffix);
    t->name = nm, t->data = data, t->idata = idata, t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
}

/* Lists a unit's parameters, buffers and checkpoint tensors. */
static void unit_register(kt_resnet *r, unit *u)
{
    const kt_conv_desc *cd = u->cd;
    const kt_bn_desc *bd = u->bd;
    int64_t ws[4] = {cd->cout, cd->cin, cd->k, cd->k}, cs[1] = {cd->cout};
    if (u->trainable) {
        add_param(r, cd->name, ".weight", u->w, u->dw, &u->s, 4, 0, 1);
        if (u->b) add_param(r, cd->name, ".bias", u->b, u->db, &u->s, 1, 1, 1);
        add_param(r, bd->name, ".weight", u->g, u->dg, &u->s, 1, 1, 1);
        add_param(r, bd->name, ".bias", u->be, u->dbe, &u->s, 1, 1, 1);
        add_buffer(r, bd->name, ".running_mean", u->rm, NULL, cd->cout);
        add_buffer(r, bd->name, ".running_var", u->rv, NULL, cd->cout);
        add_buffer(r, bd->name, ".num_batches_tracked", NULL, &u->nbt, 1);
    }
    int t = u->trainable;
    add_tensor(r, cd->name, ".weight", t ? u->w : cd->w, NULL, 4, ws);
    if (cd->bias) add_tensor(r, cd->name, ".bias", t ? u->b : cd->bias, NULL, 1, cs);
    add_tensor(r, bd->name, ".weight", t ? u->g : bd->gamma, NULL, 1, cs);
    add_tensor(r, bd->name, ".bias", t ? u->be : bd->beta, NULL, 1, cs);
    add_tensor(r, bd->name, ".running_mean", t ? u->rm : bd->mean, NULL, 1, cs);
    add_tensor(r, bd->name, ".running_var", t ? u->rv : bd->var, NULL, 1, cs);
    add_tensor(r, bd->name, ".num_batches_tracked", NULL, t ? &u->nbt : &ZERO_I64, 0, cs);
}

static kt_status start_lanes(kt_resnet *r, kt_err *err);
static void stop_lanes(kt_resnet *r);

static kt_status check_plan(const kt_arch *a, kt_resnet_plan *p, int npoints, kt_err *err)
{
    if (p->batch < 1)
        return kt_err_set(err, KT_ERR_USAGE, "batch size must be at least 1 (got %d)", p->batch);
    if (p->stop < 1 || p->stop >= npoints)
        return kt_err_set(err, KT_ERR_USAGE, "stop point %d out of range 1..%d%s", p->stop,
                          npoints - 1,
                          a->num_classes ? "" : " (the model has no classifier: no logits)");
    if (!p->train) p->freeze = p->stop;
    if (p->freeze < 0 || p->freeze > p->stop)
        return kt_err_set(err, KT_ERR_USAGE, "freeze point %d must be between 0 and the stop point %d",
                          p->freeze, p->stop);
    /* The smallest image every stride still maps to at least one pixel. */
    int c, h, w;
    kt_arch_point_shape(a, 1 + a->nblocks, p->image_size, &c, &h, &w);
    if (p->image_size < 1 || h < 1 || w < 1)
        return kt_err_set(err, KT_ERR_USAGE, "image size %d is too small for this network",
                          p->image_size);
    return KT_OK;
}

kt_status kt_resnet_init(kt_resnet **out, const kt_arch *a, const kt_resnet_plan *plan,
                         kt_err *err)
{
    *out = NULL;
    kt_resnet *r = calloc(1, sizeof *r);
    if (!r) return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    r->a = a, r->plan = *plan;
    r->npoints = 3 + a->nblocks + (a->num_classes > 0);
    r->p_avg = 2 + a->nblocks;
    r->p_logits = a->num_classes > 0 ? 3 + a->nblocks : -1;
    kt_status st = check_plan(a, &r->plan, r->npoints, err);
    if (st != KT_OK) goto fail;
    const int B = r->plan.batch, F = r->plan.freeze, T = r->plan.stop;
    int oom = 0;
    r->nthr = kt_blas_threads() > 1 ? kt_blas_threads() : 1;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    r->spin_ns = cpus < 1 || r->nthr <= cpus ? KT_SPIN_NS : 0;
    r->nlanes = F >= 1 ? (r->nthr < B ? r->nthr : B) : 1;
    /* A lane runs its images in chunks of at most lane_b: a few 224x224
     * images keep each GEMM's operands near the caches (layer1's 1x1 convs
     * run ~25% faster on 4 images than on 16) and still give the late 7x7
     * stages enough columns. Training and the cache ask for 1 (see
     * kt_resnet_plan.chunk): ~4% slower, batch-independent bits. */
    int chunk = r->plan.chunk > 0
                    ? r->plan.chunk
                    : (int)(KT_LANE_PIXELS / ((double)r->plan.image_size * r->plan.image_size));
    r->lane_b = (B + r->nlanes - 1) / r->nlanes;
    if (r->lane_b > chunk) r->lane_b = chunk > 1 ? chunk : 1;
    const int LB = r->lane_b;

    r->blocks = calloc((size_t)a->nblocks, sizeof *r->blocks);
    r->act = calloc((size_t)r->npoints, sizeof *r->act);
    /* upper bounds: 4 units per block + stem; 7 tensors per unit + fc */
    int maxu = 4 * a->nblocks + 1;
    r->params = calloc((size_t)maxu * 4 + 2, sizeof *r->params);
    r->buffers = calloc((size_t)maxu * 3, sizeof *r->buffers);
    r->tensors = calloc((size_t)maxu * 7 + 2, sizeof *r->tensors);
    r->names = calloc((size_t)maxu * 7 + 2, sizeof *r->names);
    if (!r->blocks || !r->act || !r->params || !r->buffers || !r->tensors || !r->names) goto oom;

    /* Shapes and parameters, in network order. Sizes are floats per image. */
    int S = r->plan.image_size;
    /* floats per image: frozen ping-pong P and intermediates T1/T2; trainable
     * gradient ping-pong G, wide scratch SC, narrow scratch SW; workspaces of
     * the frozen (per lane) and trainable parts */
    size_t P = 0, T1 = 0, T2 = 0, G = 0, SC = 0, SW = 0, wsF = 0, wsT = 0, WU = 0;
    unit_init(&r->stem, &a->stem_conv, &a->stem_bn, S, S, 1, F < 1 && T >= 1, &oom);
    if (oom) goto oom;
    unit_register(r, &r->stem);
    kt_conv_shape ss = r->stem.s;
    r->pool_h = (ss.ho + 2 - 3) / 2 + 1, r->pool_w = (ss.wo + 2 - 3) / 2 + 1;
    size_t stem_sz = conv_out_size(&ss), pool_sz = (size_t)ss.cout * r->pool_h * r->pool_w;
    ss.n = r->stem.trainable ? B : LB;
    *(r->stem.trainable ? &wsT : &wsF) = kt_conv_workspace(&ss);
    if (r->stem.trainable) {
        r->stem.c = alloc_f(stem_sz * B, &oom), r->stem.y = alloc_f(stem_sz * B, &oom);
        r->stem_out = alloc_f(pool_sz * B, &oom);
        r->argmax = calloc(pool_sz * B, sizeof(int32_t));
        if (!r->argmax) oom = 1;
        SC = max_sz(SC, stem_sz), G = max_sz(G, pool_sz);
    } else {
        P = max_sz(P, max_sz(stem_sz, pool_sz));
    }
    int h = r->pool_h, w = r->pool_w;
    for (int bi = 0; bi < a->nblocks && bi + 2 <= T && !oom; bi++) {
        block *b = &r->blocks[bi];
        const kt_block_desc *d = &a->blocks[bi];
        b->d = d, b->nconv = d->bottleneck ? 3 : 2;
        b->trainable = bi + 2 > F;
        b->in_sz = (size_t)d->cin * h * w;
        int uh = h, uw = w;
        for (int i = 0; i < b->nconv; i++) {
            unit *u = &b->u[i];
            unit_init(u, &d->conv[i], &d->bn[i], uh, uw, i < b->nconv - 1, b->trainable, &oom);
            if (oom) goto oom;
            unit_register(r, u);
            kt_conv_shape cs = u->s;
            uh = cs.ho, uw = cs.wo;
            size_t osz = conv_out_size(&cs);
            cs.n = b->trainable ? B : LB;
            size_t *ws = b->trainable ? &wsT : &wsF;
            *ws = max_sz(*ws, kt_conv_workspace(&cs));
            if (b->trainable && u->wino) { /* the input gradient's conv too */
                kt_conv_shape ts = cs;
                ts.cin = cs.cout, ts.cout = cs.cin;
                wsT = max_sz(wsT, kt_conv_workspace(&ts));
                WU = max_sz(WU, 16 * (size_t)cs.cout * cs.cin);
            }
            if (b->trainable) {
                u->c = alloc_f(osz * B, &oom);
                if (i < b->nconv - 1) u->y = alloc_f(osz * B, &oom), SW = max_sz(SW, osz);
            } else if (i == 0) {
                T1 = max_sz(T1, osz);
            } else if (i == 1 && b->nconv == 3) {
                T2 = max_sz(T2, osz);
            }
        }
        if (d->has_down) {
            unit_init(&b->down, &d->down, &d->down_bn, h, w, 0, b->trainable, &oom);
            if (oom) goto oom;
            unit_register(r, &b->down);
            kt_conv_shape cs = b->down.s;
            cs.n = b->trainable ? B : LB;
            size_t *ws = b->trainable ? &wsT : &wsF;
            *ws = max_sz(*ws, kt_conv_workspace(&cs));
            if (b->trainable) b->down.c = alloc_f(conv_out_size(&b->down.s) * B, &oom);
        }
        h = uh, w = uw;
        b->out_sz = (size_t)d->cout * h * w;
        if (b->trainable) {
            b->out = alloc_f(b->out_sz * B, &oom);
            G = max_sz(G, max_sz(b->in_sz, b->out_sz)), SC = max_sz(SC, b->out_sz);
        } else {
            P = max_sz(P, b->out_sz);
            /* The block's single epilogue adds the last conv's folded bias and,
             * for a projection shortcut, the shortcut's. */
            b->fbias = alloc_f(d->cout, &oom);
            if (oom) goto oom;
            for (int o = 0; o < d->cout; o++)
                b->fbias[o] = b->u[b->nconv - 1].fb[o] + (d->has_down ? b->down.fb[o] : 0.0f);
        }
    }
    if (oom) goto oom;
    if (T >= r->p_avg) r->avg = alloc_f((size_t)a->features * B, &oom);
    if (T >= r->p_avg && F < r->p_avg && r->plan.train) r->davg = alloc_f((size_t)a->features * B, &oom);
    if (T == r->p_logits) {
        r->logits = alloc_f((size_t)a->num_classes * B, &oom);
        r->fc_trainable = F < r->p_logits;
        int64_t fs[2] = {a->num_classes, a->features}, bs[1] = {a->num_classes};
        const float *tw = a->fc_w, *tb = a->fc_b;
        if (r->fc_trainable) {
            size_t nw = (size_t)a->num_classes * a->features;
            r->fcw = alloc_f(nw, &oom), r->dfcw = alloc_f(nw, &oom);
            r->fcb = alloc_f(a->num_classes, &oom), r->dfcb = alloc_f(a->num_classes, &oom);
            if (oom) goto oom;
            memcpy(r->fcw, a->fc_w, sizeof(float) * nw);
            if (a->fc_b) memcpy(r->fcb, a->fc_b, sizeof(float) * a->num_classes);
            kt_conv_shape fcs = {.cout = a->num_classes, .cin = a->features, .k = 1};
            add_param(r, "fc", ".weight", r->fcw, r->dfcw, &fcs, 4, 0, 0);
            r->params[r->nparams - 1].ndim = 2;
            r->params[r->nparams - 1].numel = (int64_t)a->num_classes * a->features;
            add_param(r, "fc", ".bias", r->fcb, r->dfcb, &fcs, 1, 1, 0);
            tw = r->fcw, tb = r->fcb;
        }
        add_tensor(r, "fc", ".weight", tw, NULL, 2, fs);
        if (tb) add_tensor(r, "fc", ".bias", tb, NULL, 1, bs);
    }
    /* Lane buffers. P[0] also receives a lane's slice of the input (any
     * point up to the cut, the image itself included). */
    r->work = alloc_f(max_sz(wsF, wsT), &oom);
    if (WU) r->wu = alloc_f(WU, &oom);
    r->lanes = calloc((size_t)r->nthr, sizeof *r->lanes);
    if (!r->lanes) goto oom;
    if (P) P = max_sz(P, (size_t)3 * S * S);
    for (int k = 0; k < r->nthr; k++) r->lanes[k].r = r;
    for (int k = 0; k < r->nlanes; k++) {
        lane *L = &r->lanes[k];
        if (P) L->P[0] = alloc_f(P * LB, &oom), L->P[1] = alloc_f(P * LB, &oom);
        if (T1) L->T1 = alloc_f(T1 * LB, &oom);
        if (T2) L->T2 = alloc_f(T2 * LB, &oom);
        L->work = k == 0 ? r->work : alloc_f(wsF, &oom);
    }
    if ((r->nlanes > 1 || LB < B) && F >= 1 && F < r->p_avg) {
        int c, h2, w2;
        kt_arch_point_shape(a, F, S, &c, &h2, &w2);
        r->fout = alloc_f((size_t)c * h2 * w2 * B, &oom);
    }
    if (r->plan.train && F < T) {
        if (G) r->G[0] = alloc_f(G * B, &oom), r->G[1] = alloc_f(G * B, &oom);
        if (SC) r->SC1 = alloc_f(SC * B, &oom), r->SC2 = alloc_f(SC * B, &oom);
        if (SW) r->SW1 = alloc_f(SW * B, &oom), r->SW2 = alloc_f(SW * B, &oom);
    } else if (SC) {
        /* eval-only use of trainable blocks still needs the shortcut scratch */
        r->SC1 = alloc_f(SC * B, &oom);
    }
    if (oom) goto oom;
    if (r->nthr > 1 && (r->nlanes > 1 || (r->plan.train && F < T)) &&
        (st = start_lanes(r, err)) != KT_OK)
        goto fail;
    *out = r;
    return KT_OK;
oom:
    st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory planning the network for batch %d",
                    plan->batch);
fail:
    kt_resnet_free(r);
    return st;
}

void kt_resnet_free(kt_resnet *r)
{
    if (!r) return;
    unit_free(&r->stem);
    for (int i = 0; r->blocks && i < r->a->nblocks; i++) {
        block *b = &r->blocks[i];
        for (int j = 0; j < 3; j++) unit_free(&b->u[j]);
        unit_free(&b->down);
        free(b->fbias), free(b->out);
    }
    free(r->blocks), free(r->stem_out), free(r->argmax);
    free(r->fcw), free(r->dfcw), free(r->fcb), free(r->dfcb);
    stop_lanes(r);
    for (int k = 0; r->lanes && k < r->nthr; k++) {
        lane *L = &r->lanes[k];
        free(L->P[0]), free(L->P[1]), free(L->T1), free(L->T2);
        if (k) free(L->work);
    }
    free(r->lanes), free(r->fout), free(r->work), free(r->wu);
    free(r->avg), free(r->logits), free(r->davg);
    free(r->G[0]), free(r->G[1]), free(r->SC1), free(r->SC2), free(r->SW1), free(r->SW2);
    free(r->act), free(r->params), free(r->buffers), free(r->tensors), free(r->names);
    free(r);
}

/* ---------------------------------------------------------- forward */

static kt_conv_shape shape_n(const unit *u, int n)
{
    kt_conv_shape s = u->s;
    s.n = n;
    return s;
}

/* A frozen unit's shape in lane L: a lone lane's convs use the whole pool. */
static kt_conv_shape shape_lane(const lane *L, const unit *u, int n)
{
    kt_conv_shape s = shape_n(u, n);
    if (L->solo) s.par = kt_resnet_par, s.par_ctx = L->r;
    return s;
}

static void conv_frozen(float *out, float *work, const float *in, const unit *u,
                        const float *bias, const kt_conv_shape *s, int flags)
{
    if (u->fu)
        kt_conv_wino_forward(out, work, in, u->fu, bias, s, flags);
    else
        kt_conv_forward_ex(out, work, in, u->fw, bias, s, flags);
}

/* Frozen block: folded convs, one fused epilogue per conv. xw is x when it
 * may be overwritten (a ping-pong buffer), NULL for the caller's input.
 * Returns where the output went: over x for an identity shortcut, else y. */
static float *block_frozen(lane *L, block *b, const float *x, float *xw, float *y, int n)
{
    unit *last = &b->u[b->nconv - 1];
    kt_conv_shape s0 = shape_lane(L, &b->u[0], n), sl = shape_lane(L, last, n);
    conv_frozen(L->T1, L->work, x, &b->u[0], b->u[0].fb, &s0, KT_CONV_RELU);
    const float *t = L->T1;
    if (b->nconv == 3) {
        kt_conv_shape s1 = shape_lane(L, &b->u[1], n);
        conv_frozen(L->T2, L->work, t, &b->u[1], b->u[1].fb, &s1, KT_CONV_RELU);
        t = L->T2;
    }
    float *o = xw;
    if (b->d->has_down) {
        kt_conv_shape sd = shape_lane(L, &b->down, n);
        conv_frozen(y, L->work, x, &b->down, NULL, &sd, 0);
        o = y;
    } else if (!xw) {
        memcpy(y, x, sizeof(float) * b->in_sz * n);
        o = y;
    }
    /* o already holds the shortcut: the GEMM adds the main path to it (beta =
     * 1), then one pass adds both biases and applies the ReLU. */
    conv_frozen(o, L->work, t, last, b->fbias, &sl, KT_CONV_ADD | KT_CONV_RELU);
    return o;
}

/* Copies images [i0, i0+ni) of t ([c][n][plane]) to or from the compact
 * [c][ni][plane] tensor s. */
static void slice_copy(float *dst, const float *src, int c, int n, int i0, int ni, size_t plane,
                       int gather)
{
    for (int ch = 0; ch < c; ch++) {
        size_t full = ((size_t)ch * n + i0) * plane, part = (size_t)ch * ni * plane;
        if (gather)
            memcpy(dst + part, src + full, sizeof(float) * ni * plane);
        else
            memcpy(dst + full, src + part, sizeof(float) * ni * plane);
    }
}

/* The frozen points (job_from, freeze] for images [i0, i0+ni) of the job,
 * ni <= lane_b. Unless they are the whole job, their slice of the input is
 * gathered into P[0] and a map output is scattered into fout; pooled rows go
 * straight to their place in avg and logits. */
static void chunk_run(lane *L, int i0, int ni)
{
    kt_resnet *r = L->r;
    const kt_arch *a = r->a;
    const int F = r->plan.freeze, from = r->job_from, n = r->job_n, S = r->plan.image_size;
    const float *x = r->job_in;
    float *xw = NULL; /* x when it is a ping-pong buffer we may overwrite */
    int cur = 1, c, h, w;
    if (ni < n) {
        kt_arch_point_shape(a, from, S, &c, &h, &w);
        slice_copy(L->P[0], x, c, n, i0, ni, (size_t)h * w, 1);
        x = xw = L->P[0], cur = 0;
    }
    if (from < 1) {
        kt_conv_shape s = shape_lane(L, &r->stem, ni);
        kt_conv_forward_ex(L->P[1], L->work, x, r->stem.fw, r->stem.fb, &s, KT_CONV_RELU);
        kt_maxpool_forward(L->P[0], NULL, L->P[1], s.cout, ni, s.ho, s.wo, 3, 2, 1, r->pool_h,
                           r->pool_w);
        x = xw = L->P[0], cur = 0;
    }
    for (int bi = from > 1 ? from - 1 : 0; bi + 2 <= F && bi < a->nblocks; bi++) {
        float *o = block_frozen(L, &r->blocks[bi], x, xw, L->P[1 - cur], ni);
        if (o == L->P[1 - cur]) cur = 1 - cur;
        x = xw = o;
    }
    if (F < r->p_avg) {
        if (ni < n) {
            kt_arch_point_shape(a, F, S, &c, &h, &w);
            slice_copy(r->fout, x, c, n, i0, ni, (size_t)h * w, 0);
        }
        L->out = x;
        return;
    }
    kt_arch_point_shape(a, r->p_avg - 1, S, &c, &h, &w);
    float *avg = r->avg + (size_t)i0 * a->features;
    kt_avgpool_forward(avg, x, c, ni, h * w);
    if (F == r->p_logits)
        kt_linear_forward(r->logits + (size_t)i0 * a->num_classes, avg, a->fc_w, a->fc_b, ni,
                          a->features, a->num_classes);
}

static void lane_run(lane *L)
{
    for (int i = 0; i < L->ni; i += L->r->lane_b)
        chunk_run(L, L->i0 + i, L->ni - i < L->r->lane_b ? L->ni - i : L->r->lane_b);
}

/* A lane's part of the current job: its images of the frozen part, or its
 * share of a par_for range. */
static void run_job(lane *L)
{
    kt_resnet *r = L->r;
    if (r->job_kind == 0) {
        lane_run(L);
        return;
    }
    int64_t k = L - r->lanes, T = r->nthr;
    int64_t lo = r->job_count * k / T, hi = r->job_count * (k + 1) / T;
    if (lo < hi) r->job_fn(r->job_ctx, lo, hi);
}

/* The pool hands out thousands of jobs per training step (every GEMM of the
 * trainable part is split over it), a few microseconds apart. Sleeping on a
 * condition variable between them cost a futex call and a wake-up on each
 * side of each job, and the wake-up is slow in this VM (perf: 6% of training
 * in the kernel's futex path, plus the idle wait it does not show). So both
 * sides first spin on the atomic counters for up to KT_SPIN_NS, and sleep
 * only when nothing comes: between steps, while data loads. With more
 * threads than CPUs (--threads above the core count) a spinner would hold
 * the CPU the thread it waits for needs, so then nobody spins (spin_ns 0).
 * A sleeper is counted (sleepers, waiting) before it re-checks under the
 * mutex, and the other side reads the count after its own update: with
 * sequentially consistent atomics one of the two sees the other, so no
 * wake-up is lost. */
static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Spins until *v satisfies (*v != seen) when ne, (*v >= seen) otherwise;
 * returns 0 when the time ran out first. */
static int spin_until(atomic_int *v, int seen, int ne, int64_t spin_ns)
{
    int64_t t0 = now_ns();
    for (int i = 1;; i++) {
        int x = atomic_load(v);
        if (ne ? x != seen : x >= seen) return 1;
        if (i % 64 == 0 && now_ns() - t0 > spin_ns) return 0;
        cpu_relax();
    }
}

/* Runs the current job on every thread, the caller being lane 0. */
static void dispatch(kt_resnet *r)
{
    atomic_store(&r->ndone, 0);
    atomic_fetch_add(&r->gen, 1);
    if (atomic_load(&r->sleepers)) {
        pthread_mutex_lock(&r->mu);
        pthread_cond_broadcast(&r->go);
        pthread_mutex_unlock(&r->mu);
    }
    run_job(&r->lanes[0]);
    if (spin_until(&r->ndone, r->nthr - 1, 0, r->spin_ns)) return;
    pthread_mutex_lock(&r->mu);
    atomic_store(&r->waiting, 1);
    while (atomic_load(&r->ndone) < r->nthr - 1) pthread_cond_wait(&r->done, &r->mu);
    atomic_store(&r->waiting, 0);
    pthread_mutex_unlock(&r->mu);
}

/* fn(ctx, lo, hi) over [0, count) split evenly over the pool; on the
 * caller alone when there is no pool or less than 2 * grain work. Used for
 * the trainable part's per-channel and elementwise passes, between GEMMs
 * (which run on the pool too, split by gemm() in ops.c). */
static void par_for(kt_resnet *r, void (*fn)(const void *, int64_t, int64_t), const void *ctx,
                    int64_t count, int64_t grain)
{
    if (!r->nthreads_started || r->nthreads_started < r->nthr || count < 2 * grain) {
        fn(ctx, 0, count);
        return;
    }
    r->job_kind = 1, r->job_fn = fn, r->job_ctx = ctx, r->job_count = count;
    dispatch(r);
}

static void *lane_main(void *arg)
{
    lane *L = arg;
    kt_resnet *r = L->r;
    int seen = 0;
    for (;;) {
        if (!spin_until(&r->gen, seen, 1, r->spin_ns)) {
            pthread_mutex_lock(&r->mu);
            atomic_fetch_add(&r->sleepers, 1);
            while (atomic_load(&r->gen) == seen) pthread_cond_wait(&r->go, &r->mu);
            atomic_fetch_sub(&r->sleepers, 1);
            pthread_mutex_unlock(&r->mu);
        }
        seen = atomic_load(&r->gen);
        if (atomic_load(&r->quit)) return NULL;
        run_job(L);
        if (atomic_fetch_add(&r->ndone, 1) + 1 == r->nthr - 1 && atomic_load(&r->waiting)) {
            pthread_mutex_lock(&r->mu);
            pthread_cond_signal(&r->done);
            pthread_mutex_unlock(&r->mu);
        }
    }
}

static kt_status start_lanes(kt_resnet *r, kt_err *err)
{
    if (pthread_mutex_init(&r->mu, NULL) || pthread_cond_init(&r->go, NULL) ||
        pthread_cond_init(&r->done, NULL))
        return kt_err_set(err, KT_ERR_RUNTIME, "cannot create thread synchronisation");
    r->nthreads_started = 1; /* the primitives exist */
    for (int k = 1; k < r->nthr; k++) {
        if (pthread_create(&r->lanes[k].th, NULL, lane_main, &r->lanes[k]) != 0)
            return kt_err_set(err, KT_ERR_RUNTIME, "cannot start worker thread %d", k);
        r->nthreads_started = k + 1;
    }
    return KT_OK;
}

static void stop_lanes(kt_resnet *r)
{
    if (!r->nthreads_started) return;
    atomic_store(&r->quit, 1);
    atomic_fetch_add(&r->gen, 1);
    pthread_mutex_lock(&r->mu);
    pthread_cond_broadcast(&r->go);
    pthread_mutex_unlock(&r->mu);
    for (int k = 1; k < r->nthreads_started; k++) pthread_join(r->lanes[k].th, NULL);
    pthread_cond_destroy(&r->go), pthread_cond_destroy(&r->done);
    pthread_mutex_destroy(&r->mu);
}

/* Runs the frozen part on n images, split evenly over the lanes; returns its
 * output (the activation at the freeze point). */
static const float *frozen_forward(kt_resnet *r, int from, const float *in, int n)
{
    int nl = r->nlanes < n ? r->nlanes : n;
    r->job_kind = 0, r->job_from = from, r->job_in = in, r->job_n = n;
    for (int k = 0, i0 = 0; k < r->nthr; k++) {
        int ni = k < nl ? n / nl + (k < n % nl) : 0;
        r->lanes[k].i0 = i0, r->lanes[k].ni = ni;
        i0 += ni;
    }
    if (nl > 1) {
        dispatch(r);
    } else { /* one lane: its convs use the whole pool (lane.solo), unless
              * that would change the GEMM shapes of a batch-independent plan */
        r->lanes[0].solo = r->nthr > 1 && r->plan.chunk != 1;
        lane_run(&r->lanes[0]);
        r->lanes[0].solo = 0;
    }
    const int F = r->plan.freeze;
    if (F == r->p_logits) return r->logits;
    if (F == r->p_avg) return r->avg;
    /* one chunk did everything: its output is the whole batch, in place */
    return n <= r->lane_b && r->lanes[0].ni == n ? r->lanes[0].out : r->fout;
}

/* Per-channel and elementwise passes of the trainable part, as par_for
 * bodies: a context struct and a function over a range of it. */
typedef struct {
    unit *u;
    float *y, *dc;
    const float *dy;
    int64_t m;
    int training;
} bn_job;

static void bn_fwd_range(const void *ctx, int64_t lo, int64_t hi)
{
    const bn_job *j = ctx;
    unit *u = j->u;
    const int64_t m = j->m;
    if (j->training)
        kt_bn_train_forward(j->y + lo * m, u->smean + lo, u->srstd + lo, u->rm + lo, u->rv + lo,
                            u->c + lo * m, u->g + lo, u->be + lo, (int)(hi - lo), m, u->bd->eps,
                            BN_MOMENTUM, u->relu);
    else
        kt_bn_eval_forward(j->y + lo * m, u->c + lo * m, u->scale + lo, u->shift + lo,
                           (int)(hi - lo), m, u->relu);
}

static void bn_bwd_range(const void *ctx, int64_t lo, int64_t hi)
{
    const bn_job *j = ctx;
    unit *u = j->u;
    const int64_t m = j->m;
    /* a unit with its own ReLU gets the gradient at the ReLU's output */
    kt_bn_train_backward(j->dc + lo * m, u->dg + lo, u->dbe + lo, j->dy + lo * m,
                         u->relu ? u->y + lo * m : NULL, u->c + lo * m, u->smean + lo,
                         u->srstd + lo, u->g + lo, (int)(hi - lo), m, 0);
}

/* The trainable stem's 3x3 stride-2 max pool, by channel ranges. */
typedef struct {
    kt_resnet *r;
    const float *x;         /* forward: the stem's output; backward: the pool's gradient */
    float *y;               /* forward: the pool's output; backward: the stem's gradient */
    int n, h, w, backward;
} pool_job;

static void pool_range(const void *ctx, int64_t lo, int64_t hi)
{
    const pool_job *j = ctx;
    const kt_resnet *r = j->r;
    const size_t in_sz = (size_t)j->n * j->h * j->w, out_sz = (size_t)j->n * r->pool_h * r->pool_w;
    if (j->backward)
        kt_maxpool_backward(j->y + lo * in_sz, j->x + lo * out_sz, r->argmax + lo * out_sz,
                            (int)(hi - lo), j->n, j->h, j->w, r->pool_h, r->pool_w);
    else
        kt_maxpool_forward(j->y + lo * out_sz, r->argmax + lo * out_sz, j->x + lo * in_sz,
                           (int)(hi - lo), j->n, j->h, j->w, 3, 2, 1, r->pool_h, r->pool_w);
}

enum { EW_ZERO, EW_ADD_RELU, EW_RELU_GRAD };
typedef struct {
    int op;
    float *y;
    const float *x, *mask;
} ew_job;

static void ew_range(const void *ctx, int64_t lo, int64_t hi)
{
    const ew_job *j = ctx;
    const int64_t n = hi - lo;
    switch (j->op) {
    case EW_ZERO: memset(j->y + lo, 0, sizeof(float) * n); break;
    case EW_ADD_RELU: kt_add_relu(j->y + lo, j->x + lo, n); break;
    default: kt_relu_grad(j->y + lo, j->x + lo, j->mask + lo, n); break;
    }
}

/* Elementwise op over n floats on the pool (16k floats per thread at least). */
static void ew(kt_resnet *r, int op, float *y, const float *x, const float *mask, int64_t n)
{
    ew_job j = {op, y, x, mask};
    par_for(r, ew_range, &j, n, 1 << 14);
}

void kt_resnet_par(void *r, void (*fn)(const void *, int64_t, int64_t), const void *arg,
                   int64_t count)
{
    par_for(r, fn, arg, count, 1);
}

/* A trainable unit's conv shape for n images: its im2col, col2im and
 * epilogue loops run on the pool (kt_conv_shape.par). */
static kt_conv_shape shape_par(kt_resnet *r, const unit *u, int n)
{
    kt_conv_shape s = shape_n(u, n);
    s.par = kt_resnet_par, s.par_ctx = r;
    return s;
}

/* Trainable unit: conv (+ its own bias) into u->c, then BN in train or eval
 * mode into y, then the unit's ReLU. */
static void unit_fwd(kt_resnet *r, unit *u, float *y, const float *x, int n, int training)
{
    kt_conv_shape s = shape_par(r, u, n);
    int64_t m = (int64_t)n * s.ho * s.wo;
    if (u->wino) {
        kt_conv_wino_weights(r->wu, u->w, &s, 0);
        kt_conv_wino_forward(u->c, r->work, x, r->wu, u->b, &s, 0);
    } else {
        kt_conv_forward(u->c, r->work, x, u->w, u->b, &s);
    }
    if (training)
        u->nbt++;
    else
        kt_bn_fold_params(u->scale, u->shift, u->g, u->be, u->rm, u->rv, s.cout, u->bd->eps);
    bn_job j = {u, y, NULL, NULL, m, training};
    par_for(r, bn_fwd_range, &j, s.cout, 1);
}

static void block_train(kt_resnet *r, block *b, const float *x, int n, int training)
{
    const float *t = x;
    for (int i = 0; i < b->nconv; i++) {
        unit *u = &b->u[i];
        unit_fwd(r, u, i < b->nconv - 1 ? u->y : b->out, t, n, training);
        t = u->y;
    }
    int64_t no = (int64_t)b->out_sz * n;
    if (b->d->has_down) unit_fwd(r, &b->down, r->SC1, x, n, training);
    ew(r, EW_ADD_RELU, b->out, b->d->has_down ? r->SC1 : x, NULL, no);
}

const float *kt_resnet_forward(kt_resnet *r, int from, const float *in, int n, int training)
{
    const kt_arch *a = r->a;
    const int F = r->plan.freeze, T = r->plan.stop;
    assert(n >= 1 && n <= r->plan.batch && from >= 0 && from <= F && from < T);
    memset(r->act, 0, sizeof(*r->act) * r->npoints);
    r->act[from] = in, r->input = in, r->n = n;
    const float *x = in;
    if (from < F) x = r->act[F] = frozen_forward(r, from, in, n);
    if (F < 1) {
        unit *u = &r->stem;
        kt_conv_shape s = shape_n(u, n);
        unit_fwd(r, u, u->y, in, n, training);
        pool_job j = {r, u->y, r->stem_out, n, s.ho, s.wo, 0};
        par_for(r, pool_range, &j, s.cout, 1);
        x = r->act[1] = r->stem_out;
    }
    for (int bi = F > 1 ? F - 1 : 0; bi < a->nblocks && bi + 2 <= T; bi++) {
        block *b = &r->blocks[bi];
        block_train(r, b, x, n, training);
        x = r->act[bi + 2] = b->out;
    }
    if (T >= r->p_avg && F < r->p_avg) {
        int c, h, w;
        kt_arch_point_shape(a, r->p_avg - 1, r->plan.image_size, &c, &h, &w);
        kt_avgpool_forward(r->avg, x, c, n, h * w);
        x = r->act[r->p_avg] = r->avg;
    }
    if (T == r->p_logits && F < r->p_logits) {
        kt_linear_forward(r->logits, x, r->fcw, r->fcb, n, a->features, a->num_classes);
        x = r->act[T] = r->logits;
    }
    return x;
}

const float *kt_resnet_activation(const kt_resnet *r, int p)
{
    return p >= 0 && p < r->npoints ? r->act[p] : NULL;
}

/* ---------------------------------------------------------- backward */

/* dy is the gradient at the unit's output: after its ReLU when it has one
 * (u->relu; the BN backward masks it), else at the BN's output. dc
 * (scratch, the size of u->c) receives the gradient at the
 * conv output; dx (may be NULL) accumulates the gradient at the input x, or
 * is overwritten when zero_dx (then dx may alias dy: dy is consumed first). */
static void unit_bwd(kt_resnet *r, unit *u, float *dx, int zero_dx, const float *dy,
                     const float *x, int n, float *dc)
{
    kt_conv_shape s = shape_par(r, u, n);
    int64_t m = (int64_t)n * s.ho * s.wo;
    bn_job j = {u, NULL, dc, dy, m, 1};
    par_for(r, bn_bwd_range, &j, s.cout, 1);
    if (!u->wino) {
        if (dx && zero_dx) ew(r, EW_ZERO, dx, NULL, NULL, (int64_t)s.cin * n * s.h * s.w);
        kt_conv_backward(dx, u->dw, u->db, r->work, dc, x, u->w, &s);
        return;
    }
    /* Winograd: the weight gradient in its domain (r->wu as scratch), and
     * the input gradient as the same kind of conv of dc, with the kernels
     * flipped and cin/cout swapped. */
    kt_conv_wino_weight_grad(u->dw, u->db, r->wu, r->work, dc, x, &s);
    if (!dx) return;
    kt_conv_shape ts = s;
    ts.cin = s.cout, ts.cout = s.cin;
    kt_conv_wino_weights(r->wu, u->w, &s, 1);
    kt_conv_wino_forward(dx, r->work, dc, r->wu, NULL, &ts, zero_dx ? 0 : KT_CONV_ADD);
}

/* out = relu(main(x) + shortcut(x)): the masked gradient feeds both paths;
 * inside the main path each unit's input gradient is masked by the previous
 * unit's ReLU output. Scratch: SC1 the masked gradient, SC2 the last unit's
 * conv gradient, SW1 the narrow units' input gradients, SW2 their conv
 * gradients. */
static void block_bwd(kt_resnet *r, block *b, float *dx, const float *g, const float *x, int n)
{
    int64_t no = (int64_t)b->out_sz * n;
    /* An identity shortcut passes the masked gradient to dx unchanged, so it
     * is written there once and read from there; the first unit, the last
     * to run, then accumulates into it. */
    float *gm = dx && !b->d->has_down ? dx : r->SC1;
    ew(r, EW_RELU_GRAD, gm, g, b->out, no);
    if (b->d->has_down)
        unit_bwd(r, &b->down, dx, 1, gm, x, n, r->SC2);
    const float *gu = gm;
    for (int i = b->nconv - 1; i > 0; i--) {
        unit *u = &b->u[i];
        const float *ux = b->u[i - 1].y;
        unit_bwd(r, u, r->SW1, 1, gu, ux, n, i == b->nconv - 1 ? r->SC2 : r->SW2);
        gu = r->SW1;
    }
    /* dx already holds the shortcut's gradient: accumulate. */
    unit_bwd(r, &b->u[0], dx, 0, gu, x, n, r->SW2);
}

void kt_resnet_backward(kt_resnet *r, const float *dout, int n)
{
    const kt_arch *a = r->a;
    const int F = r->plan.freeze, T = r->plan.stop;
    assert(r->plan.train && n == r->n);
    const float *g = dout;
    if (T == r->p_logits) {
        if (!r->fc_trainable) return;
        float *da = NULL;
        if (F < r->p_avg - 1) {
            da = r->davg;
            memset(da, 0, sizeof(float) * a->features * n);
        }
        kt_linear_backward(da, r->dfcw, r->dfcb, dout, r->avg, r->fcw, n, a->features,
                           a->num_classes);
        g = da;
    }
    int last = (T >= r->p_avg ? a->nblocks + 1 : T) - 2; /* last computed block */
    if (T >= r->p_avg) {
        if (F >= r->p_avg - 1) return; /* nothing trainable below the pool */
        int c, h, w;
        kt_arch_point_shape(a, r->p_avg - 1, r->plan.image_size, &c, &h, &w);
        memset(r->G[0], 0, sizeof(float) * (size_t)c * n * h * w);
        kt_avgpool_backward(r->G[0], g, c, n, h * w);
        g = r->G[0];
    }
    for (int bi = last; bi >= 0 && bi + 2 > F; bi--) {
        block *b = &r->blocks[bi];
        /* The input gradient is needed only when the input is trainable. */
        float *dx = bi + 1 > F ? (g == r->G[0] ? r->G[1] : r->G[0]) : NULL;
        block_bwd(r, b, dx, g, r->act[bi + 1], n);
        g = dx;
    }
    if (F < 1) {
        unit *u = &r->stem;
        kt_conv_shape s = shape_n(u, n);
        int64_t m = (int64_t)s.cout * n * s.ho * s.wo;
        ew(r, EW_ZERO, r->SC1, NULL, NULL, m);
        pool_job j = {r, g, r->SC1, n, s.ho, s.wo, 1};
        par_for(r, pool_range, &j, s.cout, 1);
        unit_bwd(r, u, NULL, 0, r->SC1, r->input, n, r->SC2);
    }
}

int kt_resnet_nparams(const kt_resnet *r) { return r->nparams; }
kt_param *kt_resnet_param(kt_resnet *r, int i) { return &r->params[i]; }
int kt_resnet_nbuffers(const kt_resnet *r) { return r->nbuffers; }
kt_buffer *kt_resnet_buffer(kt_resnet *r, int i) { return &r->buffers[i]; }

const kt_wtensor *kt_resnet_tensors(const kt_resnet *r, int *n)
{
    *n = r->ntensors;
    return r->tensors;
}
