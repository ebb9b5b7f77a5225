/* t_optim.c - optimizer updates against torch.optim's formulas written out in
 * double precision, decay and lr-multiplier rules, schedules, and state
 * save/restore giving bit-identical continuations. */
#include <stdlib.h>

#include "optim.h"
#include "test.h"

#define N 7

typedef struct {
    kt_param p;
    float data[N], grad[N];
} tparam;

static void tparam_init(tparam *t, const char *name, int no_decay, int backbone, float base)
{
    memset(t, 0, sizeof *t);
    snprintf(t->p.name, sizeof t->p.name, "%s", name);
    t->p.data = t->data;
    t->p.grad = t->grad;
    t->p.numel = N;
    t->p.ndim = 1;
    t->p.shape[0] = N;
    t->p.no_decay = no_decay;
    t->p.backbone = backbone;
    for (int i = 0; i < N; i++)
        t->data[i] = base + 0.37f * (float)i - 1.1f;
}

/* A deterministic gradient that depends on the step and the current weights,
 * like a real loss would. */
static void fill_grad(tparam *t, int step)
{
    for (int i = 0; i < N; i++)
        t->grad[i] = 0.3f * t->data[i] + 0.05f * (float)((i * 7 + step * 3) % 11) - 0.25f;
}

static double maxrel(const float *a, const double *b, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]) / (fabs(b[i]) + 1e-6);
        if (d > m)
            m = d;
    }
    return m;
}

/* torch.optim.SGD in double: d = g + wd p; buf = clone(d) at step 1, else
 * mom*buf + (1-dampening) d; nesterov: d += mom*buf else d = buf; p -= lr d. */
static void ref_sgd(double *p, double *buf, const double *g, int first, double lr, double mom,
                    double wd, int nesterov)
{
    for (int i = 0; i < N; i++) {
        double d = g[i] + wd * p[i];
        buf[i] = first ? d : mom * buf[i] + d;
        d = nesterov ? d + mom * buf[i] : buf[i];
        p[i] -= lr * d;
    }
}

static void ref_adam(double *p, double *m, double *v, const double *gin, int t, double lr,
                     double b1, double b2, double eps, double wd, int adamw)
{
    for (int i = 0; i < N; i++) {
        double g = gin[i];
        if (adamw)
            p[i] *= 1 - lr * wd;
        else
            g += wd * p[i];
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        double denom = sqrt(v[i]) / sqrt(1 - pow(b2, t)) + eps;
        p[i] -= lr / (1 - pow(b1, t)) * m[i] / denom;
    }
}

static void test_sgd(int nesterov, double wd)
{
    tparam a;
    tparam_init(&a, "w", 0, 0, 0.5f);
    kt_param *ps[1] = {&a.p};
    kt_optim_config c = {.kind = KT_OPTIM_SGD, .momentum = 0.9, .nesterov = nesterov,
                         .weight_decay = wd, .backbone_lr_mult = 1};
    kt_optim *o;
    kt_err err;
    CHECK(kt_optim_init(&o, &c, ps, 1, &err) == KT_OK, "sgd init");
    double p[N], buf[N] = {0}, g[N];
    for (int i = 0; i < N; i++)
        p[i] = a.data[i];
    double worst = 0;
    for (int s = 1; s <= 5; s++) {
        fill_grad(&a, s);
        for (int i = 0; i < N; i++)
            g[i] = a.grad[i];
        kt_optim_step(o, 0.05);
        ref_sgd(p, buf, g, s == 1, 0.05, 0.9, wd, nesterov);
        double r = maxrel(a.data, p, N);
        if (r > worst)
            worst = r;
        /* Follow kt's own weights so rounding does not compound into the next gradient. */
        for (int i = 0; i < N; i++)
            p[i] = a.data[i];
        const float *sb = kt_optim_state(o, 0, NULL, NULL);
        for (int i = 0; i < N; i++)
            buf[i] = sb[i];
    }
    CHECK(worst < 1e-5, "sgd nesterov=%d wd=%g matches torch formula (max rel %.2g)", nesterov, wd,
          worst);
    CHECK(kt_optim_t(o) == 5, "sgd counts steps");
    kt_optim_free(o);
}

