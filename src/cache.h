/* cache.h - the activation cache: the frozen part's output for each image,
 * computed once and reused across epochs and across runs.
 *
 * When everything up to the cut is frozen and the image's input does not
 * change between epochs (no augmentation, or a fixed number of pre-drawn
 * augmented views), the frozen forward pass is the same work every epoch.
 * A kt_cache holds that output for every image (and view) of one dataset:
 * filled at open from the cache folder, computing only what is missing there,
 * then handing out batches exactly as the loader would (same images, same
 * order, bad images dropped the same way) with the activation at the cut in
 * place of the input image.
 *
 * Key. An entry is the activation of one image view, [C][H][W] at the cut.
 * It is keyed by everything it depends on:
 *   - the frozen part itself: a checksum of every number the frozen layers
 *     compute with (conv weights and biases, batch-norm statistics and eps,
 *     strides, paddings) taken from the kt_arch, so a checkpoint with another
 *     head but the same frozen backbone shares entries, and a Keras and a
 *     torchvision file differ even with equal tensors (other eps, strides);
 *   - the cut point and its activation shape;
 *   - the preprocessing: image_size, resize, normalisation (kt_norm), and for
 *     augmented views the augmentation parameters and the seed;
 *   - the BLAS kernels in use (kt_blas_core), so cached and uncached results
 *     stay bit-identical;
 *   - the stored dtype;
 *   - the view index;
 *   - the image file's content: a 128-bit hash of its bytes, computed every
 *     run. A changed file gets a new key and is recomputed; it is never
 *     served stale. A renamed or copied file is found again.
 * All but the last two form a "group" (one folder, described by its
 * group.json); kt cache list shows groups.
 *
 * Augmented views. With views = V > 0, view v of an image is
 * kt_transform_train(seed, epoch = v, sample = its content hash), a function
 * of (seed, file content, v) rather than of the image's index, so adding
 * images to a folder does not redraw the views of the others. In epoch e,
 * sample i gets view kt_rng_below(seed, stream "view", e, i, V). Without
 * augmentation (aug NULL) there is one view, the evaluation transform, which
 * is what the loader produces for an augmentation with everything off.
 *
 * Folder. kt_cache_dir: train.cache_dir when the job sets it, else
 * $KT_CACHE_DIR, else $XDG_CACHE_HOME/kt, else $HOME/.cache/kt (the job's
 * explicit setting wins over the environment, as kt(1) says). Layout:
 *   DIR/v1/<group:16 hex>/group.json              what the group's key is
 *   DIR/v1/<group>/<file hash:32 hex>-<view>.act  one entry: header + payload
 * Every write goes to a temporary name and is renamed into place, so
 * concurrent runs and killed runs never leave a half-written entry under a
 * final name. Every entry carries checksums of its header and payload,
 * verified on every read: a corrupt or truncated entry (a disk fault, power
 * loss after rename, a stray edit) is counted, deleted and recomputed, never
 * used. Entries are not fsync'ed: the checksums make that unnecessary.
 *
 * Size cap. After a run writes entries, the folder is trimmed to its cap by
 * deleting the least recently used entries (an entry's mtime is its last use:
 * hits touch it). The entries of the running job are never evicted by it.
 * Cap: $KT_CACHE_MAX ("20G", "500M", bytes) when set, else a quarter of the
 * size of the file system holding the folder.
 *
 * Memory. The run's activations are held in RAM when they fit in the
 * memory budget (train.cache_memory; 0 = a quarter of MemAvailable), else in
 * a temporary file in the cache folder, unlinked at once and mmapped, so the
 * kernel keeps in RAM what fits and pages the rest.
 *
 * Same bits as without the cache. A float32 entry holds the frozen forward's
 * exact output for its image, computed in some batch of the fill; training
 * from it gives the same weights as training from the images (t_cache.sh,
 * bench/cache_bench.sh) as long as an image's frozen output does not depend
 * on its batch neighbours. That holds for ResNet-50 at 224 with the AVX-512
 * (SkylakeX) OpenBLAS kernels; with the Haswell or Prescott kernels, or the
 * tiny GEMMs of the test fixtures, OpenBLAS rounds a column differently
 * depending on where it falls in the GEMM, and results differ from the
 * uncached run's in the last bits (~1e-7 relative), as two uncached runs with
 * other batch sizes would.
 *
 * float16. train.cache_dtype float16 stores and holds half the bytes. Values
 * are rounded to nearest even: |x16 - x| <= 2^-11 |x| for |x| >= 2^-14, and
 * <= 2^-25 below that (subnormals); beyond 65504 they saturate to 65504.
 * float32 entries are the forward pass's exact bits.
 *
 * Threads: one kt_cache is used by one thread; the fill runs its own worker
 * threads and the network's.
 *
 * ---- Integration in kt train (cmd_train.c) ------------------------------
 * 1. After build_model(), knowing the cut t->freeze:
 *      int augmenting = rrc.enabled || flip || any color_jitter > 0;
 *      const char *why = kt_cache_why_not(t->freeze, augmenting, s->data.cached_views,
 *                                          t->no_cache);   (t->no_cache: a --no-cache flag)
 *    and when why != NULL log it ("cache: off: <why>") and train as today.
 * 2. Otherwise, after resume() (so the start position is known) and with the
 *    SIGINT/SIGTERM handler already installed:
 *      kt_cache_opts co = {.arch = t->arch, .point = t->freeze,
 *          .image_size = s->data.image_size, .resize = s->data.resize,
 *          .aug = augmenting ? &aug : NULL, .views = s->data.cached_views,
 *          .seed = s->train.seed, .dtype = s->train.cache_dtype,
 *          .ds = train_set(t), .batch = s->train.batch_size, .shuffle = 1,
 *          .fail_on_bad = s->data.bad_images == KT_BAD_FAIL,
 *          .epochs = s->train.epochs, .start_epoch = t->epoch, .start_batch = t->batch,
 *          .memory = budget, .workers = s->data.workers,
 *          .weights_path = s->model.weights, .stop = &g_signal,
 *          .progress = fill_progress, .ctx = t};
 *      kt_cache_dir(co.dir_buf...) -> co.dir;  budget = kt_cache_memory_budget(s->train.cache_memory)
 *      kt_cache_open(&t->cache, &co, err);
 *    and the same for the validation set (.ds = &t->val, .aug = NULL,
 *    .shuffle = 0, .epochs = 0, .memory = budget - kt_cache_bytes(t->cache)),
 *    into t->val_cache. KT_ERR_INTERRUPTED from open means a signal came
 *    during the fill: what was computed is kept in the folder; return it.
 *    Log the fill: "cache: 398 of 398 activations from <dir> (100%), 0
 *    computed; 312 MiB in memory" (kt_cache_stats: hits, computed,
 *    rebuilt, bytes, mapped) and kt_cache_warnings when not "". Then skip
 *    kt_loader_init for the training set.
 * 3. In the loop: kt_cache_next(t->cache, &b, err) in place of
 *    kt_loader_next (same kt_batch, same order, same skips), and in
 *    train_step the forward starts at the cut:
 *      f = t->freeze == t->stop ? b->input       (avgpool: [n][features], straight to the head)
 *                               : kt_resnet_forward(t->net, t->freeze, b->input, n, t->backbone);
 * 4. In validate(): for k in 0..kt_cache_batches_per_epoch(t->val_cache)-1,
 *    kt_cache_batch(t->val_cache, 0, k, &b, err), with the same forward
 *    from the cut (training = 0).
 * 5. Metrics: add kt_cache_stats_json(&sum) as "cache" to each epoch event
 *    (sum = kt_cache_stats_add over both caches), and after the last epoch
 *    log "cache: N activations served, M computed, ~S s saved".
 * 6. kt_cache_free both in trainer_free.
 * A second run with the same data, weights and cut then computes nothing:
 * hits == entries, computed == 0.
 */
