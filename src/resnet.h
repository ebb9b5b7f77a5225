/* resnet.h - the backbone as an executable network: a forward pass from the
 * input (or from any cut point, for cached activations) up to a stop point,
 * and a backward pass through the trainable blocks.
 *
 * Built once from a kt_arch for a maximum batch size, image size, freeze point
 * and stop point: every activation, workspace and gradient buffer is planned
 * and allocated in kt_resnet_init and reused on every call, so the training
 * loop never allocates. Frozen batch norms are folded into their convs (owned
 * copies); trainable blocks own float32 copies of their parameters.
 *
 * Activation layout is [C][N][H][W] (ops.h); avgpool and logits are [N][C].
 */
#ifndef KT_RESNET_H
#define KT_RESNET_H

#include "arch.h"
#include "err.h"
#include "param.h"

typedef struct {
    int batch;        /* maximum images per call */
    int image_size;   /* square input side, e.g. 224 */
    int freeze;       /* cut point index (arch.h): points <= freeze are frozen */
    int stop;         /* last point computed: avgpool for a training head, logits, or any */
    int train;        /* 1: keep activations of the trainable part for backward */
} kt_resnet_plan;

typedef struct kt_resnet kt_resnet;

kt_status kt_resnet_init(kt_resnet **out, const kt_arch *a, const kt_resnet_plan *plan,
                         kt_err *err);
void kt_resnet_free(kt_resnet *r);

/* Runs points (from, stop] on n <= batch images. in is the activation at point
 * `from` ([3][n][S][S] for from = 0, the input). training selects train-mode
 * batch norm in the trainable blocks (and updates their running stats).
 * Returns the stop point's activation, owned by r and valid until the next
 * call. */
const float *kt_resnet_forward(kt_resnet *r, int from, const float *in, int n, int training);
/* Pointer to the last forward's activation at point p (from < p <= stop). */
const float *kt_resnet_activation(const kt_resnet *r, int p);

/* Backward from the stop point's gradient dout (same layout as the forward's
 * result) through the trainable part; accumulates into the params' grad. */
void kt_resnet_backward(kt_resnet *r, const float *dout, int n);

/* Trainable parameters (points > freeze) and the buffers a checkpoint saves.
 * kt_resnet_all_tensors lists every backbone tensor under torchvision names
 * (frozen ones from the arch, unfolded), for writing a full checkpoint. */
int kt_resnet_nparams(const kt_resnet *r);
kt_param *kt_resnet_param(kt_resnet *r, int i);
int kt_resnet_nbuffers(const kt_resnet *r);
kt_buffer *kt_resnet_buffer(kt_resnet *r, int i);

#endif