/* A hand-computed case: p=1, g=0.5 constant, lr 0.1, momentum 0.9, no decay:
 * step 1 buf=0.5 p=0.95; step 2 buf=0.95 p=0.855; step 3 buf=1.355 p=0.7195. */
static void test_sgd_by_hand(void)
{
    float pd = 1, gd = 0.5f;
    kt_param p = {.name = "x", .data = &pd, .grad = &gd, .numel = 1, .ndim = 0};
    kt_param *ps[1] = {&p};
    kt_optim_config c = {.kind = KT_OPTIM_SGD, .momentum = 0.9, .backbone_lr_mult = 1};
    kt_optim *o;
    kt_err err;
    kt_optim_init(&o, &c, ps, 1, &err);
    kt_optim_step(o, 0.1);
    CHECK(fabsf(pd - 0.95f) < 1e-6f, "sgd by hand step 1 (%.7f)", pd);
    kt_optim_step(o, 0.1);
    CHECK(fabsf(pd - 0.855f) < 1e-6f, "sgd by hand step 2 (%.7f)", pd);
    kt_optim_step(o, 0.1);
    CHECK(fabsf(pd - 0.7195f) < 1e-6f, "sgd by hand step 3 (%.7f)", pd);
    kt_optim_free(o);
}

static void test_adam(int adamw, double wd)
{
    tparam a;
    tparam_init(&a, "w", 0, 0, 0.2f);
    kt_param *ps[1] = {&a.p};
    kt_optim_config c = {.kind = adamw ? KT_OPTIM_ADAMW : KT_OPTIM_ADAM, .weight_decay = wd,
                         .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .backbone_lr_mult = 1};
    kt_optim *o;
    kt_err err;
    CHECK(kt_optim_init(&o, &c, ps, 1, &err) == KT_OK, "adam init");
    double p[N], m[N] = {0}, v[N] = {0}, g[N];
    double worst = 0;
    for (int s = 1; s <= 6; s++) {
        for (int i = 0; i < N; i++)
            p[i] = a.data[i];
        fill_grad(&a, s);
        for (int i = 0; i < N; i++)
            g[i] = a.grad[i];
        kt_optim_step(o, 1e-2);
        ref_adam(p, m, v, g, s, 1e-2, 0.9, 0.999, 1e-8, wd, adamw);
        double r = maxrel(a.data, p, N);
        if (r > worst)
            worst = r;
        const float *sm = kt_optim_state(o, 0, NULL, NULL), *sv = kt_optim_state(o, 1, NULL, NULL);
        for (int i = 0; i < N; i++)
            m[i] = sm[i], v[i] = sv[i];
    }
    CHECK(worst < 2e-6, "%s wd=%g matches torch formula (max rel %.2g)", adamw ? "adamw" : "adam",
          wd, worst);
    kt_optim_free(o);
}

/* eps after the bias correction: with eps large next to |g|, one step moves
 * p by lr*|g|/(|g|+eps); eps before the correction would give a step 30x smaller. */
static void test_adam_eps_placement(void)
{
    float pd = 0, gd = 0.01f;
    kt_param p = {.name = "x", .data = &pd, .grad = &gd, .numel = 1};
    kt_param *ps[1] = {&p};
    kt_optim_config c = {.kind = KT_OPTIM_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 0.1,
                         .backbone_lr_mult = 1};
    kt_optim *o;
    kt_err err;
    kt_optim_init(&o, &c, ps, 1, &err);
    kt_optim_step(o, 1.0);
    double want = -0.01 / (0.01 + 0.1);
    CHECK(fabs(pd - want) < 1e-6, "adam eps after bias correction (%.7f want %.7f)", pd, want);
    kt_optim_free(o);
}