#ifndef KT_CACHE_H
#define KT_CACHE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "arch.h"
#include "dataset.h"
#include "err.h"
#include "loader.h"
#include "spec.h"      /* kt_cache_dtype */
#include "transform.h"

/* The cache folder (see top): spec_dir when not NULL, else $KT_CACHE_DIR,
 * else $XDG_CACHE_HOME/kt, else $HOME/.cache/kt. Empty variables count as
 * unset. KT_ERR_RUNTIME when none is usable (no HOME) or buf is too small. */
kt_status kt_cache_dir(char *buf, size_t size, const char *spec_dir, kt_err *err);

/* Bytes of RAM for activations: bytes when > 0, else a quarter of
 * MemAvailable (256 MiB when /proc/meminfo cannot be read). */
int64_t kt_cache_memory_budget(int64_t bytes);

/* Why the frozen part's output cannot be cached, or NULL when it can:
 * nothing frozen (cut at the input), augmentation on with views = 0, or
 * disabled = 1 (e.g. kt train --no-cache). For the log. */
const char *kt_cache_why_not(int point, int augmenting, int views, int disabled);

typedef struct {
    /* what the activations are: the key (see top) */
    const kt_arch *arch;        /* the network; must outlive the cache */
    int point;                  /* cut point, 1 .. avgpool (arch.h numbering) */
    int image_size, resize;
    const kt_augment *aug;      /* NULL: evaluation transform, one view; else views > 0 views */
    int views;
    uint64_t seed;              /* views and the per-epoch view choice; the batch order */
    kt_cache_dtype dtype;
    /* the batches, as kt_loader_opts */
    const kt_dataset *ds;       /* must outlive the cache */
    int batch;
    int shuffle;                /* 1: kt_rng_permutation(seed, epoch) order */
    int fail_on_bad;            /* 1: a bad image makes open fail (KT_ERR_DATA naming it) */
    int epochs, start_epoch, start_batch; /* for kt_cache_next; epochs <= 0: no end */
    /* resources */
    const char *dir;            /* cache folder (kt_cache_dir), created when missing */
    int64_t memory;             /* bytes of RAM for this cache's activations; above: mmapped file */
    int workers;                /* threads reading and decoding; <= 0: one per CPU, at most 8 */
    const char *weights_path;   /* shown by kt cache list (not part of the key); may be NULL */
    volatile sig_atomic_t *stop;/* the fill stops between batches once *stop != 0; may be NULL */
    void (*progress)(void *ctx, int64_t done, int64_t total); /* after each computed batch; may be NULL */
    void *ctx;
} kt_cache_opts;

