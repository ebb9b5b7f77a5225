/* optim.c - SGD / Adam / AdamW updates and the learning-rate schedules (see optim.h).
 *
 * Arithmetic follows torch's single-tensor CPU path: the per-element work is
 * float32, while scalars that torch computes in Python (the bias corrections
 * 1-b^t, the step size lr/(1-b1^t)) are computed in double and rounded to
 * float once per parameter. That keeps kt within fp32 rounding of torch.
 *
 * All state lives in one allocation made at init: for each parameter one or
 * two buffers of its numel, in parameter order. A buffer that starts at zero
 * reproduces torch's "momentum_buffer = clone(d) at step 1" exactly, because
 * momentum*0 + d == d in floating point.
 */
#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[96];          /* "optim.<param>.exp_avg" */
    kt_param *param;
    float *data;            /* [param->numel], inside kt_optim.mem */
} state_tensor;

struct kt_optim {
    kt_optim_config c;
    kt_param **params;      /* [nparams], not owned */
    int nparams;
    int64_t *offs;          /* [nparams + 1]: where each param starts in the flat element range */
    kt_optim_par par;       /* NULL: updates run on the caller */
    void *par_ctx;
    int per_param;          /* state tensors per parameter: 0, 1 or 2 */
    state_tensor *state;    /* [nparams * per_param] */
    float *mem;             /* all state data, owned */
    int64_t t;
};

kt_status kt_optim_init(kt_optim **out, const kt_optim_config *c, kt_param *const *params, int n,
                        kt_err *err)
{
    kt_optim *o = NULL;
    kt_status st = KT_OK;
    *out = NULL;

    if (c->kind != KT_OPTIM_SGD && c->kind != KT_OPTIM_ADAM && c->kind != KT_OPTIM_ADAMW)
        return kt_err_set(err, KT_ERR_USAGE, "unknown optimizer kind %d", (int)c->kind);
    if (!(c->weight_decay >= 0) || !(c->backbone_lr_mult >= 0))
        return kt_err_set(err, KT_ERR_USAGE,
                          "weight_decay and backbone_lr_mult must be >= 0 (got %g, %g)",
                          c->weight_decay, c->backbone_lr_mult);
    if (c->kind == KT_OPTIM_SGD) {
        if (!(c->momentum >= 0 && c->momentum < 1))
            return kt_err_set(err, KT_ERR_USAGE, "momentum must be in [0, 1) (got %g)",
                              c->momentum);
        if (c->nesterov && c->momentum == 0)
            return kt_err_set(err, KT_ERR_USAGE, "nesterov needs momentum > 0");
    } else {
        if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
            return kt_err_set(err, KT_ERR_USAGE, "betas must be in [0, 1) (got %g, %g)",
                              c->beta1, c->beta2);
        if (!(c->eps > 0))
            return kt_err_set(err, KT_ERR_USAGE, "eps must be > 0 (got %g)", c->eps);
    }

    o = calloc(1, sizeof *o);
    if (!o)
        goto oom;
    o->c = *c;
    o->nparams = n;
    o->per_param = c->kind == KT_OPTIM_SGD ? (c->momentum > 0 ? 1 : 0) : 2;
    o->params = calloc(n > 0 ? (size_t)n : 1, sizeof *o->params);
    o->state = calloc(n * o->per_param > 0 ? (size_t)(n * o->per_param) : 1, sizeof *o->state);
    o->offs = calloc((size_t)n + 1, sizeof *o->offs);
    if (!o->params || !o->state || !o->offs)
        goto oom;
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        o->params[i] = params[i];
        o->offs[i + 1] = o->offs[i] + params[i]->numel;
        total += params[i]->numel * o->per_param;
    }
    o->mem = calloc(total > 0 ? (size_t)total : 1, sizeof *o->mem);
    if (!o->mem)
        goto oom;
    float *p = o->mem;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < o->per_param; k++) {
            state_tensor *s = &o->state[i * o->per_param + k];
            const char *suffix = c->kind == KT_OPTIM_SGD ? "momentum_buffer"
                                 : k == 0              ? "exp_avg"
                                                       : "exp_avg_sq";
            snprintf(s->name, sizeof s->name, "optim.%s.%s", params[i]->name, suffix);
            s->param = params[i];
            s->data = p;
            p += params[i]->numel;
        }
    }
    *out = o;
    return KT_OK;
oom:
    st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory for the optimizer state");
    kt_optim_free(o);
    return st;
}

void kt_optim_free(kt_optim *o)
{
    if (!o)
        return;
    free(o->mem);
    free(o->state);
    free(o->params);
    free(o->offs);
    free(o);
}

kt_optim_name kt_optim_kind(const kt_optim *o) { return o->c.kind; }
int64_t kt_optim_t(const kt_optim *o) { return o->t; }
void kt_optim_set_t(kt_optim *o, int64_t t) { o->t = t; }
int kt_optim_nstate(const kt_optim *o) { return o->nparams * o->per_param; }

float *kt_optim_state(kt_optim *o, int i, const char **name, const kt_param **param)
{
    state_tensor *s = &o->state[i];
    if (name)
        *name = s->name;
    if (param)
        *param = s->param;
    return s->data;
}

