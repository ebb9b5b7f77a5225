/* head.c - the classifier head (see head.h).
 *
 * Layer l (0 .. nhidden) is a Linear from width[l] to width[l+1], where
 * width[0] = features and width[nhidden+1] = classes. Every hidden layer keeps
 * its pre-activation z (GELU, SiLU and tanh need it for the backward), its
 * activation a (ReLU's mask), the dropout mask and the dropped output d, which
 * is the next Linear's input. All of it is allocated once for the batch size.
 *
 * SiLU and tanh are computed here rather than in ops.c: they exist only for
 * the head, on [N][hidden] rows that are tiny next to the backbone.
 */
#include "head.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "rng.h"

typedef struct {
    int in, out;
    kt_param w, b;          /* w [out][in], b [out] */
    float *z, *a, *d;       /* hidden layers: [batch][out] pre-activation, activation, dropped */
    uint8_t *mask;          /* [batch][out], 1 = kept */
    float *dz, *da, *dd;    /* their gradients */
} layer;

struct kt_head {
    kt_head_shape shape;
    int hidden[64];         /* shape.hidden points here */
    int batch;
    int nlayers;            /* nhidden + 1 */
    layer *layers;          /* [nlayers] */
    float *logits;          /* [batch][classes] */
    const float *x;         /* input of the last forward, [n][features], not owned */
    int dropped;            /* 1: the last forward applied dropout */
    float *mem;             /* every float buffer, owned */
    uint8_t *masks;         /* every dropout mask, owned */
};

#define KT_HEAD_MAX_HIDDEN ((int)(sizeof((kt_head *)0)->hidden / sizeof(int)))

static void name_param(kt_param *p, int nhidden, int l, const char *what, int in, int out)
{
    if (nhidden == 0)
        snprintf(p->name, sizeof p->name, "fc.%s", what);
    else
        snprintf(p->name, sizeof p->name, "fc.%d.%s", 3 * l, what);
    p->backbone = 0;
    if (strcmp(what, "weight") == 0) {
        p->ndim = 2, p->shape[0] = out, p->shape[1] = in, p->numel = (int64_t)out * in;
        p->no_decay = 0;
    } else {
        p->ndim = 1, p->shape[0] = out, p->numel = out;
        p->no_decay = 1;
    }
}

kt_status kt_head_init(kt_head **out, const kt_head_shape *s, int batch, kt_err *err)
{
    kt_head *h = NULL;
    kt_status st;
    *out = NULL;

    if (s->features <= 0 || s->classes < 2 || batch <= 0)
        return kt_err_set(err, KT_ERR_USAGE, "head: features %d, classes %d, batch %d invalid",
                          s->features, s->classes, batch);
    if (s->nhidden < 0 || s->nhidden > KT_HEAD_MAX_HIDDEN)
        return kt_err_set(err, KT_ERR_USAGE, "head.hidden: at most %d layers (got %d)",
                          KT_HEAD_MAX_HIDDEN, s->nhidden);
    if (!(s->dropout >= 0 && s->dropout < 1))
        return kt_err_set(err, KT_ERR_USAGE, "head.dropout: must be in [0, 1) (got %g)",
                          s->dropout);
    for (int l = 0; l < s->nhidden; l++)
        if (s->hidden[l] <= 0)
            return kt_err_set(err, KT_ERR_USAGE, "head.hidden[%d]: must be > 0 (got %d)", l,
                              s->hidden[l]);

    h = calloc(1, sizeof *h);
    if (!h)
        goto oom;
    h->shape = *s;
    if (s->nhidden > 0)
        memcpy(h->hidden, s->hidden, sizeof(int) * (size_t)s->nhidden);
    h->shape.hidden = h->hidden;
    h->batch = batch;
    h->nlayers = s->nhidden + 1;
    h->layers = calloc((size_t)h->nlayers, sizeof *h->layers);
    if (!h->layers)
        goto oom;

    /* Sizes first, then one allocation carved in order. */
    size_t floats = (size_t)batch * s->classes, bytes = 0;
    for (int l = 0; l < h->nlayers; l++) {
        layer *L = &h->layers[l];
        L->in = l == 0 ? s->features : s->hidden[l - 1];
        L->out = l == s->nhidden ? s->classes : s->hidden[l];
        floats += 2 * ((size_t)L->out * L->in + L->out); /* weight, bias and their grads */
        if (l < s->nhidden) {
            floats += 6 * (size_t)batch * L->out;
            bytes += (size_t)batch * L->out;
        }
    }
    h->mem = calloc(floats, sizeof *h->mem);
    h->masks = calloc(bytes ? bytes : 1, 1);
    if (!h->mem || !h->masks)
        goto oom;
    float *p = h->mem;
    uint8_t *m = h->masks;
    h->logits = p, p += (size_t)batch * s->classes;
    for (int l = 0; l < h->nlayers; l++) {
        layer *L = &h->layers[l];
        size_t nw = (size_t)L->out * L->in, bo = (size_t)batch * L->out;
        name_param(&L->w, s->nhidden, l, "weight", L->in, L->out);
        name_param(&L->b, s->nhidden, l, "bias", L->in, L->out);
        L->w.data = p, p += nw;
        L->w.grad = p, p += nw;
        L->b.data = p, p += L->out;
        L->b.grad = p, p += L->out;
        if (l < s->nhidden) {
            L->z = p, p += bo;
            L->a = p, p += bo;
            L->d = p, p += bo;
            L->dz = p, p += bo;
            L->da = p, p += bo;
            L->dd = p, p += bo;
            L->mask = m, m += bo;
        }
    }
    *out = h;
    return KT_OK;
oom:
    st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory for the head");
    kt_head_free(h);
    return st;
}

