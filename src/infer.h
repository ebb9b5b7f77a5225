/* infer.h - batch inference glue shared by kt embed, kt predict and kt eval:
 * the model opened for a stop point, the list of input files, and batches of
 * images decoded and preprocessed (loader.h) into the network's input layout.
 *
 * A MODEL is a pretrained network (torchvision safetensors, TF.js
 * model.json) or a kt checkpoint. A checkpoint brings everything inference
 * needs in its metadata (checkpoint.h): the class names, the head (which may
 * have hidden layers, so it runs after avgpool, not as the arch's fc), the
 * eval geometry (resize, crop) and the normalisation. Those are used as they
 * are; only an explicit resize/crop from the caller overrides the geometry.
 *
 * One kt_infer owns the weights, the arch, the planned network, the head,
 * the loader and every buffer; nothing is allocated per batch.
 */
#ifndef KT_INFER_H
#define KT_INFER_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "arch.h"
#include "checkpoint.h"
#include "dataset.h"
#include "err.h"
#include "head.h"
#include "loader.h"
#include "resnet.h"
#include "weights.h"

typedef struct {
    kt_weights *w;
    kt_arch *a;
    kt_resnet *r;           /* NULL when point is the input */
    kt_head *head;          /* a checkpoint's head, run on avgpool; NULL otherwise */
    cJSON *meta;            /* a checkpoint's kt metadata; NULL for pretrained files */
    kt_ckpt_info info;      /* parsed meta (classes point into it) */
    int point;              /* stop point of the backbone (arch.h numbering) */
    int classify;           /* 1: kt_infer_run returns the classifier's logits */
    int nclasses;           /* classifier outputs; 0 when the model has none */
    const char *const *classes; /* [nclasses] class names (a checkpoint's or a labels
                             * file's; NULL entries unnamed), or NULL */
    char **labels;          /* [nclasses] owned names from kt_infer_labels */
    int batch, size, resize;
    kt_norm norm;           /* the input normalisation in use */
    kt_dataset ds;          /* the input files, in order */
    kt_loader *loader;
} kt_infer;

/* Loads the model and plans the network up to the point named `layer`
 * (kt_arch_point_find names). layer NULL means the classifier: a
 * checkpoint's head on avgpool, or the file's own fc (logits); "logits" on a
 * checkpoint is the same. A model without a classifier is KT_ERR_USAGE then
 * (the wrong file was given); a damaged file or checkpoint metadata is
 * KT_ERR_RUNTIME. resize/crop: eval geometry; <= 0 takes the checkpoint's
 * (a pretrained file: 256 / 224). */
kt_status kt_infer_open(kt_infer *inf, const char *model, const char *layer, int batch,
                        int resize, int crop, kt_err *err);
void kt_infer_close(kt_infer *inf);

/* Class names for the classifier from a file: one per line, a JSON array or
 * a JSON object {"0": "tench", ...}; they replace the checkpoint's. path NULL:
 * for a TF.js model whose package holds assets/labels.json beside the model
 * folder (the Keras weights package), that file; else nothing changes. An
 * index outside the classes, or a file that cannot be read, is KT_ERR_USAGE
 * naming the file. */
kt_status kt_infer_labels(kt_infer *inf, const char *model, const char *path, kt_err *err);
/* Name of class c: its label, or its index in decimal written into buf. */
const char *kt_infer_class_name(const kt_infer *inf, int c, char *buf, int size);
/* Ranks row [nclasses] of logits: idx[0..k) the k largest, largest first,
 * ties to the lower index (torch.argmax picks the same first class). */
void kt_infer_top_k(int *idx, const float *logits, int nclasses, int k);

/* Output shape of the stop point per image: c, h, w (h = w = 1 when the
 * point is a vector: avgpool, logits). */
void kt_infer_shape(const kt_infer *inf, int *c, int *h, int *w);

/* Expands the command line's IMAGE|DIR|- arguments into files, in argument
 * order; a folder contributes every regular file below it (names starting
 * with '.' skipped), sorted by path. "-" reads one path per line from stdin
 * (empty lines skipped, a trailing \r dropped); such a path that does not
 * exist is kept, for the loader to report as a bad image, since a pipeline's
 * file may vanish between listing and reading. *paths is one allocation (free
 * it). A command-line argument that does not exist is KT_ERR_USAGE naming it;
 * no files at all is KT_ERR_USAGE. */
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

/* Calls fn(path index, message) for every image of batch b left out as bad,
 * in input order. The message is the loader's (it names the file). */
void kt_infer_skipped(const kt_infer *inf, const kt_batch *b,
                      void (*fn)(void *ctx, int index, const char *msg), void *ctx);

/* Runs the network on a batch's input; returns the stop point's activation:
 * [C][n][H][W] for maps, [n][C] for avgpool and logits (the classifier's
 * [n][nclasses]), the input itself for the input point. Valid until the next
 * call. */
const float *kt_infer_run(kt_infer *inf, const kt_batch *b);

#endif
