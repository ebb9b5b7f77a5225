/* weights.c - safetensors and TF.js layers models as named float32 tensors;
 * the safetensors writer used for checkpoints. See weights.h.
 *
 * Files are mmapped read-only and stay mapped for the life of the kt_weights:
 * F32 tensors that are 4-byte aligned in the mapping point straight into it,
 * so loading a 100 MB ResNet costs page faults, not copies. Everything else
 * (F16/BF16 converted, misaligned data, TF.js tensors split across shards)
 * gets an owned float32 copy.
 *
 * Trust nothing in the file: every length and offset is checked against the
 * mapping before a byte is read, numbers from JSON are checked to be exact
 * non-negative integers before they become sizes, and element counts are
 * bounded by the bytes available before any multiplication can overflow.
 */
#include "weights.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    void *base;
    size_t size;
} kt_map;

struct kt_weights {
    kt_format format;
    char *path;          /* as given by the caller; for messages */
    int n;
    kt_tensor *t;        /* [n], in file order */
    void **own;          /* [n] owned data of t[i] or NULL (points into a map) */
    int *sorted;         /* [n] indices of t sorted by name, for lookups */
    kt_map *maps;        /* [nmaps] every mapped file */
    int nmaps;
    char *kt_meta;       /* __metadata__["kt"], owned, or NULL */
    char *topology;      /* TF.js modelTopology as JSON text, owned, or NULL */
};

/* JSON numbers are doubles; sizes and offsets must be exact integers that a
 * double represents exactly (< 2^53), which also bounds any file we can map. */
static int json_u64(const cJSON *j, uint64_t *v)
{
    if (!cJSON_IsNumber(j))
        return 0;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d))
        return 0;
    *v = (uint64_t)d;
    return 1;
}

static kt_status map_file(kt_map *m, const char *path, kt_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;

    m->base = NULL;
    m->size = 0;
    if (fd < 0)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", path, strerror(errno));
        close(fd);
        return KT_ERR_RUNTIME;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: not a regular file", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size > 0) {
        m->base = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m->base == MAP_FAILED) {
            m->base = NULL;
            kt_err_set(err, KT_ERR_RUNTIME, "%s: mmap: %s", path, strerror(errno));
            close(fd);
            return KT_ERR_RUNTIME;
        }
    }
    close(fd);
    return KT_OK;
}

void kt_weights_free(kt_weights *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n; i++) {
        free(w->own[i]);
        free((char *)w->t[i].name);
    }
    for (int i = 0; i < w->nmaps; i++)
        if (w->maps[i].base)
            munmap(w->maps[i].base, w->maps[i].size);
    free(w->t);
    free(w->own);
    free(w->sorted);
    free(w->maps);
    free(w->kt_meta);
    free(w->topology);
    free(w->path);
    free(w);
}

static kt_weights *weights_new(const char *path, kt_format fmt, int n)
{
    kt_weights *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->format = fmt;
    w->path = strdup(path);
    w->t = calloc(n > 0 ? (size_t)n : 1, sizeof *w->t);
    w->own = calloc(n > 0 ? (size_t)n : 1, sizeof *w->own);
    w->sorted = calloc(n > 0 ? (size_t)n : 1, sizeof *w->sorted);
    if (!w->path || !w->t || !w->own || !w->sorted) {
        kt_weights_free(w);
        return NULL;
    }
    return w;
}

