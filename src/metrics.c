/* metrics.c - accuracy, confusion, metrics.jsonl, progress line (see metrics.h). */
#include "metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

kt_status kt_metrics_init(kt_metrics *m, int k, kt_err *err)
{
    memset(m, 0, sizeof *m);
    if (k <= 0)
        return kt_err_set(err, KT_ERR_USAGE, "metrics: %d classes", k);
    m->confusion = calloc((size_t)k * k, sizeof *m->confusion);
    if (!m->confusion)
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory for a %dx%d confusion matrix", k, k);
    m->k = k;
    return KT_OK;
}

void kt_metrics_free(kt_metrics *m)
{
    if (!m)
        return;
    free(m->confusion);
    memset(m, 0, sizeof *m);
}

void kt_metrics_reset(kt_metrics *m)
{
    memset(m->confusion, 0, sizeof *m->confusion * (size_t)m->k * m->k);
    m->n = m->top1 = m->top5 = 0;
    m->loss_sum = 0;
}

void kt_metrics_add(kt_metrics *m, const float *logits, const int *labels, int n, double mean_loss)
{
    int k = m->k;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * k;
        int y = labels[i], pred = 0, above = 0;
        for (int c = 1; c < k; c++)
            if (z[c] > z[pred])
                pred = c;
        /* Rank of the true class: classes strictly above it, or equal and
         * earlier (a stable descending sort puts those first). */
        for (int c = 0; c < k; c++)
            above += z[c] > z[y] || (z[c] == z[y] && c < y);
        m->confusion[(size_t)y * k + pred]++;
        m->top1 += pred == y;
        m->top5 += above < 5;
    }
    m->n += n;
    m->loss_sum += mean_loss * n;
}

double kt_metrics_acc(const kt_metrics *m) { return m->n ? (double)m->top1 / (double)m->n : 0; }
double kt_metrics_top5(const kt_metrics *m) { return m->n ? (double)m->top5 / (double)m->n : 0; }
double kt_metrics_loss(const kt_metrics *m) { return m->n ? m->loss_sum / (double)m->n : 0; }

void kt_metrics_class(const kt_metrics *m, int c, double *precision, double *recall, double *f1,
                      int64_t *support)
{
    int64_t tp = m->confusion[(size_t)c * m->k + c], row = 0, col = 0;
    for (int j = 0; j < m->k; j++) {
        row += m->confusion[(size_t)c * m->k + j];
        col += m->confusion[(size_t)j * m->k + c];
    }
    double p = col ? (double)tp / (double)col : 0, r = row ? (double)tp / (double)row : 0;
    *precision = p;
    *recall = r;
    *f1 = p + r > 0 ? 2 * p * r / (p + r) : 0;
    *support = row;
}

cJSON *kt_metrics_json(const kt_metrics *m, const char *const *classes)
{
    cJSON *o = cJSON_CreateObject(), *pc, *conf;
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "loss", kt_metrics_loss(m));
    cJSON_AddNumberToObject(o, "acc", kt_metrics_acc(m));
    if (m->k >= 5)
        cJSON_AddNumberToObject(o, "top5", kt_metrics_top5(m));
    cJSON_AddNumberToObject(o, "n", (double)m->n);
    pc = cJSON_AddArrayToObject(o, "per_class");
    conf = cJSON_AddArrayToObject(o, "confusion");
    if (!pc || !conf)
        goto fail;
    for (int c = 0; c < m->k; c++) {
        double p, r, f1;
        int64_t support;
        kt_metrics_class(m, c, &p, &r, &f1, &support);
        cJSON *e = cJSON_CreateObject(), *row = cJSON_CreateArray();
        if (!e || !row) {
            cJSON_Delete(e);
            cJSON_Delete(row);
            goto fail;
        }
        cJSON_AddItemToArray(pc, e);
        cJSON_AddItemToArray(conf, row);
        if (classes)
            cJSON_AddStringToObject(e, "class", classes[c]);
        else
            cJSON_AddNumberToObject(e, "class", c);
        cJSON_AddNumberToObject(e, "precision", p);
        cJSON_AddNumberToObject(e, "recall", r);
        cJSON_AddNumberToObject(e, "f1", f1);
        cJSON_AddNumberToObject(e, "support", (double)support);
        for (int j = 0; j < m->k; j++)
            cJSON_AddItemToArray(row, cJSON_CreateNumber((double)m->confusion[(size_t)c * m->k + j]));
    }
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