static void test_decay_rules(void)
{
    tparam w, b, bb;
    tparam_init(&w, "fc.weight", 0, 0, 1);
    tparam_init(&b, "fc.bias", 1, 0, 1);
    tparam_init(&bb, "layer4.0.conv1.weight", 0, 1, 1);
    kt_param *ps[3] = {&w.p, &b.p, &bb.p};
    for (int decay_all = 0; decay_all <= 1; decay_all++) {
        tparam_init(&w, "fc.weight", 0, 0, 1);
        tparam_init(&b, "fc.bias", 1, 0, 1);
        tparam_init(&bb, "layer4.0.conv1.weight", 0, 1, 1);
        kt_optim_config c = {.kind = KT_OPTIM_SGD, .weight_decay = 0.5, .backbone_lr_mult = 0.1,
                             .decay_all = decay_all};
        kt_optim *o;
        kt_err err;
        kt_optim_init(&o, &c, ps, 3, &err);
        /* zero gradients: only weight decay moves the weights */
        kt_optim_step(o, 0.2);
        float w0 = 1 + 0.37f * 3 - 1.1f;
        CHECK(fabsf(w.data[3] - w0 * (1 - 0.2f * 0.5f)) < 1e-6f, "decay on weights (all=%d)",
              decay_all);
        float wantb = decay_all ? w0 * (1 - 0.2f * 0.5f) : w0;
        CHECK(fabsf(b.data[3] - wantb) < 1e-6f, "no_decay param %s (all=%d)",
              decay_all ? "decayed when asked" : "not decayed", decay_all);
        CHECK(fabsf(bb.data[3] - w0 * (1 - 0.02f * 0.5f)) < 1e-6f,
              "backbone_lr_mult scales the backbone lr (all=%d)", decay_all);
        kt_optim_free(o);
    }
}

/* Run 6 steps; separately run 3, copy the state into a fresh optimizer (as a
 * checkpoint restore does) and run 3 more: the weights must be bit-identical. */
static void test_restore(kt_optim_name kind)
{
    kt_optim_config c = {.kind = kind, .momentum = 0.9, .weight_decay = 1e-2, .beta1 = 0.9,
                         .beta2 = 0.99, .eps = 1e-8, .backbone_lr_mult = 0.5};
    tparam a, b;
    kt_param *ps[2] = {&a.p, &b.p};
    kt_schedule sch = {.kind = KT_SCHED_COSINE, .lr = 0.1, .min_lr = 0.001, .warmup_steps = 2,
                       .total_steps = 6};
    kt_err err;
    float full[2][N];

    tparam_init(&a, "a", 0, 1, 0.3f);
    tparam_init(&b, "b", 1, 0, -0.3f);
    kt_optim *o;
    kt_optim_init(&o, &c, ps, 2, &err);
    for (int s = 0; s < 6; s++) {
        fill_grad(&a, s), fill_grad(&b, s);
        kt_optim_step(o, kt_schedule_lr(&sch, s));
    }
    memcpy(full[0], a.data, sizeof full[0]);
    memcpy(full[1], b.data, sizeof full[1]);
    kt_optim_free(o);

    tparam_init(&a, "a", 0, 1, 0.3f);
    tparam_init(&b, "b", 1, 0, -0.3f);
    kt_optim_init(&o, &c, ps, 2, &err);
    for (int s = 0; s < 3; s++) {
        fill_grad(&a, s), fill_grad(&b, s);
        kt_optim_step(o, kt_schedule_lr(&sch, s));
    }
    int ns = kt_optim_nstate(o);
    float saved[4][N];
    for (int i = 0; i < ns; i++)
        memcpy(saved[i], kt_optim_state(o, i, NULL, NULL), sizeof saved[i]);
    int64_t t = kt_optim_t(o);
    kt_optim_free(o);

    kt_optim_init(&o, &c, ps, 2, &err);
    for (int i = 0; i < ns; i++)
        memcpy(kt_optim_state(o, i, NULL, NULL), saved[i], sizeof saved[i]);
    kt_optim_set_t(o, t);
    for (int s = 3; s < 6; s++) {
        fill_grad(&a, s), fill_grad(&b, s);
        kt_optim_step(o, kt_schedule_lr(&sch, s));
    }
    CHECK(memcmp(full[0], a.data, sizeof full[0]) == 0 &&
              memcmp(full[1], b.data, sizeof full[1]) == 0,
          "%s: restored state continues bit-identically", kt_spec_optim_name(kind));
    const char *name;
    const kt_param *owner;
    kt_optim_state(o, ns - 1, &name, &owner);
    CHECK(owner == &b.p && strncmp(name, "optim.b.", 8) == 0, "%s: state tensor named %s",
          kt_spec_optim_name(kind), name);
    kt_optim_free(o);
}