/* IEEE half to float, exactly (subnormals, inf and NaN included; NaN is
 * rejected later by the finiteness check). */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        /* Subnormal or zero: value = man * 2^-24, exact in float. */
        float f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static float bf16_to_float(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static int cmp_name_idx(const void *a, const void *b, void *ctx)
{
    const kt_tensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* Sorts the lookup index and rejects duplicate names. */
static kt_status index_names(kt_weights *w, kt_err *err)
{
    for (int i = 0; i < w->n; i++)
        w->sorted[i] = i;
    qsort_r(w->sorted, (size_t)w->n, sizeof *w->sorted, cmp_name_idx, w->t);
    for (int i = 1; i < w->n; i++)
        if (strcmp(w->t[w->sorted[i]].name, w->t[w->sorted[i - 1]].name) == 0)
            return kt_err_set(err, KT_ERR_RUNTIME, "%s: tensor '%s' appears twice", w->path,
                              w->t[w->sorted[i]].name);
    return KT_OK;
}

/* NaN or Inf in a weight makes every output NaN much later, far from the
 * cause, so refuse it here with the tensor's name. */
static kt_status check_finite(const kt_weights *w, const kt_tensor *t, kt_err *err)
{
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(t->data[i]))
            return kt_err_set(err, KT_ERR_RUNTIME, "%s: tensor '%s': %s at element %lld", w->path,
                              t->name, isnan(t->data[i]) ? "NaN" : "Inf", (long long)i);
    return KT_OK;
}

/* Bound on elements while multiplying dims: numel * 8 cannot overflow, and
 * the byte count is then compared with what the file really holds. */
#define SHAPE_LIMIT (UINT64_MAX / 16)

/* Parses a shape array: ndim <= KT_MAX_DIMS, non-negative integer dims, and
 * numel <= limit, checked as it multiplies so it cannot overflow. Fills t->ndim, t->shape, t->numel; returns 0 with a message
 * in why on failure. */
static int parse_shape(kt_tensor *t, const cJSON *shape, uint64_t limit, char *why, size_t whysz)
{
    if (!cJSON_IsArray(shape)) {
        snprintf(why, whysz, "\"shape\" is not an array");
        return 0;
    }
    int nd = cJSON_GetArraySize(shape);
    if (nd > KT_MAX_DIMS) {
        snprintf(why, whysz, "%d dimensions (kt reads at most %d)", nd, KT_MAX_DIMS);
        return 0;
    }
    uint64_t numel = 1;
    int over = 0, zero = 0, d = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, shape) {
        uint64_t v;
        if (!json_u64(it, &v)) {
            snprintf(why, whysz, "shape[%d] is not a non-negative integer", d);
            return 0;
        }
        t->shape[d++] = (int64_t)v;
        if (v == 0)
            zero = 1;
        else if (numel > limit / v)
            over = 1;
        else
            numel *= v;
    }
    if (over && !zero) {
        snprintf(why, whysz, "shape is absurdly large");
        return 0;
    }
    for (int i = d; i < KT_MAX_DIMS; i++)
        t->shape[i] = 0;
    t->ndim = nd;
    t->numel = zero ? 0 : (int64_t)numel;
    return 1;
}

typedef struct {
    uint64_t begin, end;
    int idx;
} kt_span;

