/* head.h - the classifier that replaces the backbone's fc: on the pooled
 * features [N][features], for each hidden size a Linear -> activation ->
 * Dropout, then a final Linear to the classes.
 *
 * Parameter names are those of the equivalent PyTorch module, so checkpoints
 * load into torchvision with model.fc replaced:
 *   no hidden layers:  "fc.weight", "fc.bias"          (nn.Linear)
 *   hidden layers:     "fc.0.weight", "fc.3.weight", ... (nn.Sequential of
 *                      Linear, activation, Dropout per hidden layer, then Linear)
 * Initialisation is PyTorch's default for nn.Linear, kaiming_uniform(a=sqrt(5)),
 * which is U(-1/sqrt(in), 1/sqrt(in)) for the weight and the bias alike, drawn
 * from rng.h (stream KT_RNG_INIT) so it is a function of the seed.
 * Dropout keeps an element with probability 1-p, a function of (seed, step,
 * layer, element) through stream KT_RNG_DROPOUT: a resumed run drops exactly
 * what the uninterrupted one would have.
 */
#ifndef KT_HEAD_H
#define KT_HEAD_H

#include <stdint.h>

#include "err.h"
#include "param.h"
#include "spec.h" /* kt_activation, shared with the job spec */

typedef struct {
    int features;           /* input width, 2048 for ResNet-50 */
    int nhidden;
    const int *hidden;      /* [nhidden] widths (copied by init) */
    kt_activation act;
    double dropout;         /* [0, 1) */
    int classes;
} kt_head_shape;

typedef struct kt_head kt_head;

/* Allocates parameters, gradients and every activation for up to batch rows;
 * the parameters are zero until kt_head_init_params or a checkpoint restore. */
kt_status kt_head_init(kt_head **out, const kt_head_shape *s, int batch, kt_err *err);
void kt_head_free(kt_head *h);

/* PyTorch's default Linear initialisation, drawn from seed. */
void kt_head_init_params(kt_head *h, uint64_t seed);

/* logits = head(x) for n <= batch rows. training = 1 applies dropout with the
 * mask of (seed, step). Returns [n][classes], owned by h, valid until the next
 * forward. Activations are kept for the backward. */
const float *kt_head_forward(kt_head *h, const float *x /* [n][features] */, int n, int training,
                             uint64_t seed, int64_t step);
/* Backward of the last forward: accumulates into the parameters' grad and,
 * when dx is not NULL, into dx [n][features]. */
void kt_head_backward(kt_head *h, float *dx, const float *dlogits /* [n][classes] */, int n);

/* Linear layers' weights then biases, in module order: "fc.0.weight",
 * "fc.0.bias", "fc.3.weight", ... Biases are marked no_decay. */
int kt_head_nparams(const kt_head *h);
kt_param *kt_head_param(kt_head *h, int i);
const kt_head_shape *kt_head_get_shape(const kt_head *h);

#endif
