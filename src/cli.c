/* cli.c - option tables: parsing, range checks, help text; see cli.h.
 *
 * Conventions follow getopt_long as users know it from git and curl:
 * "--name value", "--name=value", "-k 5", "-k5", bundled short flags "-vq",
 * "--" ends the options, a lone "-" is a positional (stdin). Options may come
 * after positionals. Positionals are gathered at the front of argv[1..] in
 * their original order, so no allocation is needed.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int kt_cli_distance(const char *a, const char *b)
{
    /* Levenshtein distance with one row; names are short, so a fixed row
     * suffices and longer inputs are simply capped. */
    enum { MAXLEN = 63 };
    int row[MAXLEN + 1];
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > MAXLEN)
        la = MAXLEN;
    if (lb > MAXLEN)
        lb = MAXLEN;
    for (int j = 0; j <= lb; j++)
        row[j] = j;
    for (int i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = i;
        for (int j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *kt_cli_suggest(const char *word, const char *const *cands, int n)
{
    const char *best = NULL;
    int bestd = 0;
    for (int i = 0; i < n; i++) {
        int d = kt_cli_distance(word, cands[i]);
        if (!best || d < bestd)
            best = cands[i], bestd = d;
    }
    /* Suggest only plausible typos: at most a third of the word wrong. */
    int limit = (int)strlen(word) / 3 + 1;
    return best && bestd <= limit ? best : NULL;
}

static const kt_opt *find_long(const kt_opt *opts, int nopts, const char *name, size_t len)
{
    for (int i = 0; i < nopts; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static const kt_opt *find_short(const kt_opt *opts, int nopts, char c)
{
    for (int i = 0; i < nopts; i++)
        if (opts[i].short_name && opts[i].short_name == c)
            return &opts[i];
    return NULL;
}

/* Prints a range as "in 1..1000", "> 0", ">= 1" for messages. */
static void range_text(char *buf, size_t size, const kt_opt *o)
{
    int isint = o->type == KT_OPT_INT;
    if (o->max >= 1e300 || (isint && o->max >= 2147483647.0))
        snprintf(buf, size, ">= %.15g", o->min);
    else
        snprintf(buf, size, "in %.15g..%.15g", o->min, o->max);
}

static kt_status set_value(const kt_opt *o, const char *label, const char *val, kt_err *err)
{
    char range[96];
    char *end;

    switch (o->type) {
    case KT_OPT_FLAG:
        *(int *)o->dest = 1;
        return KT_OK;
    case KT_OPT_STRING:
        *(const char **)o->dest = val;
        return KT_OK;
    case KT_OPT_INT: {
        errno = 0;
        long v = strtol(val, &end, 10);
        range_text(range, sizeof range, o);
        if (end == val || *end || errno || v < o->min || v > o->max)
            return kt_err_set(err, KT_ERR_USAGE, "%s: expected an integer %s, got '%s'", label, range,
                              val);
        *(int *)o->dest = (int)v;
        return KT_OK;
    }
    case KT_OPT_DOUBLE: {
        errno = 0;
        double v = strtod(val, &end);
        range_text(range, sizeof range, o);
        if (end == val || *end || errno || !isfinite(v) || v < o->min || v > o->max)
            return kt_err_set(err, KT_ERR_USAGE, "%s: expected a number %s, got '%s'", label, range, val);
        *(double *)o->dest = v;
        return KT_OK;
    }
    }
    return kt_err_set(err, KT_ERR_RUNTIME, "%s: bad option type", label);
}

static kt_status unknown_long(const kt_opt *opts, int nopts, const char *arg, size_t len, kt_err *err)
{
    const char *names[64];
    char word[64];
    int n = 0;
    for (int i = 0; i < nopts && n < 63; i++)
        names[n++] = opts[i].name;
    names[n++] = "help";
    snprintf(word, sizeof word, "%.*s", (int)len, arg);
    const char *s = kt_cli_suggest(word, names, n);
    if (s)
        return kt_err_set(err, KT_ERR_USAGE, "unknown option '--%s'; did you mean '--%s'?", word, s);
    return kt_err_set(err, KT_ERR_USAGE, "unknown option '--%s'", word);
}

kt_status kt_cli_parse(const kt_cmd *cmd, kt_opt *opts, int nopts, int argc, char **argv,
                       char ***pos, int *npos, kt_err *err)
{
    char label[80];
    int np = 0, only_pos = 0;

    *pos = NULL;
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            argv[1 + np++] = a; /* never overtakes i: slot already consumed */
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            if (len == 4 && memcmp(name, "help", 4) == 0 && !eq) {
                kt_cli_help(stdout, cmd, opts, nopts);
                return KT_OK;
            }
            const kt_opt *o = find_long(opts, nopts, name, len);
            if (!o)
                return unknown_long(opts, nopts, name, len, err);
            snprintf(label, sizeof label, "--%s", o->name);
            const char *val = NULL;
            if (o->type == KT_OPT_FLAG) {
                if (eq)
                    return kt_err_set(err, KT_ERR_USAGE, "%s: takes no value", label);
            } else if (eq) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                return kt_err_set(err, KT_ERR_USAGE, "%s: missing value %s", label, o->metavar);
            }
            kt_status st = set_value(o, label, val, err);
            if (st != KT_OK)
                return st;
            continue;
        }
        /* Short options, possibly bundled: -vq, -k5, -vk 5. */
        for (const char *c = a + 1; *c; c++) {
            if (*c == 'h') {
                kt_cli_help(stdout, cmd, opts, nopts);
                return KT_OK;
            }
            const kt_opt *o = find_short(opts, nopts, *c);
            if (!o)
                return kt_err_set(err, KT_ERR_USAGE, "unknown option '-%c'", *c);
            snprintf(label, sizeof label, "-%c", *c);
            const char *val = NULL;
            if (o->type != KT_OPT_FLAG) {
                if (c[1])
                    val = c + 1;
                else if (i + 1 < argc)
                    val = argv[++i];
                else
                    return kt_err_set(err, KT_ERR_USAGE, "%s: missing value %s", label, o->metavar);
            }
            kt_status st = set_value(o, label, val, err);
            if (st != KT_OK)
                return st;
            if (val)
                break;
        }
    }
    argv[1 + np] = NULL;
    *pos = argv + 1;
    *npos = np;
    return KT_OK;
}

static void help_line(FILE *f, char s, const char *name, const char *metavar, const char *help)
{
    char left[64];
    int n = s ? snprintf(left, sizeof left, "  -%c, --%s", s, name)
              : snprintf(left, sizeof left, "      --%s", name);
    if (metavar && n > 0 && (size_t)n < sizeof left)
        snprintf(left + n, sizeof left - (size_t)n, " %s", metavar);
    if (strlen(left) < 26)
        fprintf(f, "%-26s %s\n", left, help);
    else
        fprintf(f, "%s\n%-26s %s\n", left, "", help);
}

void kt_cli_help(FILE *f, const kt_cmd *cmd, const kt_opt *opts, int nopts)
{
    fprintf(f, "usage: %s\n\n%s\n\noptions:\n", cmd->usage, cmd->summary);
    for (int i = 0; i < nopts; i++)
        help_line(f, opts[i].short_name, opts[i].name, opts[i].metavar, opts[i].help);
    help_line(f, 'h', "help", NULL, "show this help and exit");
    fprintf(f, "\nSee kt(1) for details.\n");
}