static int cmp_span(const void *a, const void *b)
{
    const kt_span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static const char *strip_prefix(const char *name)
{
    if (strncmp(name, "module.", 7) == 0 && name[7])
        return name + 7;
    if (strncmp(name, "model.", 6) == 0 && name[6])
        return name + 6;
    return name;
}

static kt_status load_safetensors(kt_weights **out, const char *path, kt_err *err)
{
    kt_map m = {0};
    kt_weights *w = NULL;
    cJSON *hdr = NULL;
    kt_span *spans = NULL;
    kt_status st = map_file(&m, path, err);
    if (st != KT_OK)
        return st;

    const unsigned char *base = m.base;
    if (m.size < 8) {
        st = kt_err_set(err, KT_ERR_RUNTIME,
                        "%s: truncated safetensors file (%zu bytes; the 8-byte header length is missing)",
                        path, m.size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | base[i];
    if (hlen > m.size - 8) {
        st = kt_err_set(err, KT_ERR_RUNTIME,
                        "%s: safetensors header length %llu goes past the end of the file (%zu bytes): truncated or not a safetensors file",
                        path, (unsigned long long)hlen, m.size);
        goto fail;
    }
    const char *end = NULL;
    hdr = cJSON_ParseWithLengthOpts((const char *)base + 8, (size_t)hlen, &end, 0);
    if (!hdr || !cJSON_IsObject(hdr)) {
        long at = end ? (long)(end - (const char *)base - 8) : 0;
        st = kt_err_set(err, KT_ERR_RUNTIME,
                        "%s: safetensors header is not a valid JSON object (error near header byte %ld)",
                        path, at);
        goto fail;
    }
    const unsigned char *data = base + 8 + hlen;
    uint64_t dsize = m.size - 8 - hlen;

    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, hdr)
        if (strcmp(it->string, "__metadata__") != 0)
            n++;
    w = weights_new(path, KT_FORMAT_SAFETENSORS, n);
    spans = calloc(n > 0 ? (size_t)n : 1, sizeof *spans);
    if (!w || !spans || !(w->maps = calloc(1, sizeof *w->maps))) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
        goto fail;
    }
    w->maps[0] = m;
    w->nmaps = 1;
    m.base = NULL; /* the weights own the mapping now */

    int k = 0;
    cJSON_ArrayForEach(it, hdr) {
        const char *name = it->string;
        if (strcmp(name, "__metadata__") == 0) {
            if (!cJSON_IsObject(it)) {
                st = kt_err_set(err, KT_ERR_RUNTIME, "%s: __metadata__ is not a JSON object", path);
                goto fail;
            }
            const cJSON *kt = cJSON_GetObjectItemCaseSensitive(it, "kt");
            if (kt && !cJSON_IsString(kt)) {
                st = kt_err_set(err, KT_ERR_RUNTIME, "%s: __metadata__.kt is not a string", path);
                goto fail;
            }
            if (kt && !(w->kt_meta = strdup(kt->valuestring))) {
                st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
                goto fail;
            }
            continue;
        }
        kt_tensor *t = &w->t[k];
        if (!(t->name = strdup(strip_prefix(name)))) {
            st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
            goto fail;
        }
        w->n = k + 1; /* from here on kt_weights_free releases t */
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsObject(it) || !cJSON_IsString(jd) || !js || !cJSON_IsArray(jo)) {
            st = kt_err_set(err, KT_ERR_RUNTIME,
                            "%s: tensor '%s': header entry needs \"dtype\", \"shape\" and \"data_offsets\"",
                            path, name);
            goto fail;
        }
        const char *dt = jd->valuestring;
        int isz = !strcmp(dt, "F32") ? 4 : !strcmp(dt, "F16") || !strcmp(dt, "BF16") ? 2
                : !strcmp(dt, "I64") ? 8 : 0;
        if (!isz) {
            st = kt_err_set(err, KT_ERR_RUNTIME,
                            "%s: tensor '%s': unsupported dtype '%s' (kt reads F32, F16, BF16 and I64)",
                            path, name, dt);
            goto fail;
        }
        uint64_t b, e;
        if (cJSON_GetArraySize(jo) != 2 || !json_u64(jo->child, &b) || !json_u64(jo->child->next, &e)
            || b > e) {
            st = kt_err_set(err, KT_ERR_RUNTIME,
                            "%s: tensor '%s': data_offsets must be two integers [begin, end] with begin <= end",
                            path, name);
            goto fail;
        }
        if (e > dsize) {
            st = kt_err_set(err, KT_ERR_RUNTIME,
                            "%s: tensor '%s': data_offsets [%llu, %llu] go past the end of the data (%llu bytes): truncated file?",
                            path, name, (unsigned long long)b, (unsigned long long)e,
                            (unsigned long long)dsize);
            goto fail;
        }
        char why[128];
        if (!parse_shape(t, js, SHAPE_LIMIT, why, sizeof why)) {
            st = kt_err_set(err, KT_ERR_RUNTIME, "%s: tensor '%s': %s", path, name, why);
            goto fail;
        }
        if ((uint64_t)t->numel * (uint64_t)isz != e - b) {
            st = kt_err_set(err, KT_ERR_RUNTIME,
                            "%s: tensor '%s': shape holds %lld %s values (%llu bytes) but data_offsets span %llu bytes",
                            path, name, (long long)t->numel, dt,
                            (unsigned long long)t->numel * (unsigned long long)isz,
                            (unsigned long long)(e - b));
            goto fail;
        }
        spans[k] = (kt_span){b, e, k};
        const unsigned char *src = data + b;
        size_t bytes = (size_t)(e - b);
        if (isz == 8) {
            t->is_int = 1;
            if ((uintptr_t)src % 8 == 0) {
                t->idata = (const int64_t *)(const void *)src;
            } else {
                if (!(w->own[k] = malloc(bytes ? bytes : 1))) {
                    st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
                    goto fail;
                }
                memcpy(w->own[k], src, bytes);
                t->idata = w->own[k];
            }
        } else if (isz == 4 && (uintptr_t)src % 4 == 0) {
            t->data = (const float *)(const void *)src;
        } else {
            float *f = malloc(t->numel ? (size_t)t->numel * 4 : 1);
            if (!f) {
                st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
                goto fail;
            }
            w->own[k] = f;
            if (isz == 4) {
                memcpy(f, src, bytes);
            } else {
                int bf = strcmp(dt, "BF16") == 0;
                for (int64_t i = 0; i < t->numel; i++) {
                    uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
                    f[i] = bf ? bf16_to_float(h) : half_to_float(h);
                }
            }
            t->data = f;
        }
        if (!t->is_int && (st = check_finite(w, t, err)) != KT_OK)
            goto fail;
        k++;
    }

    /* Overlapping tensors would alias each other's bytes: a sign of a corrupt
     * or hostile header. Empty tensors overlap nothing. */
    qsort(spans, (size_t)n, sizeof *spans, cmp_span);
    uint64_t prev_end = 0;
    int prev = -1;
    for (int i = 0; i < n; i++) {
        if (spans[i].begin == spans[i].end)
            continue;
        if (prev >= 0 && spans[i].begin < prev_end) {
            st = kt_err_set(err, KT_ERR_RUNTIME,
                            "%s: tensors '%s' and '%s' overlap in the data area", path,
                            w->t[prev].name, w->t[spans[i].idx].name);
            goto fail;
        }
        prev_end = spans[i].end;
        prev = spans[i].idx;
    }
    if ((st = index_names(w, err)) != KT_OK)
        goto fail;
    free(spans);
    cJSON_Delete(hdr);
    *out = w;
    return KT_OK;

fail:
    free(spans);
    cJSON_Delete(hdr);
    kt_weights_free(w);
    if (m.base)
        munmap(m.base, m.size);
    return st;
}

