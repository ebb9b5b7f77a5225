/* loader.c - decoding and transforming batches on worker threads (see loader.h).
 *
 * Batches are numbered in the order the consumer receives them (seq 0 is
 * (start_epoch, start_batch)). A ring of slots holds the batches in flight;
 * batch seq lives in slot seq % nslots and may be claimed only once the
 * consumer has released batch seq - nslots. Workers claim single images, not
 * whole batches, so all of them work on the oldest unfinished batch first and
 * a batch is ready as early as possible.
 *
 * One mutex guards the claim state, slot completion counts and the bad-file
 * cache; decoding and transforming run unlocked, each worker writing only its
 * own image's part of the slot. The consumer is the only one who decides
 * which messages are new (in batch order), so warnings are deterministic.
 */
#include "loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "rng.h"

#define MSG sizeof(((kt_err *)0)->msg)     /* bytes of one image's error message */

typedef struct {
    int64_t seq;
    int epoch, index;
    int count;          /* images in this batch before dropping bad ones */
    int done;           /* images finished by workers */
    float *input;       /* [3][batch][S][S] while filling; compacted to [3][n][S][S] */
    int *labels, *samples;
    kt_status *status;  /* [batch] per image: KT_OK, KT_ERR_DATA (bad image), other = fatal */
    char *msg;          /* [batch][MSG] */
} slot;

typedef struct {
    kt_loader *l;
    uint8_t *file;      /* file bytes, grown as needed */
    size_t filecap;
    kt_image img;
    kt_transform_ws ws;
} worker;

struct kt_loader {
    kt_loader_opts o;
    kt_augment aug;
    int train;                  /* augmentation on */
    size_t S2;                  /* pixels per image plane */
    int nb;                     /* batches per epoch */
    int64_t end;                /* batches to produce in total (INT64_MAX: no end) */
    int nslots;
    slot *slots;
    worker *workers;
    pthread_t *threads;
    int nthreads;

    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    int64_t claim_seq;          /* batch being claimed */
    int claim_pos;              /* next image of it */
    int64_t released;           /* batches the consumer has given back */
    int holding;                /* the consumer holds batch `released` */
    int stop;
    uint32_t *perm;             /* order of epoch perm_epoch */
    int perm_epoch;
    uint8_t *bad;               /* [n] 1: known bad, skipped without decoding */