typedef struct {
    int64_t entries;            /* activations the run needs: views of the readable images */
    int64_t hits;               /* found valid in the cache folder (hits == entries: 100%) */
    int64_t computed;           /* computed by this run (misses) */
    int64_t rebuilt;            /* of those, found corrupt or truncated first */
    int64_t bad;                /* images that could not be read or decoded */
    int64_t served;             /* activations handed out in batches so far */
    int64_t evicted;            /* entries the size cap removed from the folder */
    int64_t bytes;              /* activation bytes this run holds */
    int mapped;                 /* 1: held in an mmapped file (over the memory budget) */
    double hash_seconds;        /* reading and hashing the image files */
    double fill_seconds;        /* the whole open: hashing, reading entries, computing */
    double seconds_per_image;   /* frozen forward per image, measured by this run or the
                                 * last run that computed entries of this group; 0 unknown */
    double saved_seconds;       /* estimate, see kt_cache_stats_add */
} kt_cache_stats;

typedef struct kt_cache kt_cache;

/* Fills the cache for opts->ds: hashes every file, reads the valid entries,
 * computes the missing ones (decode, transform, frozen forward up to point)
 * and writes them, then trims the folder to its cap. Errors: KT_ERR_USAGE
 * for bad options, KT_ERR_DATA for a bad image under fail_on_bad,
 * KT_ERR_INTERRUPTED when *opts->stop was set (entries computed so far are
 * kept in the folder), KT_ERR_RUNTIME for I/O and memory. */
kt_status kt_cache_open(kt_cache **out, const kt_cache_opts *opts, kt_err *err);
void kt_cache_free(kt_cache *c);

/* Batch `index` of `epoch`, as the loader makes it: the same samples in the
 * same order, bad images dropped (nskipped), and b->input holding the
 * activation at the cut: [C][n][H][W], or [n][C] when the cut is avgpool
 * (the layouts kt_resnet_forward and kt_head_forward take). Valid until the
 * next call. Warnings name bad files the first time a batch holds them. */
kt_status kt_cache_batch(kt_cache *c, int epoch, int index, const kt_batch **out, kt_err *err);
/* The loader's iteration: (start_epoch, start_batch) onwards, *out = NULL
 * after opts.epochs epochs. */
kt_status kt_cache_next(kt_cache *c, const kt_batch **out, kt_err *err);
int kt_cache_batches_per_epoch(const kt_cache *c);

/* Adds c's statistics to *sum (zero it first); saved_seconds is
 * (served - computed) * seconds_per_image, at least 0: the frozen forward
 * passes the uncached run would have made and this one did not. */
void kt_cache_stats_add(kt_cache_stats *sum, const kt_cache *c);
/* {"entries", "hits", "computed", "rebuilt", "bad", "served", "evicted",
 * "bytes", "mapped", "fill_s", "saved_s", "hit_rate"} for metrics.jsonl. */
cJSON *kt_cache_stats_json(const kt_cache_stats *s);
/* Bytes of RAM c holds (0 when mapped), to split a budget between caches. */
int64_t kt_cache_bytes(const kt_cache *c);
/* A problem of the folder worth a warning, "" when none: entries could not
 * be written (full or read-only disk), so this run keeps them in memory only.
 * Bad images are reported by the batches, as the loader does. */
const char *kt_cache_warnings(const kt_cache *c);
/* The group folder of c's entries. */
const char *kt_cache_group_dir(const kt_cache *c);

/* ---- the folder, for kt cache ---------------------------------------------- */

typedef struct {
    char id[17];                /* group folder name */
    char *json;                 /* its group.json text (NULL when missing or unreadable) */
    int64_t entries, bytes;     /* entry files and their bytes (temporaries included in bytes) */
    int64_t last_use;           /* newest entry mtime, seconds since the epoch */
} kt_cache_group;

/* Lists the groups under dir (an absent folder has none). *out is an array
 * of *n groups, newest last use first; kt_cache_groups_free releases it. */
kt_status kt_cache_list(kt_cache_group **out, int *n, const char *dir, kt_err *err);
void kt_cache_groups_free(kt_cache_group *g, int n);
/* Deletes the groups whose id starts with one of ids (all when nids = 0).
 * Only files kt wrote (group.json, *.act, temporaries) are removed, and
 * their folders when empty. *freed gets the bytes removed. */
kt_status kt_cache_clear(const char *dir, const char *const *ids, int nids, int64_t *freed,
                         int *ngroups, kt_err *err);
/* The size cap of dir (see top), in bytes. */
int64_t kt_cache_cap(const char *dir);

#endif