/* Reads a whole small file (model.json) into a NUL-terminated buffer. */
static kt_status read_text(char **out, const char *path, kt_err *err)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, len = 0;
    if (!f)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", path, strerror(errno));
    for (;;) {
        if (len + 4096 + 1 > cap) {
            size_t nc = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, nc);
            if (!nb) {
                free(buf);
                fclose(f);
                return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: read error", path);
    }
    buf[len] = '\0';
    *out = buf;
    return KT_OK;
}

/* Shards whose sizes are whole pages can sit back to back in one virtual
 * range, so tensors that straddle two shards need no copy: the real
 * ResNet-50 comes in 4 MiB shards and ~70% of its bytes sit in tensors that
 * straddle. The mappings are moved (mremap) into a reserved range; if that
 * fails half way the shards stay separate mappings and straddlers get
 * copied. Returns 1 when joined. */
static int join_shards(kt_map *maps, int n, const uint64_t *starts, uint64_t total)
{
    long page = sysconf(_SC_PAGESIZE);
    if (n < 2 || page <= 0)
        return 0;
    for (int s = 0; s < n; s++)
        if (!maps[s].base || (s < n - 1 && maps[s].size % (size_t)page))
            return 0;
    size_t span = (size_t)(total + (uint64_t)page - 1) / (size_t)page * (size_t)page;
    char *base = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return 0;
    for (int s = 0; s < n; s++) {
        void *r = mremap(maps[s].base, maps[s].size, maps[s].size, MREMAP_MAYMOVE | MREMAP_FIXED,
                         base + starts[s]);
        if (r == MAP_FAILED) {
            munmap(base + starts[s], span - (size_t)starts[s]);
            return 0;
        }
        maps[s].base = r;
    }
    return 1;
}

/* TF.js layers model: model.json's weightsManifest lists groups; each group's
 * shards are one logical byte stream holding its tensors back to back in
 * manifest order. */