    uint8_t *warned;            /* [n] consumer only: message already given */
    char *warnings;             /* consumer's message text for the current batch */
    kt_batch out;
    double wait_total;
    int64_t skipped_total;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Sets up slot s for batch seq (lock held): which samples, in which order. */
static void slot_start(kt_loader *l, slot *s, int64_t seq)
{
    int64_t abs_batch = (int64_t)l->o.start_batch + seq;
    int n = l->o.ds->n, B = l->o.batch;
    s->seq = seq;
    s->epoch = l->o.start_epoch + (int)(abs_batch / l->nb);
    s->index = (int)(abs_batch % l->nb);
    s->count = n - s->index * B < B ? n - s->index * B : B;
    s->done = 0;
    if (l->o.shuffle && l->perm_epoch != s->epoch) {
        kt_rng_permutation(l->perm, (uint32_t)n, l->o.seed, (uint64_t)s->epoch);
        l->perm_epoch = s->epoch;
    }
    for (int i = 0; i < s->count; i++) {
        int k = s->index * B + i;
        s->samples[i] = l->o.shuffle ? (int)l->perm[k] : k;
        s->labels[i] = l->o.ds->labels[s->samples[i]];
    }
}

/* Decodes and transforms one image into its place in the slot. */
static kt_status process(worker *w, slot *s, int pos, kt_err *err)
{
    kt_loader *l = w->l;
    const kt_loader_opts *o = &l->o;
    int idx = s->samples[pos];
    const char *path = o->ds->paths[idx];
    size_t n = 0, cstride = (size_t)o->batch * l->S2;
    float *out = s->input + (size_t)pos * l->S2;
    kt_image_opts io = {0};
    kt_status st = kt_image_read_file(&w->file, &w->filecap, &n, path, err);
    if (st)
        return st;
    if (l->train) {
        /* DCT scaling keeps twice the input size, so even a small random crop
         * is not upsampled much. */
        io.dct_min_short = o->fast_decode ? 2 * o->image_size : 0;
        if ((st = kt_image_decode_ex(&w->img, w->file, n, path, &io, err)))
            return st;
        return kt_transform_train(out, cstride, &w->img, o->image_size, o->resize, &o->norm, &l->aug,
                                  o->seed, (uint64_t)s->epoch, (uint64_t)idx, &w->ws, err);
    }
    if (o->fast_decode) {
        io.dct_min_short = o->resize;
    } else {
        kt_image_info info;
        if ((st = kt_image_probe(&info, w->file, n, path, err)))
            return st;
        kt_transform_eval_roi(info.w, info.h, o->resize, o->image_size, &io.roi_x0, &io.roi_y0,
                              &io.roi_x1, &io.roi_y1);
    }
    if ((st = kt_image_decode_ex(&w->img, w->file, n, path, &io, err)))
        return st;
    return kt_transform_eval_ws(out, cstride, &w->img, o->resize, o->image_size, &o->norm, &w->ws,
                                err);
}

static void *work(void *arg)
{
    worker *w = arg;
    kt_loader *l = w->l;
    /* Decoding runs at the lowest priority (on Linux, per thread): the
     * network's threads split every op evenly and wait for each other, so
     * a decode that preempts one of them idles the rest. At nice 19 the
     * decodes fill the CPUs' idle moments instead, and when the prefetched
     * batches run out the network's threads sleep and give way. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 19);
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && (l->claim_seq >= l->end || l->claim_seq >= l->released + l->nslots))
            pthread_cond_wait(&l->cv_work, &l->mu);
        if (l->stop)
            break;
        slot *s = &l->slots[l->claim_seq % l->nslots];
        if (l->claim_pos == 0)
            slot_start(l, s, l->claim_seq);
        int pos = l->claim_pos++;
        if (l->claim_pos == s->count)
            l->claim_seq++, l->claim_pos = 0;
        int idx = s->samples[pos];
        int known_bad = l->bad[idx] && !l->o.fail_on_bad;
        pthread_mutex_unlock(&l->mu);

        kt_err err = {0};
        kt_status st = KT_ERR_DATA;
        if (!known_bad)
            st = process(w, s, pos, &err);
        s->status[pos] = st;
        memcpy(s->msg + (size_t)pos * MSG, st ? err.msg : "", st ? MSG : 1);

        pthread_mutex_lock(&l->mu);
        if (st == KT_ERR_DATA)
            l->bad[idx] = 1;
        if (++s->done == s->count)
            pthread_cond_broadcast(&l->cv_done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static kt_status check_opts(const kt_loader_opts *o, kt_err *err)
{
    if (!o->ds || o->ds->n < 1)
        return kt_err_set(err, KT_ERR_DATA, "loader: the dataset has no images");
    if (o->batch < 1 || o->batch > 65536)
        return kt_err_set(err, KT_ERR_USAGE, "loader: batch size %d out of range 1..65536", o->batch);
    if (o->image_size < 1 || o->image_size > 1024)
        return kt_err_set(err, KT_ERR_USAGE, "loader: image size %d out of range 1..1024",
                          o->image_size);
    if ((!o->aug || !o->aug->rrc) && o->resize < o->image_size)
        return kt_err_set(err, KT_ERR_USAGE, "loader: resize %d is smaller than the image size %d",
                          o->resize, o->image_size);
    if (o->start_epoch < 0 || o->start_batch < 0)
        return kt_err_set(err, KT_ERR_USAGE, "loader: negative resume point");
    return KT_OK;
}

kt_status kt_loader_init(kt_loader **out, const kt_loader_opts *opts, kt_err *err)
{
    *out = NULL;
    kt_status st = check_opts(opts, err);
    if (st)
        return st;
    kt_loader *l = calloc(1, sizeof *l);
    if (!l)
        return kt_err_set(err, KT_ERR_RUNTIME, "loader: out of memory");
    l->o = *opts;
    l->train = opts->aug != NULL;
    if (opts->aug)
        l->aug = *opts->aug;
    l->o.aug = NULL;    /* the copy above is used */
    l->S2 = (size_t)opts->image_size * opts->image_size;
    int n = opts->ds->n, B = opts->batch;
    l->nb = opts->drop_last ? n / B : (n + B - 1) / B;
    if (l->nb == 0) {
        free(l);
        return kt_err_set(err, KT_ERR_DATA, "loader: %d images make no full batch of %d", n, B);
    }
    if (opts->start_batch >= l->nb) {
        st = kt_err_set(err, KT_ERR_USAGE, "loader: resume batch %d beyond the %d batches of an epoch",
                        opts->start_batch, l->nb);
        free(l);
        return st;
    }
    int64_t left = (int64_t)(opts->epochs - opts->start_epoch) * l->nb - opts->start_batch;
    l->end = opts->epochs > 0 ? (left > 0 ? left : 0) : INT64_MAX;

    int nw = opts->workers;
    if (nw <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nw = cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;
    }
    l->nslots = (opts->prefetch > 0 ? opts->prefetch : nw + 1) + 1;
    l->perm_epoch = -1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_done, NULL);
    l->slots = calloc((size_t)l->nslots, sizeof *l->slots);
    l->workers = calloc((size_t)nw, sizeof *l->workers);
    l->threads = calloc((size_t)nw, sizeof *l->threads);
    l->perm = malloc((size_t)n * sizeof *l->perm);
    l->bad = calloc((size_t)n, 1);
    l->warned = calloc((size_t)n, 1);
    l->warnings = malloc((size_t)B * (MSG + 1) + 1);
    if (!l->slots || !l->workers || !l->threads || !l->perm || !l->bad || !l->warned || !l->warnings)
        goto oom;
    for (int i = 0; i < l->nslots; i++) {
        slot *s = &l->slots[i];
        s->input = malloc(3 * (size_t)B * l->S2 * sizeof(float));
        s->labels = malloc((size_t)B * sizeof(int));
        s->samples = malloc((size_t)B * sizeof(int));
        s->status = malloc((size_t)B * sizeof(kt_status));
        s->msg = malloc((size_t)B * MSG);
        s->seq = -1;
        if (!s->input || !s->labels || !s->samples || !s->status || !s->msg)
            goto oom;
    }
    for (int i = 0; i < nw; i++) {
        l->workers[i].l = l;
        if (pthread_create(&l->threads[i], NULL, work, &l->workers[i]) != 0) {
            kt_loader_free(l);
            return kt_err_set(err, KT_ERR_RUNTIME, "loader: cannot start worker thread %d", i + 1);
        }
        l->nthreads++;
    }
    *out = l;
    return KT_OK;
oom:
    st = kt_err_set(err, KT_ERR_RUNTIME, "loader: out of memory for %d batches of %d images",
                    l->nslots, B);
    kt_loader_free(l);
    return st;
}