struct kt_metrics_log {
    FILE *f;
    char path[4096];
};

/* Copies the lines of path whose "step" is <= keep_step to path.tmp and
 * renames it over path, so a crash in between leaves the old log. */
static kt_status keep_until(const char *path, int64_t keep_step, kt_err *err)
{
    char tmp[4200], *line = NULL;
    size_t cap = 0;
    FILE *in = fopen(path, "r"), *out = NULL;
    kt_status st = KT_OK;
    if (!in)
        return errno == ENOENT ? KT_OK
                               : kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", path, strerror(errno));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    out = fopen(tmp, "w");
    if (!out) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    while (getline(&line, &cap, in) > 0) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step");
        /* A torn last line (killed mid-write) does not parse and is dropped. */
        if (cJSON_IsNumber(s) && s->valuedouble <= (double)keep_step)
            fputs(line, out);
        cJSON_Delete(j);
    }
    if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0) {
        out = NULL;
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", tmp, strerror(errno));
        goto done;
    }
    out = NULL;
    if (rename(tmp, path) != 0)
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", path, strerror(errno));
done:
    if (out)
        fclose(out);
    fclose(in);
    free(line);
    return st;
}

kt_status kt_metrics_log_open(kt_metrics_log **out, const char *path, int64_t keep_step,
                              kt_err *err)
{
    kt_metrics_log *l;
    kt_status st;
    *out = NULL;
    if (keep_step >= 0 && (st = keep_until(path, keep_step, err)) != KT_OK)
        return st;
    l = calloc(1, sizeof *l);
    if (!l)
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    snprintf(l->path, sizeof l->path, "%s", path);
    l->f = fopen(path, keep_step >= 0 ? "a" : "w");
    if (!l->f) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", path, strerror(errno));
        free(l);
        return st;
    }
    *out = l;
    return KT_OK;
}

kt_status kt_metrics_log_text(kt_metrics_log *l, const char *line, kt_err *err)
{
    if (fprintf(l->f, "%s\n", line) < 0 || fflush(l->f) != 0)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", l->path, strerror(errno));
    return KT_OK;
}

kt_status kt_metrics_log_write(kt_metrics_log *l, const cJSON *obj, kt_err *err)
{
    char *s = cJSON_PrintUnformatted(obj);
    if (!s)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", l->path);
    kt_status st = kt_metrics_log_text(l, s, err);
    free(s);
    return st;
}

void kt_metrics_log_close(kt_metrics_log *l)
{
    if (!l)
        return;
    fclose(l->f);
    free(l);
}

void kt_progress_init(kt_progress *p, FILE *f, int every, int quiet)
{
    memset(p, 0, sizeof *p);
    p->f = f;
    p->every = every > 0 ? every : 1;
    p->quiet = quiet;
    p->tty = isatty(fileno(f));
}

void kt_progress_duration(char *buf, int size, double s)
{
    if (!(s >= 0) || s > 1e8)
        snprintf(buf, (size_t)size, "?");
    else if (s < 60)
        snprintf(buf, (size_t)size, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, (size_t)size, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, (size_t)size, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}

void kt_progress_step(kt_progress *p, int epoch, int epochs, int step, int steps, int64_t gstep,
                      double loss, double acc, double images_per_s, double eta_s)
{
    char eta[32];
    if (p->quiet)
        return;
    if (!p->tty && step % p->every != 0 && step != steps)
        return;
    kt_progress_duration(eta, sizeof eta, eta_s);
    fprintf(p->f, "%sepoch %d/%d step %d/%d (%lld) loss %.4f acc %.3f %.1f img/s eta %s%s",
            p->tty ? "\r\033[K" : "", epoch, epochs, step, steps, (long long)gstep, loss, acc,
            images_per_s, eta, p->tty ? "" : "\n");
    fflush(p->f);
    p->live = p->tty;
}

void kt_progress_printf(kt_progress *p, const char *fmt, ...)
{
    va_list ap;
    if (p->quiet)
        return;
    if (p->live)
        fputs("\r\033[K", p->f);
    p->live = 0;
    va_start(ap, fmt);
    vfprintf(p->f, fmt, ap);
    va_end(ap);
    fflush(p->f);
}

void kt_progress_done(kt_progress *p)
{
    if (p->live)
        fputc('\n', p->f);
    p->live = 0;
}