static void test_bad_config(void)
{
    kt_err err;
    kt_optim *o;
    kt_optim_config c = {.kind = KT_OPTIM_SGD, .nesterov = 1, .backbone_lr_mult = 1};
    CHECK(kt_optim_init(&o, &c, NULL, 0, &err) == KT_ERR_USAGE && strstr(err.msg, "nesterov"),
          "nesterov without momentum refused: %s", err.msg);
    kt_optim_config d = {.kind = KT_OPTIM_ADAM, .beta1 = 1.0, .beta2 = 0.9, .eps = 1e-8,
                         .backbone_lr_mult = 1};
    CHECK(kt_optim_init(&o, &d, NULL, 0, &err) == KT_ERR_USAGE && strstr(err.msg, "beta"),
          "beta1 = 1 refused: %s", err.msg);
}

static void test_schedules(void)
{
    kt_schedule c = {.kind = KT_SCHED_CONSTANT, .lr = 0.1};
    CHECK(kt_schedule_lr(&c, 0) == 0.1 && kt_schedule_lr(&c, 12345) == 0.1, "constant");

    kt_schedule w = {.kind = KT_SCHED_CONSTANT, .lr = 0.1, .warmup_steps = 4};
    CHECK(fabs(kt_schedule_lr(&w, 0) - 0.025) < 1e-15 && fabs(kt_schedule_lr(&w, 2) - 0.075) < 1e-15 &&
              kt_schedule_lr(&w, 3) == 0.1 && kt_schedule_lr(&w, 4) == 0.1,
          "linear warmup reaches lr at the last warmup step");

    kt_schedule st = {.kind = KT_SCHED_STEP, .lr = 1, .steps_per_epoch = 10, .step_epochs = 3,
                      .gamma = 0.1};
    CHECK(kt_schedule_lr(&st, 29) == 1 && fabs(kt_schedule_lr(&st, 30) - 0.1) < 1e-15 &&
              fabs(kt_schedule_lr(&st, 65) - 0.01) < 1e-15,
          "step every 3 epochs");
    kt_schedule cs = {.kind = KT_SCHED_COSINE, .lr = 0.1, .min_lr = 0.001, .warmup_steps = 10,
                      .total_steps = 110};
    int mono = 1;
    for (int s = 11; s < 110; s++)
        mono &= kt_schedule_lr(&cs, s) <= kt_schedule_lr(&cs, s - 1);
    CHECK(kt_schedule_lr(&cs, 9) == 0.1 && kt_schedule_lr(&cs, 10) == 0.1 && mono &&
              fabs(kt_schedule_lr(&cs, 60) - 0.0505) < 1e-12 &&
              fabs(kt_schedule_lr(&cs, 110) - 0.001) < 1e-15,
          "cosine: peak after warmup, half way at the middle, min_lr at the end, decreasing");
    double a = kt_schedule_lr(&cs, 77);
    kt_schedule_lr(&cs, 3);
    CHECK(kt_schedule_lr(&cs, 77) == a, "schedule is a pure function of the step");
}

/* A stand-in pool: three uneven parts, run last first. */
static int pool_calls;
static void pool3(void *ctx, void (*fn)(const void *, int64_t, int64_t), const void *arg,
                  int64_t count)
{
    (void)ctx;
    pool_calls++;
    fn(arg, count / 2, count);
    fn(arg, count / 3, count / 2);
    fn(arg, 0, count / 3);
}

/* The update split over a pool gives the serial update's bits: parameters
 * of sizes that straddle the pool's pieces, mixed decay and lr rules. */