/* Drops the bad images of a finished slot, packing the planes to [3][n][S][S]. */
static int compact(kt_loader *l, slot *s)
{
    size_t S2 = l->S2, B = (size_t)l->o.batch;
    int n = 0;
    for (int i = 0; i < s->count; i++)
        n += s->status[i] == KT_OK;
    for (int c = 0, k; c < 3; c++) {
        k = 0;
        for (int i = 0; i < s->count; i++) {
            if (s->status[i] != KT_OK)
                continue;
            float *dst = s->input + ((size_t)c * n + k) * S2, *src = s->input + (c * B + i) * S2;
            if (dst != src)
                memmove(dst, src, S2 * sizeof(float));
            k++;
        }
    }
    int k = 0;
    for (int i = 0; i < s->count; i++)
        if (s->status[i] == KT_OK)
            s->labels[k] = s->labels[i], s->samples[k] = s->samples[i], k++;
    return n;
}

kt_status kt_loader_next(kt_loader *l, const kt_batch **out, kt_err *err)
{
    *out = NULL;
    pthread_mutex_lock(&l->mu);
    if (l->holding) {
        l->released++;
        l->holding = 0;
        pthread_cond_broadcast(&l->cv_work);
    }
    if (l->released >= l->end) {
        pthread_mutex_unlock(&l->mu);
        return KT_OK;
    }
    slot *s = &l->slots[l->released % l->nslots];
    double t0 = now();
    while (s->seq != l->released || s->done < s->count)
        pthread_cond_wait(&l->cv_done, &l->mu);
    double waited = now() - t0;
    l->holding = 1;
    pthread_mutex_unlock(&l->mu);

    /* Statuses in batch order: fatal errors first, then "fail" policy. */
    for (int i = 0; i < s->count; i++)
        if (s->status[i] != KT_OK && s->status[i] != KT_ERR_DATA)
            return kt_err_set(err, s->status[i], "%s", s->msg + (size_t)i * MSG);
    int skipped = 0;
    char *w = l->warnings;
    *w = '\0';
    for (int i = 0; i < s->count; i++) {
        if (s->status[i] == KT_OK)
            continue;
        int idx = s->samples[i];
        if (l->o.fail_on_bad)
            return kt_err_set(err, KT_ERR_DATA, "%s", s->msg + (size_t)i * MSG);
        skipped++;
        if (!l->warned[idx] && s->msg[(size_t)i * MSG]) {
            l->warned[idx] = 1;
            w += sprintf(w, "%s\n", s->msg + (size_t)i * MSG);
        }
    }
    kt_batch *b = &l->out;
    b->epoch = s->epoch;
    b->index = s->index;
    b->n = compact(l, s);
    b->input = s->input;
    b->labels = s->labels;
    b->samples = s->samples;
    b->nskipped = skipped;
    b->warnings = l->warnings;
    b->wait_seconds = waited;
    b->last_in_epoch = s->index == l->nb - 1;
    l->wait_total += waited;
    l->skipped_total += skipped;
    *out = b;
    return KT_OK;
}

int kt_loader_batches_per_epoch(const kt_loader *l)
{
    return l->nb;
}

double kt_loader_wait_seconds(const kt_loader *l)
{
    return l->wait_total;
}

int64_t kt_loader_skipped(const kt_loader *l)
{
    return l->skipped_total;
}

void kt_loader_free(kt_loader *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nthreads; i++)
        pthread_join(l->threads[i], NULL);
    for (int i = 0; l->workers && i < l->nthreads; i++) {
        free(l->workers[i].file);
        kt_image_free(&l->workers[i].img);
        kt_transform_ws_free(&l->workers[i].ws);
    }
    for (int i = 0; l->slots && i < l->nslots; i++) {
        slot *s = &l->slots[i];
        free(s->input), free(s->labels), free(s->samples), free(s->status), free(s->msg);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv_work);
    pthread_cond_destroy(&l->cv_done);
    free(l->slots), free(l->workers), free(l->threads), free(l->perm), free(l->bad);
    free(l->warned), free(l->warnings);
    free(l);
}
