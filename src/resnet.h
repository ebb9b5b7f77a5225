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
 *
 * Threads: the frozen part runs on kt_blas_threads() threads of its own
 * (read at init), each on a share of the images with single-threaded GEMMs;
 * the trainable part uses OpenBLAS's threads. A kt_resnet is used by one
 * thread at a time.
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
    int train;        /* 1: keep activations of the trainable part for backward;
                       * 0: inference only, everything up to stop is frozen
                       * (freeze is taken as stop) */
    int chunk;        /* images per lane chunk of the frozen part (resnet.c);
                       * 0 = automatic (4 at 224x224). 1 = one image per
                       * GEMM: every GEMM of an image then has the same
                       * shape whatever the batch, and OpenBLAS picks its
                       * kernel (and so the rounding) by shape, so an image's
                       * frozen activations do not depend on which images
                       * share its batch: the activation cache relies on it */
} kt_resnet_plan;

typedef struct kt_resnet kt_resnet;

kt_status kt_resnet_init(kt_resnet **out, const kt_arch *a, const kt_resnet_plan *plan,
                         kt_err *err);
void kt_resnet_free(kt_resnet *r);

/* Runs points (from, stop] on n <= batch images. in is the activation at point
 * `from` ([3][n][S][S] for from = 0, the input); from <= freeze (a frozen
 * point, e.g. cached features at the cut). in is read, never written, and must
 * stay valid until kt_resnet_backward when training. training selects
 * train-mode batch norm in the trainable blocks (and updates their running
 * stats and num_batches_tracked); 0 runs them in eval mode.
 * Returns the stop point's activation, owned by r and valid until the next
 * call. */
const float *kt_resnet_forward(kt_resnet *r, int from, const float *in, int n, int training);
/* The last forward's activation at point p, or NULL when it was not kept:
 * kept are `from`, the freeze point, every trainable point and stop (frozen
 * points in between share reused buffers). */
const float *kt_resnet_activation(const kt_resnet *r, int p);

/* Backward from the stop point's gradient dout (same layout as the forward's
 * result) through the trainable part; accumulates into the params' grad. */
void kt_resnet_backward(kt_resnet *r, const float *dout, int n);

/* Runs fn(arg, lo, hi) over a split of [0, count) on r's threads and
 * returns when every part is done (kt_conv_shape.par's contract; r is a
 * kt_resnet *), for other modules' loops between the network's passes,
 * such as the optimizer's update. */
void kt_resnet_par(void *r, void (*fn)(const void *arg, int64_t lo, int64_t hi), const void *arg,
                   int64_t count);

/* Trainable parameters (points > freeze) and the buffers a checkpoint saves,
 * in network order under torchvision names: conv weights (and conv biases of
 * Keras models), BN weight/bias (no_decay); buffers are BN running_mean,
 * running_var and num_batches_tracked (int64, counted from 0 at init). The
 * original fc ("fc.weight", "fc.bias", backbone = 0) is trainable when stop
 * is logits and freeze is below it. */
int kt_resnet_nparams(const kt_resnet *r);
kt_param *kt_resnet_param(kt_resnet *r, int i);
int kt_resnet_nbuffers(const kt_resnet *r);
kt_buffer *kt_resnet_buffer(kt_resnet *r, int i);

/* Every backbone tensor under torchvision names, for writing a full
 * checkpoint: frozen ones as loaded (unfolded, pointing into the arch),
 * trainable ones pointing at the current values; num_batches_tracked of
 * frozen BNs is 0. fc is included when stop is logits. The array is owned by
 * r (pointers stay valid for its lifetime); *n gets the count. */
const kt_wtensor *kt_resnet_tensors(const kt_resnet *r, int *n);

#endif
