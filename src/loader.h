/* loader.h - worker threads that decode and transform images into reused
 * batch buffers ahead of the consumer (trainer, eval, predict, embed).
 *
 * Order: epoch e visits the dataset in kt_rng_permutation(seed, e) order when
 * shuffle is set, else in dataset order; batch k of epoch e holds positions
 * k*batch .. k*batch+batch-1 of that order. Everything a batch contains
 * (which images, their augmentation, which are skipped) is a function of
 * (seed, e, k), never of thread timing, so a run resumed at (epoch, batch)
 * sees exactly the batches it would have seen.
 *
 * Bad images (unreadable, corrupt, unsupported): with fail_on_bad = 0 they
 * are dropped from their batch, which is then SHORTER (n < batch; possibly 0)
 * rather than refilled from later images, so batch boundaries never move.
 * The first time a file is found bad its message is attached to the batch
 * (one warning per file per loader); every time it is dropped it is counted
 * in kt_batch.nskipped. With fail_on_bad = 1, next() returns KT_ERR_DATA with
 * the message naming the file (the first bad file of the batch).
 *
 * Memory: all batch buffers, decode and transform scratch are allocated at
 * init or grown by the first images; nothing is allocated per batch.
 */
#ifndef KT_LOADER_H
#define KT_LOADER_H

#include <stdint.h>

#include "arch.h"
#include "dataset.h"
#include "err.h"
#include "transform.h"

typedef struct {
    const kt_dataset *ds;   /* must outlive the loader */
    int batch;              /* images per batch */
    int image_size;         /* network input side S */
    int resize;             /* eval: shorter side resized to this, then centre crop S */
    kt_norm norm;
    const kt_augment *aug;  /* NULL: the eval transform; else training augmentation (copied) */
    int shuffle;            /* 1: permutation per epoch; 0: dataset order */
    int drop_last;          /* 1: an incomplete last batch of an epoch is not produced */
    int workers;            /* threads; <= 0: one per online CPU, at most 8 */
    int prefetch;           /* batches decoded ahead; <= 0: workers + 1 */
    uint64_t seed;
    int fail_on_bad;        /* bad_images: 0 "skip", 1 "fail" */
    int fast_decode;        /* 1: JPEG DCT scaling where the output stays >= resize (not exact) */
    int epochs;             /* stop after this many epochs; <= 0: no end */
    int start_epoch;        /* resume point: first batch produced is (start_epoch, start_batch) */
    int start_batch;
} kt_loader_opts;

typedef struct {
    int epoch;              /* which epoch and batch this is */
    int index;
    int n;                  /* images in the batch (<= opts.batch) */
    float *input;           /* [3][n][S][S], network channel order */
    int *labels;            /* [n] */
    int *samples;           /* [n] dataset indices */
    int nskipped;           /* bad images dropped from this batch */
    const char *warnings;   /* newline-separated messages for files found bad for
                             * the first time, "" when none */
    double wait_seconds;    /* how long next() blocked for this batch */
    int last_in_epoch;      /* 1 for the final batch of its epoch */
} kt_batch;

typedef struct kt_loader kt_loader;

/* Starts the workers. Errors: KT_ERR_USAGE for bad options, KT_ERR_RUNTIME
 * for memory or threads. */
kt_status kt_loader_init(kt_loader **out, const kt_loader_opts *opts, kt_err *err);
/* The next batch, valid until the following next() or free. *out = NULL when
 * opts.epochs are done. */
kt_status kt_loader_next(kt_loader *l, const kt_batch **out, kt_err *err);
/* Batches per epoch (depends on drop_last). */
int kt_loader_batches_per_epoch(const kt_loader *l);
/* Totals since init: seconds next() waited, images dropped as bad. */
double kt_loader_wait_seconds(const kt_loader *l);
int64_t kt_loader_skipped(const kt_loader *l);
/* Stops and joins the workers; NULL is fine. */
void kt_loader_free(kt_loader *l);

#endif