static void test_par(kt_optim_name kind)
{
    enum { NP = 4 };
    const int64_t sizes[NP] = {5000, 3, 9001, 4096};
    kt_param p[2][NP];
    float *mem[2][NP][2];
    kt_optim *o[2] = {NULL, NULL};
    kt_optim_config c = {.kind = kind, .momentum = 0.9, .nesterov = kind == KT_OPTIM_SGD,
                         .weight_decay = 1e-2, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8,
                         .backbone_lr_mult = 0.3};
    kt_err err;
    for (int v = 0; v < 2; v++) {
        kt_param *pp[NP];
        for (int i = 0; i < NP; i++) {
            memset(&p[v][i], 0, sizeof p[v][i]);
            snprintf(p[v][i].name, sizeof p[v][i].name, "p%d", i);
            mem[v][i][0] = malloc(sizeof(float) * (size_t)sizes[i]);
            mem[v][i][1] = malloc(sizeof(float) * (size_t)sizes[i]);
            p[v][i].data = mem[v][i][0], p[v][i].grad = mem[v][i][1];
            p[v][i].numel = sizes[i], p[v][i].ndim = 1, p[v][i].shape[0] = sizes[i];
            p[v][i].no_decay = i == 1, p[v][i].backbone = i >= 2;
            for (int64_t k = 0; k < sizes[i]; k++)
                p[v][i].data[k] = 0.01f * (float)((k * 13 + i) % 97) - 0.4f;
            pp[i] = &p[v][i];
        }
        if (kt_optim_init(&o[v], &c, pp, NP, &err) != KT_OK)
            CHECK(0, "pool test: init: %s", err.msg);
    }
    if (!o[0] || !o[1])
        goto done;
    kt_optim_set_par(o[1], pool3, NULL);
    pool_calls = 0;
    int same = 1, zeroed = 1;
    for (int step = 0; step < 3; step++) {
        for (int v = 0; v < 2; v++) {
            for (int i = 0; i < NP; i++)
                for (int64_t k = 0; k < sizes[i]; k++)
                    p[v][i].grad[k] = 1.0f + (float)k; /* must be cleared */
            kt_optim_zero_grad(o[v]);
            for (int i = 0; i < NP; i++)
                for (int64_t k = 0; k < sizes[i]; k++) {
                    zeroed &= p[v][i].grad[k] == 0.0f;
                    p[v][i].grad[k] = 0.3f * p[v][i].data[k] + 0.001f * (float)((k + step) % 17);
                }
            kt_optim_step(o[v], 0.05);
        }
        for (int i = 0; i < NP; i++)
            same &= memcmp(p[0][i].data, p[1][i].data, sizeof(float) * (size_t)sizes[i]) == 0;
        for (int k = 0; k < kt_optim_nstate(o[0]); k++) {
            const kt_param *sp;
            const float *a = kt_optim_state(o[0], k, NULL, &sp), *b = kt_optim_state(o[1], k, NULL, NULL);
            same &= memcmp(a, b, sizeof(float) * (size_t)sp->numel) == 0;
        }
    }
    CHECK(zeroed, "%s: kt_optim_zero_grad clears every grad, serial and on a pool",
          kind == KT_OPTIM_SGD ? "sgd" : "adamw");
    CHECK(same && pool_calls == 6, "%s: on a pool of uneven parts, parameters and state equal "
          "the serial update's bit for bit (%d pool calls)", kind == KT_OPTIM_SGD ? "sgd" : "adamw",
          pool_calls);
done:
    for (int v = 0; v < 2; v++) {
        kt_optim_free(o[v]);
        for (int i = 0; i < NP; i++) free(mem[v][i][0]), free(mem[v][i][1]);
    }
}

int main(void)
{
    test_sgd_by_hand();
    test_sgd(0, 0);
    test_sgd(0, 1e-4);
    test_sgd(1, 1e-2);
    test_adam(0, 0);
    test_adam(0, 1e-2);
    test_adam(1, 1e-1);
    test_adam_eps_placement();
    test_decay_rules();
    test_restore(KT_OPTIM_SGD);
    test_restore(KT_OPTIM_ADAM);
    test_restore(KT_OPTIM_ADAMW);
    test_bad_config();
    test_schedules();
    test_par(KT_OPTIM_SGD);
    test_par(KT_OPTIM_ADAMW);
    TEST_EXIT();
}