void kt_head_free(kt_head *h)
{
    if (!h)
        return;
    free(h->mem);
    free(h->masks);
    free(h->layers);
    free(h);
}

void kt_head_init_params(kt_head *h, uint64_t seed)
{
    /* kaiming_uniform(a=sqrt(5)) gives bound gain*sqrt(3/fan_in) with
     * gain = sqrt(2/(1+5)), i.e. 1/sqrt(fan_in); torch uses the same bound for
     * the bias. Each tensor has its own counter range (a = 2*layer + which). */
    for (int l = 0; l < h->nlayers; l++) {
        layer *L = &h->layers[l];
        double bound = 1.0 / sqrt((double)L->in);
        for (int64_t i = 0; i < L->w.numel; i++)
            L->w.data[i] =
                (float)((2 * kt_rng_uniform(seed, KT_RNG_INIT, 2 * (uint64_t)l, (uint64_t)i) - 1) *
                        bound);
        for (int64_t i = 0; i < L->b.numel; i++)
            L->b.data[i] = (float)((2 * kt_rng_uniform(seed, KT_RNG_INIT, 2 * (uint64_t)l + 1,
                                                       (uint64_t)i) -
                                    1) *
                                   bound);
    }
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void act_forward(kt_activation act, float *a, const float *z, int64_t n)
{
    switch (act) {
    case KT_ACT_RELU:
        kt_relu_forward(a, z, n);
        break;
    case KT_ACT_GELU:
        kt_gelu_forward(a, z, n);
        break;
    case KT_ACT_SILU:
        for (int64_t i = 0; i < n; i++)
            a[i] = z[i] * sigmoidf(z[i]);
        break;
    case KT_ACT_TANH:
        for (int64_t i = 0; i < n; i++)
            a[i] = tanhf(z[i]);
        break;
    }
}

/* dz += da * act'(z) */
static void act_backward(kt_activation act, float *dz, const float *da, const float *z,
                         const float *a, int64_t n)
{
    switch (act) {
    case KT_ACT_RELU:
        kt_relu_backward(dz, da, a, n);
        break;
    case KT_ACT_GELU:
        kt_gelu_backward(dz, da, z, n);
        break;
    case KT_ACT_SILU:
        for (int64_t i = 0; i < n; i++) {
            float s = sigmoidf(z[i]);
            dz[i] += da[i] * s * (1 + z[i] * (1 - s));
        }
        break;
    case KT_ACT_TANH:
        for (int64_t i = 0; i < n; i++)
            dz[i] += da[i] * (1 - a[i] * a[i]);
        break;
    }
}

const float *kt_head_forward(kt_head *h, const float *x, int n, int training, uint64_t seed,
                             int64_t step)
{
    float p = (float)h->shape.dropout;
    int drop = training && p > 0;
    const float *in = x;
    h->x = x;
    h->dropped = drop;
    for (int l = 0; l < h->nlayers; l++) {
        layer *L = &h->layers[l];
        if (l == h->nlayers - 1) {
            kt_linear_forward(h->logits, in, L->w.data, L->b.data, n, L->in, L->out);
            break;
        }
        int64_t m = (int64_t)n * L->out;
        kt_linear_forward(L->z, in, L->w.data, L->b.data, n, L->in, L->out);
        act_forward(h->shape.act, L->a, L->z, m);
        if (drop) {
            /* Element i of layer l at this step: keep when u >= p (probability 1-p). */
            for (int64_t i = 0; i < m; i++)
                L->mask[i] = kt_rng_uniform(seed, KT_RNG_DROPOUT, (uint64_t)step,
                                            ((uint64_t)l << 40) | (uint64_t)i) >= p;
            kt_dropout_forward(L->d, L->a, L->mask, p, m);
            in = L->d;
        } else {
            in = L->a;
        }
    }
    return h->logits;
}

void kt_head_backward(kt_head *h, float *dx, const float *dlogits, int n)
{
    float p = (float)h->shape.dropout;
    const float *dout = dlogits;
    for (int l = h->nlayers - 1; l >= 0; l--) {
        layer *L = &h->layers[l];
        if (l == 0) {
            kt_linear_backward(dx, L->w.grad, L->b.grad, dout, h->x, L->w.data, n, L->in, L->out);
            break;
        }
        layer *P = &h->layers[l - 1];
        int64_t m = (int64_t)n * P->out;
        /* The gradient reaching P's activation goes through its dropout only
         * when the forward applied one. Targets are zeroed: backward ops add. */
        float *dact = h->dropped ? P->dd : P->da;
        memset(dact, 0, sizeof(float) * (size_t)m);
        kt_linear_backward(dact, L->w.grad, L->b.grad, dout, h->dropped ? P->d : P->a, L->w.data,
                           n, L->in, L->out);
        if (h->dropped) {
            memset(P->da, 0, sizeof(float) * (size_t)m);
            kt_dropout_backward(P->da, P->dd, P->mask, p, m);
        }
        memset(P->dz, 0, sizeof(float) * (size_t)m);
        act_backward(h->shape.act, P->dz, P->da, P->z, P->a, m);
        dout = P->dz;
    }
}

int kt_head_nparams(const kt_head *h) { return 2 * h->nlayers; }

kt_param *kt_head_param(kt_head *h, int i)
{
    layer *L = &h->layers[i / 2];
    return i % 2 ? &L->b : &L->w;
}

const kt_head_shape *kt_head_get_shape(const kt_head *h) { return &h->shape; }
