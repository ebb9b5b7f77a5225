/* infer.h - batch inference glue shared by kt embed and kt predict: the model
 * opened for a stop point, the list of input files, and batches of images
 * decoded and preprocessed (loader.h) into the network's input layout.
 *
 * One kt_infer owns the weights, the arch, the planned network, the loader
 * and every buffer; nothing is allocated per batch.
 */
#ifndef KT_INFER_H
#define KT_INFER_H

#include <stdint.h>

#include "arch.h"
#include "err.h"
#include "dataset.h"
#include "loader.h"
#include "resnet.h"
#include "weights.h"

typedef struct {
    kt_weights *w;
    kt_arch *a;
    kt_resnet *r;           /* NULL when point is the input */
    int point;              /* stop point (arch.h numbering) */
    int batch, size, resize;
    kt_dataset ds;          /* the input files, in order */
    kt_loader *loader;
} kt_infer;

/* Loads the model and plans the network up to the point named `layer`
 * (kt_arch_point_find names; NULL = logits). resize/crop: eval geometry. */
kt_status kt_infer_open(kt_infer *inf, const char *model, const char *layer, int batch,
                        int resize, int crop, kt_err *err);
void kt_infer_close(kt_infer *inf);

/* Output shape of the stop point per image: c, h, w (h = w = 1 when the
 * point is a vector: avgpool, logits). */
void kt_infer_shape(const kt_infer *inf, int *c, int *h, int *w);

/* Expands the command line's IMAGE|DIR arguments into files, in argument
 * order; a folder contributes every regular file below it (names starting
 * with '.' skipped), sorted by path. *paths is one allocation (free it). An
 * argument that does not exist is KT_ERR_USAGE naming it; no files at all is
 * KT_ERR_USAGE. */
kt_status kt_infer_list(char ***paths, int *n, char **args, int nargs, kt_err *err);

/* Starts decoding paths[0..n) in order into batches (loader.h worker
 * threads, the eval transform). skip_bad: a bad image is left out of its
 * batch (kt_infer_next reports it) instead of failing the run. */
kt_status kt_infer_start(kt_infer *inf, const char *const *paths, int n, int skip_bad,
                         kt_err *err);
/* The next batch in input order, *b = NULL after the last one. b->samples
 * index paths; b->warnings names the images skipped. A bad image without
 * skip_bad is KT_ERR_DATA naming the file. */
kt_status kt_infer_next(kt_infer *inf, const kt_batch **b, kt_err *err);

/* Prints the batch's warnings (images left out) on stderr, one
 * "kt: warning: skipped ..." line each. */
void kt_infer_warn(const kt_batch *b);

/* Runs the network on a batch's input; returns the stop point's activation:
 * [C][n][H][W] for maps, [n][C] for avgpool and logits, the input itself for
 * the input point. Valid until the next call. */
const float *kt_infer_run(kt_infer *inf, const kt_batch *b);

#endif