static kt_status load_tfjs(kt_weights **out, const char *path, kt_err *err)
{
    char *text = NULL, *dir = NULL, *shard = NULL;
    cJSON *root = NULL;
    kt_weights *w = NULL;
    uint64_t *starts = NULL;
    kt_status st;
    struct stat sb;
    char *json_path = NULL;

    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        size_t l = strlen(path);
        json_path = malloc(l + 12);
        if (!json_path)
            return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
        snprintf(json_path, l + 12, "%s%smodel.json", path, l && path[l - 1] == '/' ? "" : "/");
    } else if (!(json_path = strdup(path))) {
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
    }
    if ((st = read_text(&text, json_path, err)) != KT_OK)
        goto fail;
    const char *end = NULL;
    root = cJSON_ParseWithOpts(text, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: not valid JSON (error near byte %ld)", json_path,
                        end ? (long)(end - text) : 0L);
        goto fail;
    }
    const cJSON *man = cJSON_GetObjectItemCaseSensitive(root, "weightsManifest");
    if (!cJSON_IsArray(man)) {
        st = kt_err_set(err, KT_ERR_RUNTIME,
                        "%s: no \"weightsManifest\" array: not a TF.js model.json", json_path);
        goto fail;
    }
    int n = 0, nshards = 0, g = 0;
    const cJSON *grp, *it;
    cJSON_ArrayForEach(grp, man) {
        const cJSON *paths = cJSON_GetObjectItemCaseSensitive(grp, "paths");
        const cJSON *ws = cJSON_GetObjectItemCaseSensitive(grp, "weights");
        if (!cJSON_IsArray(paths) || !cJSON_IsArray(ws)) {
            st = kt_err_set(err, KT_ERR_RUNTIME,
                            "%s: weightsManifest[%d] needs \"paths\" and \"weights\" arrays", json_path, g);
            goto fail;
        }
        cJSON_ArrayForEach(it, paths) {
            if (!cJSON_IsString(it)) {
                st = kt_err_set(err, KT_ERR_RUNTIME, "%s: weightsManifest[%d].paths holds a non-string",
                                json_path, g);
                goto fail;
            }
            nshards++;
        }
        n += cJSON_GetArraySize(ws);
        g++;
    }
    w = weights_new(json_path, KT_FORMAT_TFJS, n);
    if (!w || !(w->maps = calloc(nshards ? (size_t)nshards : 1, sizeof *w->maps))
        || !(starts = calloc((size_t)nshards + 1, sizeof *starts))) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", json_path);
        goto fail;
    }
    const cJSON *topo = cJSON_GetObjectItemCaseSensitive(root, "modelTopology");
    if (topo && !(w->topology = cJSON_PrintUnformatted(topo))) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", json_path);
        goto fail;
    }
    const char *slash = strrchr(json_path, '/');
    size_t dlen = slash ? (size_t)(slash - json_path + 1) : 0;
    if (!(dir = malloc(dlen + 1))) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", json_path);
        goto fail;
    }
    memcpy(dir, json_path, dlen);
    dir[dlen] = '\0';

    int k = 0;
    g = 0;
    cJSON_ArrayForEach(grp, man) {
        /* Map this group's shards; starts[] are their offsets in the stream. */
        int first = w->nmaps, j = 0;
        uint64_t total = 0;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(grp, "paths")) {
            const char *p = it->valuestring;
            if (strstr(p, "..") || p[0] == '/') {
                st = kt_err_set(err, KT_ERR_RUNTIME,
                                "%s: weightsManifest[%d].paths[%d] '%s' must be a file beside model.json",
                                json_path, g, j, p);
                goto fail;
            }
            free(shard);
            size_t sl = dlen + strlen(p) + 1;
            if (!(shard = malloc(sl))) {
                st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", json_path);
                goto fail;
            }
            snprintf(shard, sl, "%s%s", dir, p);
            if ((st = map_file(&w->maps[w->nmaps], shard, err)) != KT_OK) {
                kt_err_prefix(err, "%s: weight shard %d of group %d", json_path, j + 1, g);
                goto fail;
            }
            starts[w->nmaps] = total;
            total += w->maps[w->nmaps].size;
            w->nmaps++;
            j++;
        }
        int last = w->nmaps; /* shards [first, last) */
        int joined = join_shards(w->maps + first, last - first, starts + first, total);
        uint64_t off = 0;
        int gi = 0;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(grp, "weights")) {
            kt_tensor *t = &w->t[k];
            const cJSON *jn = cJSON_GetObjectItemCaseSensitive(it, "name");
            const cJSON *js = cJSON_GetObjectItemCaseSensitive(it, "shape");
            const cJSON *jd = cJSON_GetObjectItemCaseSensitive(it, "dtype");
            if (!cJSON_IsString(jn) || !cJSON_IsArray(js) || !cJSON_IsString(jd)) {
                st = kt_err_set(err, KT_ERR_RUNTIME,
                                "%s: weightsManifest[%d].weights[%d] needs \"name\", \"shape\" and \"dtype\"",
                                json_path, g, gi);
                goto fail;
            }
            const char *name = jn->valuestring;
            if (!(t->name = strdup(name))) {
                st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", json_path);
                goto fail;
            }
            w->n = k + 1;
            if (strcmp(jd->valuestring, "float32") != 0
                || cJSON_GetObjectItemCaseSensitive(it, "quantization")) {
                st = kt_err_set(err, KT_ERR_RUNTIME,
                                "%s: tensor '%s': dtype '%s'%s is not supported (kt reads float32 TF.js weights)",
                                json_path, name, jd->valuestring,
                                cJSON_GetObjectItemCaseSensitive(it, "quantization") ? " (quantized)" : "");
                goto fail;
            }
            char why[128];
            if (!parse_shape(t, js, SHAPE_LIMIT, why, sizeof why)) {
                st = kt_err_set(err, KT_ERR_RUNTIME, "%s: tensor '%s': %s", json_path, name, why);
                goto fail;
            }
            uint64_t bytes = (uint64_t)t->numel * 4;
            if (off + bytes > total) {
                st = kt_err_set(err, KT_ERR_RUNTIME,
                                "%s: tensor '%s' needs bytes %llu..%llu of weight group %d, but its shards hold only %llu bytes (shard truncated or missing from \"paths\"?)",
                                json_path, name, (unsigned long long)off,
                                (unsigned long long)(off + bytes), g, (unsigned long long)total);
                goto fail;
            }
            int s = first;
            while (s + 1 < last && starts[s + 1] <= off)
                s++;
            const unsigned char *src = (const unsigned char *)w->maps[s].base + (off - starts[s]);
            if (bytes == 0) {
                static const float empty[1];
                t->data = empty;
            } else if ((joined || off + bytes <= starts[s] + w->maps[s].size) && (uintptr_t)src % 4 == 0) {
                t->data = (const float *)(const void *)src;
            } else {
                /* Spans shards (or misaligned): gather a copy. */
                unsigned char *dst = malloc((size_t)bytes);
                if (!dst) {
                    st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", json_path);
                    goto fail;
                }
                w->own[k] = dst;
                uint64_t done = 0;
                while (done < bytes) {
                    uint64_t pos = off + done, in = pos - starts[s];
                    uint64_t avail = w->maps[s].size - in, take = bytes - done;
                    if (take > avail)
                        take = avail;
                    memcpy(dst + done, (const unsigned char *)w->maps[s].base + in, (size_t)take);
                    done += take;
                    s++;
                }
                t->data = (const float *)(const void *)dst;
            }
            if ((st = check_finite(w, t, err)) != KT_OK)
                goto fail;
            off += bytes;
            k++;
            gi++;
        }
        if (off != total) {
            st = kt_err_set(err, KT_ERR_RUNTIME,
                            "%s: weight group %d: the manifest describes %llu bytes but its shards hold %llu",
                            json_path, g, (unsigned long long)off, (unsigned long long)total);
            goto fail;
        }
        g++;
    }
    if ((st = index_names(w, err)) != KT_OK)
        goto fail;
    free(starts);
    free(shard);
    free(dir);
    free(text);
    free(json_path);
    cJSON_Delete(root);
    *out = w;
    return KT_OK;

