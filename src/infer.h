/* infer.h - batch inference glue shared by kt embed and kt predict: the model
 * opened for a stop point, the list of input files, and batches of images
 * decoded and preprocessed into the network's input layout.
 *
 * One kt_infer owns the weights, the arch, the planned network and every
 * buffer; nothing is allocated per batch once the first images have grown the
 * decode scratch.
 */
#ifndef KT_INFER_H
#define KT_INFER_H

#include <stdint.h>

#include "arch.h"
#include "err.h"
#include "image.h"
#include "resnet.h"
#include "transform.h"
#include "weights.h"

typedef struct {
    kt_weights *w;
    kt_arch *a;
    kt_resnet *r;           /* NULL when point is the input */
    int point;              /* stop point (arch.h numbering) */
    int batch, size, resize;
    float *input;           /* [3][batch][size][size], network channel order */
    kt_image img;           /* decode scratch */
    kt_transform_ws tws;
    uint8_t *fbuf;          /* file bytes scratch */
    size_t fcap;
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

/* Decodes and preprocesses up to inf->batch files into inf->input (compact
 * [3][*n][S][S]); ok[i] says whether paths[i] was used. A bad image is an
 * error naming the file unless skip_bad, in which case its message goes to
 * warn (one line each, may be NULL) and it is left out. */
kt_status kt_infer_load(kt_infer *inf, const char *const *paths, int count, int skip_bad,
                        int *ok, int *n, void (*warn)(const char *msg), kt_err *err);

/* Runs the network on the n loaded images; returns the stop point's
 * activation: [C][n][H][W] for maps, [n][C] for avgpool and logits, the
 * input itself for the input point. Valid until the next call. */
const float *kt_infer_run(kt_infer *inf, int n);

#endif
