/* optim.h - optimizers (SGD, Adam, AdamW) and learning-rate schedules.
 *
 * The update rules are PyTorch's (torch.optim 1.13), so a spec ported from a
 * PyTorch script trains the same way:
 *   SGD   d = g + wd*p;  buf = momentum*buf + d;  d = nesterov ? d + momentum*buf : buf;
 *         p -= lr*d                      (dampening 0; buf starts at 0, i.e. = d at step 1)
 *   Adam  g += wd*p (L2, coupled);  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
 *         p -= (lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps)   (eps after the correction)
 *   AdamW p *= 1 - lr*wd (decoupled), then Adam without the L2 term.
 * Each parameter's lr is scaled by backbone_lr_mult when kt_param.backbone is
 * set; kt_param.no_decay parameters (batch norm, biases) get no weight decay
 * unless decay_all is set.
 *
 * The schedule is a pure function of the global step, so a resumed run gets
 * exactly the learning rate it would have had; the optimizer's own state (the
 * moment buffers and the step count t) is exposed for checkpoints.
 */
#ifndef KT_OPTIM_H
#define KT_OPTIM_H

#include <stdint.h>

#include "err.h"
#include "param.h"
#include "spec.h" /* the names kt_optim_name and kt_sched_name, shared with the job spec */

typedef struct {
    kt_optim_name kind;
    double momentum;         /* SGD; 0 = plain SGD (no buffer kept) */
    int nesterov;            /* SGD; needs momentum > 0 */
    double weight_decay;
    double beta1, beta2, eps; /* Adam, AdamW */
    double backbone_lr_mult; /* lr factor for kt_param.backbone params */
    int decay_all;           /* 1: weight decay on no_decay params too */
} kt_optim_config;

typedef struct kt_optim kt_optim;

/* Plans and zeroes the state for params[0..n) (pointers kept: the params must
 * outlive the optimizer). The only allocation; kt_optim_step never allocates.
 * An invalid config (negative lr factor, beta outside [0,1), nesterov without
 * momentum) is KT_ERR_USAGE. */
kt_status kt_optim_init(kt_optim **out, const kt_optim_config *c, kt_param *const *params, int n,
                        kt_err *err);
void kt_optim_free(kt_optim *o);

/* One update of every parameter from its grad, at learning rate lr (from
 * kt_schedule_lr); increments t. Grads are read, not cleared. */
void kt_optim_step(kt_optim *o, double lr);
/* Zeroes every parameter's grad (before a backward, which accumulates). */
void kt_optim_zero_grad(kt_optim *o);

/* A thread pool for kt_optim_step and kt_optim_zero_grad, with
 * kt_conv_shape.par's contract: par(ctx, fn, arg, count) calls fn(arg, lo,
 * hi) over a split of [0, count) and returns when every part is done.
 * The results do not depend on the split. NULL (the default): serial. */
typedef void (*kt_optim_par)(void *ctx, void (*fn)(const void *arg, int64_t lo, int64_t hi),
                             const void *arg, int64_t count);
void kt_optim_set_par(kt_optim *o, kt_optim_par par, void *ctx);

kt_optim_name kt_optim_kind(const kt_optim *o);

/* Updates done so far (Adam's t); set when restoring a checkpoint. */
int64_t kt_optim_t(const kt_optim *o);
void kt_optim_set_t(kt_optim *o, int64_t t);

/* State tensors, for checkpoints: "optim.<param>.momentum_buffer" (SGD with
 * momentum), "optim.<param>.exp_avg" and "optim.<param>.exp_avg_sq" (Adam,
 * AdamW), PyTorch's names. Each has the shape of its parameter (*param).
 * The data is owned by the optimizer and may be written to restore it. */
int kt_optim_nstate(const kt_optim *o);
float *kt_optim_state(kt_optim *o, int i, const char **name, const kt_param **param);

typedef struct {
    kt_sched_name kind;
    double lr;               /* base (peak) learning rate */
    double min_lr;           /* cosine: the value reached at total_steps */
    int64_t warmup_steps;    /* linear ramp lr*(s+1)/warmup_steps for s < warmup_steps */
    int64_t total_steps;     /* cosine: length of the run in steps */
    int64_t steps_per_epoch; /* step: converts the global step to an epoch */
    int step_epochs;         /* step: lr *= gamma every step_epochs epochs */
    double gamma;
} kt_schedule;

/* Learning rate for the update made at global step s (0-based): a pure
 * function of (schedule, s). */
double kt_schedule_lr(const kt_schedule *s, int64_t step);

#endif
