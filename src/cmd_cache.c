/* cmd_cache.c - "kt cache [list|clear]": what the activation cache holds, and
 * deleting it. Glue over cache.h: one line per group (weights, cut,
 * preprocessing), its entries, bytes and last use; --json for scripts.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "cli.h"
#include "commands.h"

static void human(char *buf, size_t size, double bytes)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4)
        bytes /= 1024, u++;
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
}

static void when(char *buf, size_t size, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (t <= 0 || !localtime_r(&tt, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M", &tm))
        snprintf(buf, size, "-");
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(j) ? j->valuestring : "?";
}

static double jnum(const cJSON *o, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(j) ? j->valuedouble : 0;
}

/* "224/256 BGR eval" or "224/256 RGB views": input size, resize, channel
 * order, transform. */
static void describe_input(char *buf, size_t size, const cJSON *key)
{
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(key, "norm");
    snprintf(buf, size, "%d/%d %s %s", (int)jnum(key, "image_size"), (int)jnum(key, "resize"),
             jnum(norm, "bgr") ? "BGR" : "RGB",
             strcmp(jstr(key, "transform"), "train") == 0 ? "augmented" : "plain");
}

static kt_status list(const char *dir, int json, kt_err *err)
{
    kt_cache_group *g;
    int n;
    kt_status st = kt_cache_list(&g, &n, dir, err);
    if (st != KT_OK)
        return st;
    int64_t bytes = 0, entries = 0, cap = kt_cache_cap(dir);
    for (int i = 0; i < n; i++)
        bytes += g[i].bytes, entries += g[i].entries;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "dir", dir);
        cJSON_AddNumberToObject(o, "cap", (double)cap);
        cJSON_AddNumberToObject(o, "bytes", (double)bytes);
        cJSON_AddNumberToObject(o, "entries", (double)entries);
        cJSON *arr = cJSON_AddArrayToObject(o, "groups");
        for (int i = 0; i < n; i++) {
            cJSON *e = cJSON_CreateObject(), *desc = g[i].json ? cJSON_Parse(g[i].json) : NULL;
            char t[32];
            struct tm tm;
            time_t tt = (time_t)g[i].last_use;
            cJSON_AddStringToObject(e, "id", g[i].id);
            cJSON_AddNumberToObject(e, "entries", (double)g[i].entries);
            cJSON_AddNumberToObject(e, "bytes", (double)g[i].bytes);
            if (g[i].last_use > 0 && gmtime_r(&tt, &tm) &&
                strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tm))
                cJSON_AddStringToObject(e, "last_use", t);
            else
                cJSON_AddNullToObject(e, "last_use");
            /* what the run that made the group wrote: key, weights, variant,
             * seconds_per_image */
            while (desc && desc->child) {
                cJSON *k = cJSON_DetachItemViaPointer(desc, desc->child);
                cJSON_AddItemToObject(e, k->string, k);
            }
            cJSON_Delete(desc);
            cJSON_AddItemToArray(arr, e);
        }
        char *text = cJSON_PrintUnformatted(o);
        if (text)
            printf("%s\n", text);
        cJSON_Delete(o);
        kt_cache_groups_free(g, n);
        if (!text)
            return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
        free(text);
        return KT_OK;
    }
    char b[32], c[32];
    human(b, sizeof b, (double)bytes);
    human(c, sizeof c, (double)cap);
    printf("%s: %d group%s, %lld entries, %s (cap %s)\n", dir, n, n == 1 ? "" : "s",
           (long long)entries, b, c);
    if (n)
        printf("%-16s  %-10s  %-22s  %-7s  %7s  %10s  %-16s  %s\n", "GROUP", "CUT", "INPUT", "DTYPE",
               "ENTRIES", "SIZE", "LAST USE", "WEIGHTS");
    for (int i = 0; i < n; i++) {
        cJSON *desc = g[i].json ? cJSON_Parse(g[i].json) : NULL;
        const cJSON *key = cJSON_GetObjectItemCaseSensitive(desc, "key");
        char input[64], size[32], last[32];
        describe_input(input, sizeof input, key);
        human(size, sizeof size, (double)g[i].bytes);
        when(last, sizeof last, g[i].last_use);
        printf("%-16s  %-10s  %-22s  %-7s  %7lld  %10s  %-16s  %s\n", g[i].id, jstr(key, "cut"),
               key ? input : "?", jstr(key, "dtype"), (long long)g[i].entries, size, last,
               jstr(desc, "weights"));
        cJSON_Delete(desc);
    }
    kt_cache_groups_free(g, n);
    return KT_OK;
}

static kt_status clear(const char *dir, char **ids, int nids, int json, kt_err *err)
{
    int64_t freed;
    int ngroups;
    kt_status st = kt_cache_clear(dir, (const char *const *)ids, nids, &freed, &ngroups, err);
    if (st != KT_OK)
        return st;
    if (nids && ngroups == 0)
        return kt_err_set(err, KT_ERR_USAGE, "no group in %s starts with %s%s", dir, ids[0],
                          nids > 1 ? " (or the other ids given)" : "");
    if (json) {
        printf("{\"dir\":");
        cJSON *d = cJSON_CreateString(dir);
        char *s = cJSON_PrintUnformatted(d);
        printf("%s,\"groups\":%d,\"bytes\":%lld}\n", s ? s : "null", ngroups, (long long)freed);
        free(s);
        cJSON_Delete(d);
    } else {
        char b[32];
        human(b, sizeof b, (double)freed);
        printf("%s: cleared %d group%s, %s\n", dir, ngroups, ngroups == 1 ? "" : "s", b);
    }
    return KT_OK;
}

kt_status kt_cmd_cache(int argc, char **argv, kt_err *err)
{
    const char *dir_opt = NULL;
    int json = 0;
    kt_opt opts[] = {
        {"dir", 0, KT_OPT_STRING, "DIR", "cache folder (default: $KT_CACHE_DIR, $XDG_CACHE_HOME/kt, ~/.cache/kt)", 0, 0, &dir_opt},
        {"json", 0, KT_OPT_FLAG, NULL, "one JSON object on stdout", 0, 0, &json},
    };
    static const kt_cmd cmd = {
        "cache",
        "Shows or clears the activation cache: the frozen part's outputs that kt train\n"
        "keeps between runs, grouped by weights, cut point and preprocessing.\n"
        "  list            each group: id, cut, input, dtype, entries, size, last use (default)\n"
        "  clear [GROUP]   delete every group, or those whose id starts with GROUP",
        "kt cache [list | clear [GROUP...]] [options]"};
    char **pos, dir[4096];
    int npos;
    kt_status st = kt_cli_parse(&cmd, opts, KT_NOPTS(opts), argc, argv, &pos, &npos, err);
    if (st != KT_OK || !pos)
        return st;
    if ((st = kt_cache_dir(dir, sizeof dir, dir_opt, err)) != KT_OK)
        return st;
    const char *action = npos ? pos[0] : "list";
    if (strcmp(action, "list") == 0) {
        if (npos > 1)
            return kt_err_set(err, KT_ERR_USAGE, "list takes no arguments (got '%s')", pos[1]);
        return list(dir, json, err);
    }
    if (strcmp(action, "clear") == 0)
        return clear(dir, pos + 1, npos - 1, json, err);
    return kt_err_set(err, KT_ERR_USAGE, "unknown action '%s': expected list or clear", action);
}