fail:
    free(starts);
    free(shard);
    free(dir);
    free(text);
    free(json_path);
    cJSON_Delete(root);
    kt_weights_free(w);
    return st;
}

kt_status kt_weights_load(kt_weights **out, const char *path, kt_err *err)
{
    struct stat sb;
    unsigned char head[16];
    size_t got = 0;

    *out = NULL;
    if (stat(path, &sb) != 0)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return load_tfjs(out, path, err);
    FILE *f = fopen(path, "rb");
    if (!f)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", path, strerror(errno));
    got = fread(head, 1, sizeof head, f);
    fclose(f);
    /* safetensors: byte 8 opens the header object. A JSON file starts with
     * '{' (after whitespace) instead; anything else gets safetensors' errors. */
    if (got >= 9 && head[8] == '{')
        return load_safetensors(out, path, err);
    size_t i = 0;
    while (i < got && (head[i] == ' ' || head[i] == '\n' || head[i] == '\r' || head[i] == '\t'))
        i++;
    if (i < got && head[i] == '{')
        return load_tfjs(out, path, err);
    return load_safetensors(out, path, err);
}

kt_format kt_weights_format(const kt_weights *w) { return w->format; }
const char *kt_weights_path(const kt_weights *w) { return w->path; }
int kt_weights_count(const kt_weights *w) { return w->n; }
const kt_tensor *kt_weights_at(const kt_weights *w, int i)
{
    return i >= 0 && i < w->n ? &w->t[i] : NULL;
}
const char *kt_weights_kt_metadata(const kt_weights *w) { return w->kt_meta; }
const char *kt_weights_tfjs_topology(const kt_weights *w) { return w->topology; }