static void sgd_param(float *p, float *buf /* NULL without momentum */, const float *g, int64_t n,
                      float lr, float wd, float mom, int nesterov)
{
    for (int64_t i = 0; i < n; i++) {
        float d = g[i];
        if (wd != 0)
            d = d + wd * p[i];
        if (buf) {
            buf[i] = mom * buf[i] + d;
            d = nesterov ? d + mom * buf[i] : buf[i];
        }
        p[i] = p[i] - lr * d;
    }
}

/* step_size = lr/(1-b1^t), bc2_sqrt = sqrt(1-b2^t): the scalars torch derives
 * in Python doubles. decay is the decoupled factor (1 for Adam), l2 the coupled
 * weight decay (0 for AdamW). */
static void adam_param(float *p, float *m, float *v, const float *g, int64_t n, float b1,
                       float b2, float eps, float step_size, float bc2_sqrt, float l2, float decay)
{
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        if (decay != 1)
            p[i] = p[i] * decay;
        if (l2 != 0)
            gi = gi + l2 * p[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] = p[i] - step_size * (m[i] / denom);
    }
}

/* The update and the grad zeroing run over all parameters' elements as one
 * flat range, in pieces of OPT_PIECE floats, so a pool can share them out:
 * ResNet-50's 25 M parameters are ~100 MB per pass, and on one thread the
 * update alone was ~1% of a full-training step while the other threads
 * waited. Every element is updated by itself, so any split gives the same
 * bits. */
#define OPT_PIECE 4096

typedef struct {
    kt_optim *o;
    double lr, bc1, bc2;
    int zero;               /* 1: zero the grads instead of updating */
} step_job;

/* Elements [a, b) of parameter i. */
static void param_part(const step_job *j, int i, int64_t a, int64_t b)
{
    const kt_optim *o = j->o;
    const kt_optim_config *c = &o->c;
    kt_param *p = o->params[i];
    if (j->zero) {
        memset(p->grad + a, 0, sizeof(float) * (size_t)(b - a));
        return;
    }
    double plr = p->backbone ? j->lr * c->backbone_lr_mult : j->lr;
    double wd = p->no_decay && !c->decay_all ? 0 : c->weight_decay;
    if (c->kind == KT_OPTIM_SGD) {
        float *buf = o->per_param ? o->state[i].data + a : NULL;
        sgd_param(p->data + a, buf, p->grad + a, b - a, (float)plr, (float)wd,
                  (float)c->momentum, c->nesterov);
    } else {
        int adamw = c->kind == KT_OPTIM_ADAMW;
        adam_param(p->data + a, o->state[2 * i].data + a, o->state[2 * i + 1].data + a,
                   p->grad + a, b - a, (float)c->beta1, (float)c->beta2, (float)c->eps,
                   (float)(plr / j->bc1), (float)sqrt(j->bc2), adamw ? 0.0f : (float)wd,
                   adamw ? (float)(1 - plr * wd) : 1.0f);
    }
}

/* Pieces [lo, hi) of the flat range. */
static void step_range(const void *arg, int64_t lo, int64_t hi)
{
    const step_job *j = arg;
    const kt_optim *o = j->o;
    const int64_t e0 = lo * OPT_PIECE, e1 = hi * OPT_PIECE;
    for (int i = 0; i < o->nparams; i++) {
        int64_t a = o->offs[i] > e0 ? o->offs[i] : e0;
        int64_t b = o->offs[i + 1] < e1 ? o->offs[i + 1] : e1;
        if (a < b) param_part(j, i, a - o->offs[i], b - o->offs[i]);
    }
}

static void run_all(kt_optim *o, const step_job *j)
{
    int64_t pieces = (o->offs[o->nparams] + OPT_PIECE - 1) / OPT_PIECE;
    if (o->par)
        o->par(o->par_ctx, step_range, j, pieces);
    else
        step_range(j, 0, pieces);
}

void kt_optim_set_par(kt_optim *o, kt_optim_par par, void *ctx)
{
    o->par = par;
    o->par_ctx = ctx;
}

void kt_optim_zero_grad(kt_optim *o)
{
    step_job j = {o, 0, 1, 1, 1};
    run_all(o, &j);
}

void kt_optim_step(kt_optim *o, double lr)
{
    const kt_optim_config *c = &o->c;
    o->t++;
    step_job j = {o, lr, 1 - pow(c->beta1, (double)o->t), 1 - pow(c->beta2, (double)o->t), 0};
    run_all(o, &j);
}

double kt_schedule_lr(const kt_schedule *s, int64_t step)
{
    double lr = s->lr;
    if (step < 0)
        step = 0;
    switch (s->kind) {
    case KT_SCHED_CONSTANT:
        break;
    case KT_SCHED_STEP: {
        int64_t epoch = s->steps_per_epoch > 0 ? step / s->steps_per_epoch : 0;
        int64_t k = s->step_epochs > 0 ? epoch / s->step_epochs : 0;
        lr = s->lr * pow(s->gamma, (double)k);
        break;
    }
    case KT_SCHED_COSINE: {
        /* The cosine starts where the warmup ends and reaches min_lr at total_steps. */
        int64_t span = s->total_steps - s->warmup_steps;
        double x = span > 0 ? (double)(step - s->warmup_steps) / (double)span : 1.0;
        if (x < 0)
            x = 0;
        if (x > 1)
            x = 1;
        lr = s->min_lr + 0.5 * (s->lr - s->min_lr) * (1 + cos(M_PI * x));
        break;
    }
    }
    if (step < s->warmup_steps)
        lr *= (double)(step + 1) / (double)s->warmup_steps;
    return lr;
}
