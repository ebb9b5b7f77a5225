/* checkpoint.h - kt checkpoints: a safetensors file that PyTorch's safetensors
 * loader reads, with kt's own JSON in __metadata__["kt"].
 *
 * Tensors, in torchvision state_dict order and names:
 *   the whole backbone, frozen tensors included ("conv1.weight", "bn1.running_mean",
 *   "layer4.2.bn3.num_batches_tracked" as I64 scalars, "<conv>.bias" for Keras
 *   convs), then the head ("fc.weight" / "fc.0.weight", ...; head.h), then, in
 *   last.safetensors only, the optimizer state ("optim.<param>.exp_avg", ...;
 *   optim.h).
 * Metadata keys (the "kt" JSON object):
 *   "format": "kt-checkpoint", "version": 1
 *   "classes": ["ants", "bees"]              output index -> class name
 *   "preprocess": {"image_size": 224, "resize": 256}   eval: resize the shorter
 *                                             side, centre crop image_size; the
 *                                             normalisation is arch.norm
 *   "cut": "layer3"                           the freeze point, canonical name
 *   "head": {"features": 2048, "hidden": [512], "activation": "relu",
 *            "dropout": 0.2, "classes": 2}
 *   "arch": {...}                             kt_arch_metadata_json: stride placement,
 *                                             bn eps, "norm" {bgr, scale, mean, std}
 *   "checksum": "0123456789abcdef"            kt_weights_checksum of the file's tensors
 *   "tensors": 322                            how many, to tell a truncated header
 * plus whatever the writer adds (kt train adds "spec", "train_state", "optim",
 * "best", "weights_source"); unknown keys are kept and ignored.
 *
 * Writes are atomic (kt_weights_write: temporary file, fsync, rename, fsync of
 * the folder): a kill at any moment leaves the previous file intact.
 */
#ifndef KT_CHECKPOINT_H
#define KT_CHECKPOINT_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "arch.h"
#include "err.h"
#include "head.h"
#include "optim.h"
#include "resnet.h"
#include "weights.h"

typedef struct kt_ckpt kt_ckpt;

/* Plans the tensor list once: the backbone's tensors (kt_resnet_tensors; the
 * num_batches_tracked of frozen BNs taken from src when it has them), the head,
 * then the optimizer state. All must outlive the kt_ckpt; optim may be NULL
 * (no optimizer state to save). */
kt_status kt_ckpt_init(kt_ckpt **out, const kt_arch *a, const kt_weights *src, kt_resnet *net,
                       kt_head *head, kt_optim *optim, kt_err *err);
void kt_ckpt_free(kt_ckpt *c);

/* The model-describing part of the metadata: classes, preprocess, cut, head,
 * arch. The caller adds its own keys to the returned object (owned by the
 * caller; NULL when out of memory). */
cJSON *kt_ckpt_meta(const kt_ckpt *c, const char *const *classes, int nclasses, int image_size,
                    int resize, const char *cut);

/* Writes path atomically with every tensor (the optimizer state too when
 * with_optim) and meta, to which "checksum" and "tensors" are added. */
kt_status kt_ckpt_write(kt_ckpt *c, const char *path, int with_optim, cJSON *meta, kt_err *err);

/* Tensors the planned list holds (without / with the optimizer state). */
int kt_ckpt_count(const kt_ckpt *c, int with_optim);
const kt_wtensor *kt_ckpt_tensor(const kt_ckpt *c, int i);

/* Reading one back --------------------------------------------------------- */

/* The parsed kt metadata of a loaded file, after checking that it is a kt
 * checkpoint and that its tensors match the recorded count and checksum
 * (KT_ERR_RUNTIME naming the file otherwise). Caller cJSON_Delete's it. */
kt_status kt_ckpt_open(cJSON **meta, const kt_weights *w, kt_err *err);

/* The model description of a checkpoint's metadata, for predict/eval/embed and
 * resume. Strings point into meta (which must outlive the info). */
typedef struct {
    int nclasses;
    const char **classes;   /* [nclasses], the array owned (kt_ckpt_info_free) */
    int image_size, resize;
    kt_norm norm;
    const char *cut;
    int features, nhidden, hidden[64];
    kt_activation act;
    double dropout;
} kt_ckpt_info;

kt_status kt_ckpt_info_parse(kt_ckpt_info *info, const cJSON *meta, const char *path, kt_err *err);
void kt_ckpt_info_free(kt_ckpt_info *info);
/* The head shape described by info (hidden points into info). */
kt_head_shape kt_ckpt_info_head(const kt_ckpt_info *info);

/* The head a checkpoint describes, planned for batch rows, with its trained
 * parameters (for predict and eval). Caller frees with kt_head_free. */
kt_status kt_ckpt_head(kt_head **out, const kt_weights *w, const kt_ckpt_info *info, int batch,
                       kt_err *err);

/* Copies the tensor of w named like each param, buffer and (when optim is not
 * NULL) optimizer state into it, checking shapes, and sets the optimizer's t
 * from meta; a missing or misshapen tensor is an error naming it and the file. */
kt_status kt_ckpt_restore(const kt_weights *w, const cJSON *meta, kt_param *const *params,
                          int nparams, kt_buffer *const *buffers, int nbuffers, kt_optim *optim,
                          kt_err *err);

#endif
