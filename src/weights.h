/* weights.h - named float32 tensors read from a model file, and the
 * safetensors writer used for checkpoints.
 *
 * Formats read (sniffed from the bytes, not the name):
 *   - safetensors (torchvision names, or a kt checkpoint): mmapped; F32 tensors
 *     point into the mapping, F16/BF16 are converted to owned float32, I64
 *     (num_batches_tracked) kept as int64 values.
 *   - TF.js layers model: model.json (cJSON) + its weight shards (Keras names
 *     such as "res2a_branch2a/kernel", kept as-is, HWIO layout untouched).
 * Nothing here knows about ResNet: arch.c interprets the names.
 */
#ifndef KT_WEIGHTS_H
#define KT_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define KT_MAX_DIMS 4

typedef enum { KT_FORMAT_SAFETENSORS, KT_FORMAT_TFJS } kt_format;

typedef struct {
    const char *name;            /* owned by the kt_weights */
    int ndim;                    /* 0 for a scalar */
    int64_t shape[KT_MAX_DIMS];
    int64_t numel;
    int is_int;                  /* 1: I64 tensor, values in idata */
    const float *data;           /* [numel] float32, NULL when is_int */
    const int64_t *idata;        /* [numel] when is_int */
} kt_tensor;

typedef struct kt_weights kt_weights;

/* Loads path (a .safetensors file, a model.json, or a folder holding one
 * model.json). Every problem (truncated file, header out of bounds, unknown
 * dtype, overlapping offsets, NaN/Inf values, missing shard) is an error that
 * names the file and the tensor. Caller frees with kt_weights_free. */
kt_status kt_weights_load(kt_weights **out, const char *path, kt_err *err);
void kt_weights_free(kt_weights *w);

kt_format kt_weights_format(const kt_weights *w);
const char *kt_weights_path(const kt_weights *w);
int kt_weights_count(const kt_weights *w);
const kt_tensor *kt_weights_at(const kt_weights *w, int i);
/* Exact name lookup; NULL when absent. */
const kt_tensor *kt_weights_find(const kt_weights *w, const char *name);
/* Value of the "kt" key of a safetensors __metadata__ (kt's own JSON text), or
 * NULL when the file has none (not a kt checkpoint). */
const char *kt_weights_kt_metadata(const kt_weights *w);
/* TF.js only: the model.json "modelTopology" object (Keras layer configs:
 * strides, padding, epsilon...) as JSON text, or NULL. arch.c reads the layer
 * hyperparameters from it instead of assuming them. */
const char *kt_weights_tfjs_topology(const kt_weights *w);
/* A checksum over all tensor bytes (FNV-1a 64 over names, shapes, data), used
 * to key caches and to verify checkpoints. Tensors are hashed in name order,
 * so the value does not depend on the order the file stores them in. */
uint64_t kt_weights_checksum(const kt_weights *w);

/* One tensor to write. data is float32 unless idata is set (I64). */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[KT_MAX_DIMS];
    const float *data;
    const int64_t *idata;
} kt_wtensor;

/* kt_weights_checksum of the file these tensors would make, computed before
 * writing it (a checkpoint records it in its metadata). order: [n] scratch. */
uint64_t kt_weights_checksum_list(const kt_wtensor *t, int n, int *order);

/* Writes a safetensors file atomically: path.tmp, fsync, rename, fsync of the
 * folder. kt_json (may be NULL) is stored as __metadata__["kt"]. A kill at any
 * moment leaves either the old file or the new one. */
kt_status kt_weights_write(const char *path, const kt_wtensor *t, int n, const char *kt_json,
                           kt_err *err);

#endif