const kt_tensor *kt_weights_find(const kt_weights *w, const char *name)
{
    int lo = 0, hi = w->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(name, w->t[w->sorted[mid]].name);
        if (c == 0)
            return &w->t[w->sorted[mid]];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* FNV-1a 64, but folding 8 bytes per multiply: a byte-wise FNV over 100 MB of
 * weights is a 100M-step dependency chain (~0.1 s); words make it 8x shorter.
 * Tensors are visited in name order so the checksum does not depend on the
 * order a file stores them in. */
#define FNV_OFF 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, b + i, 8);
        h = (h ^ v) * FNV_PRIME;
    }
    for (; i < n; i++)
        h = (h ^ b[i]) * FNV_PRIME;
    return h;
}

static uint64_t fnv_tensor(uint64_t h, const char *name, int ndim, const int64_t *shape,
                           const void *data, size_t bytes)
{
    int64_t nd = ndim;
    h = fnv_bytes(h, name, strlen(name) + 1);
    h = fnv_bytes(h, &nd, sizeof nd);
    h = fnv_bytes(h, shape, sizeof shape[0] * (size_t)ndim);
    return fnv_bytes(h, data, bytes);
}

uint64_t kt_weights_checksum(const kt_weights *w)
{
    uint64_t h = FNV_OFF;
    for (int i = 0; i < w->n; i++) {
        const kt_tensor *t = &w->t[w->sorted[i]];
        h = fnv_tensor(h, t->name, t->ndim, t->shape, t->is_int ? (const void *)t->idata : t->data,
                       (size_t)t->numel * (t->is_int ? 8 : 4));
    }
    return h;
}

