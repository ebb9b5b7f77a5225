/* metrics.h - classification metrics, the metrics.jsonl log and the progress
 * line on stderr.
 *
 * Accumulate over batches with kt_metrics_add, then read accuracy, top-5,
 * per-class precision / recall / F1 and the confusion matrix (rows = true
 * class, columns = predicted). The prediction is the first largest logit, as
 * torch.argmax; a sample counts for top-5 when fewer than 5 classes rank above
 * its true class (ties broken by class index, like a stable sort).
 */
#ifndef KT_METRICS_H
#define KT_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "err.h"

typedef struct {
    int k;                  /* classes */
    int64_t *confusion;     /* [k][k] counts, owned */
    int64_t n;              /* samples seen */
    int64_t top1, top5;     /* correct at 1 and at 5 */
    double loss_sum;        /* sum of per-sample losses */
} kt_metrics;

kt_status kt_metrics_init(kt_metrics *m, int k, kt_err *err);
void kt_metrics_free(kt_metrics *m);
void kt_metrics_reset(kt_metrics *m);
/* Adds a batch: logits [n][k], labels [n] in 0..k-1, and the batch's mean loss. */
void kt_metrics_add(kt_metrics *m, const float *logits, const int *labels, int n, double mean_loss);

double kt_metrics_acc(const kt_metrics *m);    /* 0 when empty */
double kt_metrics_top5(const kt_metrics *m);
double kt_metrics_loss(const kt_metrics *m);   /* mean over samples */
/* Class c: precision (0 when never predicted), recall (0 without samples),
 * F1 (0 when both are 0), support = samples of class c. */
void kt_metrics_class(const kt_metrics *m, int c, double *precision, double *recall, double *f1,
                      int64_t *support);

/* {"loss", "acc", "top5" (only when k >= 5), "per_class": [{"class", "precision",
 * "recall", "f1", "support"}], "confusion": [[...]]} with names from classes
 * (may be NULL: indices). NULL when out of memory; caller cJSON_Delete's it. */
cJSON *kt_metrics_json(const kt_metrics *m, const char *const *classes);

/* metrics.jsonl: one JSON object per line, flushed as written. Opening with
 * keep_step >= 0 keeps the existing lines whose "step" is <= keep_step (a
 * resumed run continues the log of the checkpoint it resumed from and drops
 * what the killed run wrote after it); keep_step < 0 starts a new file. */
typedef struct kt_metrics_log kt_metrics_log;
kt_status kt_metrics_log_open(kt_metrics_log **out, const char *path, int64_t keep_step,
                              kt_err *err);
kt_status kt_metrics_log_write(kt_metrics_log *l, const cJSON *obj, kt_err *err);
/* One line of JSON text already formatted (no allocation). */
kt_status kt_metrics_log_text(kt_metrics_log *l, const char *line, kt_err *err);
void kt_metrics_log_close(kt_metrics_log *l);

/* The progress line. On a terminal one live line is rewritten in place
 * (carriage return + clear); otherwise a plain line every `every` steps and at
 * the end of each epoch. quiet prints nothing. */
typedef struct {
    FILE *f;
    int tty, every, quiet;
    int live;               /* a live line is on screen */
} kt_progress;

void kt_progress_init(kt_progress *p, FILE *f, int every, int quiet);
/* Step `step` (1-based within the epoch) of `steps`, global step gstep. */
void kt_progress_step(kt_progress *p, int epoch, int epochs, int step, int steps, int64_t gstep,
                      double loss, double acc, double images_per_s, double eta_s);
/* A permanent line (epoch summaries, warnings): clears the live line first. */
void kt_progress_printf(kt_progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Ends a live line with a newline, if any. */
void kt_progress_done(kt_progress *p);
/* "45s", "3m12s", "2h05m". */
void kt_progress_duration(char *buf, int size, double seconds);

#endif