static int cmp_wname_idx(const void *a, const void *b, void *ctx)
{
    const kt_wtensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

uint64_t kt_weights_checksum_list(const kt_wtensor *t, int n, int *order)
{
    uint64_t h = FNV_OFF;
    for (int i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, cmp_wname_idx, (void *)t);
    for (int i = 0; i < n; i++) {
        const kt_wtensor *x = &t[order[i]];
        int64_t numel = 1;
        for (int d = 0; d < x->ndim; d++)
            numel *= x->shape[d];
        h = fnv_tensor(h, x->name, x->ndim, x->shape,
                       x->idata ? (const void *)x->idata : (const void *)x->data,
                       (size_t)numel * (x->idata ? 8 : 4));
    }
    return h;
}

/* ---- writer ---- */

static kt_status write_all(int fd, const void *p, size_t n, const char *path, kt_err *err)
{
    const char *b = p;
    while (n > 0) {
        ssize_t r = write(fd, b, n > (1u << 30) ? (1u << 30) : n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return kt_err_set(err, KT_ERR_RUNTIME, "%s: write: %s", path, strerror(errno));
        }
        b += r;
        n -= (size_t)r;
    }
    return KT_OK;
}

kt_status kt_weights_write(const char *path, const kt_wtensor *t, int n, const char *kt_json,
                           kt_err *err)
{
    cJSON *hdr = NULL, *parsed = NULL;
    char *text = NULL, *tmp = NULL, *buf = NULL;
    int *order = NULL, fd = -1;
    kt_status st = KT_OK;

    if (kt_json && !(parsed = cJSON_Parse(kt_json))) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: kt metadata to store is not valid JSON", path);
        goto fail;
    }
    /* I64 tensors first, then F32: with no gaps allowed between tensors (the
     * reference safetensors reader rejects them) this keeps every tensor
     * aligned to its element size, since the data area starts 8-aligned. */
    order = malloc((n > 0 ? (size_t)n : 1) * sizeof *order);
    hdr = cJSON_CreateObject();
    if (!order || !hdr) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
        goto fail;
    }
    int m = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++)
            if ((t[i].idata != NULL) == (pass == 0))
                order[m++] = i;
    cJSON *meta = cJSON_AddObjectToObject(hdr, "__metadata__");
    if (!meta || !cJSON_AddStringToObject(meta, "format", "pt")
        || (kt_json && !cJSON_AddStringToObject(meta, "kt", kt_json))) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
        goto fail;
    }
    uint64_t off = 0;
    for (int j = 0; j < n; j++) {
        const kt_wtensor *x = &t[order[j]];
        if (!x->name || !x->name[0] || strcmp(x->name, "__metadata__") == 0
            || cJSON_GetObjectItemCaseSensitive(hdr, x->name)) {
            st = kt_err_set(err, KT_ERR_RUNTIME, "%s: tensor name '%s' is empty, reserved or repeated",
                            path, x->name ? x->name : "(null)");
            goto fail;
        }
        if (x->ndim < 0 || x->ndim > KT_MAX_DIMS || (!x->data && !x->idata)) {
            st = kt_err_set(err, KT_ERR_RUNTIME, "%s: tensor '%s': bad ndim or no data", path, x->name);
            goto fail;
        }
        int64_t numel = 1;
        for (int d = 0; d < x->ndim; d++) {
            if (x->shape[d] < 0) {
                st = kt_err_set(err, KT_ERR_RUNTIME, "%s: tensor '%s': negative dimension", path, x->name);
                goto fail;
            }
            numel *= x->shape[d];
        }
        if (x->data && !x->idata)
            for (int64_t i = 0; i < numel; i++)
                if (!isfinite(x->data[i])) {
                    /* The reader refuses such files, so refuse to write one. */
                    st = kt_err_set(err, KT_ERR_RUNTIME, "%s: tensor '%s' holds NaN/Inf at element %lld; not written",
                                    path, x->name, (long long)i);
                    goto fail;
                }
        uint64_t bytes = (uint64_t)numel * (x->idata ? 8 : 4);
        cJSON *e = cJSON_AddObjectToObject(hdr, x->name);
        cJSON *shape = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *offs = e ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        if (!e || !cJSON_AddStringToObject(e, "dtype", x->idata ? "I64" : "F32") || !shape || !offs) {
            st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
            goto fail;
        }
        for (int d = 0; d < x->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)x->shape[d]));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    /* cJSON puts "dtype" after "shape" as added; order inside entries does
     * not matter to readers. */
    if (!(text = cJSON_PrintUnformatted(hdr))) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
        goto fail;
    }
    size_t hl = strlen(text), padded = (hl + 7) / 8 * 8;
    if (!(buf = malloc(8 + padded))) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
        goto fail;
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (char)((uint64_t)padded >> (8 * i) & 0xff);
    memcpy(buf + 8, text, hl);
    memset(buf + 8 + hl, ' ', padded - hl);

    size_t pl = strlen(path);
    if (!(tmp = malloc(pl + 5))) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", path);
        goto fail;
    }
    snprintf(tmp, pl + 5, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    if ((st = write_all(fd, buf, 8 + padded, tmp, err)) != KT_OK)
        goto fail;
    for (int j = 0; j < n; j++) {
        const kt_wtensor *x = &t[order[j]];
        int64_t numel = 1;
        for (int d = 0; d < x->ndim; d++)
            numel *= x->shape[d];
        const void *p = x->idata ? (const void *)x->idata : (const void *)x->data;
        if ((st = write_all(fd, p, (size_t)numel * (x->idata ? 8 : 4), tmp, err)) != KT_OK)
            goto fail;
    }
    if (fsync(fd) != 0) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: fsync: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: close: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: rename from %s: %s", path, tmp, strerror(errno));
        goto fail;
    }
    /* The rename is durable only once the folder is synced. */
    const char *slash = strrchr(path, '/');
    if (slash) {
        size_t dl = slash == path ? 1 : (size_t)(slash - path);
        memcpy(tmp, path, dl);
        tmp[dl] = '\0';
    } else {
        strcpy(tmp, ".");
    }
    int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: fsync of folder %s: %s", path, tmp, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        free(tmp);
        tmp = NULL; /* the file is in place; do not unlink anything */
        goto fail;
    }
    close(dfd);
    free(tmp);
    free(buf);
    free(text);
    free(order);
    cJSON_Delete(hdr);
    cJSON_Delete(parsed);
    return KT_OK;

fail:
    if (fd >= 0)
        close(fd);
    if (tmp)
        unlink(tmp);
    free(tmp);
    free(buf);
    free(text);
    free(order);
    cJSON_Delete(hdr);
    cJSON_Delete(parsed);
    return st;
}
