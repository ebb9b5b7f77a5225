/* cache.c - the activation cache (see cache.h for what it promises).
 *
 * Open runs in two phases over the dataset:
 *   A. worker threads read every image file, hash its bytes and read the
 *      entries of its views straight into the run's slots, verifying them;
 *   B. the missing views are decoded and transformed by the same workers a
 *      batch at a time, run through the frozen part (an inference kt_resnet
 *      that stops at the cut, freed afterwards), stored in their slots and
 *      written to the folder.
 * Then the folder is trimmed to its cap. After open, batches are gathers
 * from the slots: no decoding, no network.
 *
 * Why per-entry files rather than one pack per dataset: a folder that gains
 * images only adds files, two runs writing the same entry cannot corrupt
 * each other (each renames a complete temporary into place), eviction can
 * drop single entries, and a damaged file costs one recomputation.
 *
 * The hash of file contents and payloads is our own: four 64-bit
 * multiply-rotate lanes over 32-byte stripes (in the manner of xxHash64),
 * finalised twice with the SplitMix64 mixer into 128 bits. Each lane update
 * is a bijection of the lane for a fixed input word, so two inputs that
 * differ in one stripe never collide in the state; 128 bits keep accidental
 * collisions out of reach for any realistic number of images.
 */
#include "cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "blas.h"
#include "fsutil.h"
#include "image.h"
#include "resnet.h"
#include "rng.h"

#define FORMAT_DIR "v1"
#define ENTRY_VERSION 1u
#define MSG sizeof(((kt_err *)0)->msg)
/* rng stream of the per-epoch view choice (any value unused by rng.h's enum) */
#define STREAM_VIEW 0x76696577u

/* ---- hashing ------------------------------------------------------------------ */

typedef struct {
    uint64_t v[4];
    uint8_t buf[32];
    size_t nbuf;
    uint64_t len;
} hasher;

static const uint64_t K1 = 0x9e3779b185ebca87ull, K2 = 0xc2b2ae3d27d4eb4full,
                      K3 = 0x165667b19e3779f9ull;

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void hash_init(hasher *h, uint64_t seed)
{
    memset(h, 0, sizeof *h);
    h->v[0] = seed + K1 + K2, h->v[1] = seed + K2, h->v[2] = seed, h->v[3] = seed - K1;
}

static void hash_stripe(hasher *h, const uint8_t *p)
{
    for (int i = 0; i < 4; i++) {
        uint64_t w;
        memcpy(&w, p + 8 * i, 8);
        h->v[i] = rotl(h->v[i] + w * K2, 31) * K1;
    }
}

static void hash_update(hasher *h, const void *data, size_t n)
{
    const uint8_t *p = data;
    h->len += n;
    if (h->nbuf) {
        size_t k = 32 - h->nbuf < n ? 32 - h->nbuf : n;
        memcpy(h->buf + h->nbuf, p, k);
        h->nbuf += k, p += k, n -= k;
        if (h->nbuf < 32)
            return;
        hash_stripe(h, h->buf);
        h->nbuf = 0;
    }
    for (; n >= 32; p += 32, n -= 32)
        hash_stripe(h, p);
    memcpy(h->buf, p, n);
    h->nbuf = n;
}

/* The tail is zero-padded to a stripe; the length, mixed in last, keeps
 * "abc" and "abc\0" apart. */
static void hash_final(hasher *h, uint64_t out[2])
{
    if (h->nbuf) {
        memset(h->buf + h->nbuf, 0, 32 - h->nbuf);
        hash_stripe(h, h->buf);
    }
    const uint64_t *v = h->v;
    out[0] = mix64(v[0] ^ rotl(v[1], 17) ^ rotl(v[2], 31) ^ rotl(v[3], 47) ^ h->len);
    out[1] = mix64(v[3] + rotl(v[2], 13) + rotl(v[1], 29) + rotl(v[0], 43) + h->len * K3 + out[0]);
}

static void hash128(uint64_t out[2], const void *data, size_t n)
{
    hasher h;
    hash_init(&h, 0);
    hash_update(&h, data, n);
    hash_final(&h, out);
}

/* ---- float16 ------------------------------------------------------------------- */

/* Round to nearest even; NaN stays NaN; beyond the largest finite half
 * (65504) saturate rather than become Inf, so a cached value is never Inf. */
static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (ax >= 0x477ff000u) /* >= 65520 rounds to Inf in IEEE */
        return (uint16_t)(sign | 0x7bffu);
    if (ax < 0x38800000u) { /* below 2^-14: a multiple of 2^-24 */
        float a;
        memcpy(&a, &ax, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(a * 16777216.0f));
    }
    uint32_t h = ((ax >> 23) - 112) << 10 | (ax & 0x7fffffu) >> 13, rest = ax & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1)))
        h++; /* a carry into the exponent is still right */
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    x = e == 31 ? sign | 0x7f800000u | m << 13 : sign | (e + 112) << 23 | m << 13;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* ---- small helpers ---------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static void hex128(char out[33], const uint64_t h[2])
{
    snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, h[1], h[0]);
}

static int is_hex_prefix(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

static int is_hex(const char *s, size_t n) { return is_hex_prefix(s, n) && s[n] == '\0'; }

/* "20G", "512M", "4096" (powers of 1024); -1 when malformed. */
static int64_t parse_size(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0)
        return -1;
    const char *units = "KMGT";
    const char *u = *end ? strchr(units, *end) : NULL;
    if (*end && (!u || (end[1] && !(end[1] == 'B' && !end[2]) && !(end[1] == 'i' && end[2] == 'B' && !end[3]))))
        return -1;
    for (const char *q = units; u && q <= u; q++)
        v *= 1024;
    return v > 9.2e18 ? -1 : (int64_t)v;
}

kt_status kt_cache_dir(char *buf, size_t size, const char *spec_dir, kt_err *err)
{
    const char *d = spec_dir && *spec_dir ? spec_dir : env("KT_CACHE_DIR");
    int n;
    if (d)
        n = snprintf(buf, size, "%s", d);
    else if (env("XDG_CACHE_HOME"))
        n = snprintf(buf, size, "%s/kt", env("XDG_CACHE_HOME"));
    else if (env("HOME"))
        n = snprintf(buf, size, "%s/.cache/kt", env("HOME"));
    else
        return kt_err_set(err, KT_ERR_RUNTIME,
                          "no cache folder: train.cache_dir, KT_CACHE_DIR, XDG_CACHE_HOME and HOME are all unset");
    if (n < 0 || (size_t)n >= size)
        return kt_err_set(err, KT_ERR_RUNTIME, "cache folder name too long");
    return KT_OK;
}

int64_t kt_cache_memory_budget(int64_t bytes)
{
    if (bytes > 0)
        return bytes;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb > 0 ? (int64_t)kb * 1024 / 4 : (int64_t)256 << 20;
}

int64_t kt_cache_cap(const char *dir)
{
    const char *e = env("KT_CACHE_MAX");
    int64_t v = e ? parse_size(e) : -1;
    if (v >= 0)
        return v;
    /* A quarter of the file system holding the folder (or its nearest
     * existing parent). */
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    struct statvfs fs;
    while (statvfs(buf, &fs) != 0) {
        char *slash = strrchr(buf, '/');
        if (!slash || slash == buf)
            return (int64_t)20 << 30;
        *slash = '\0';
    }
    return (int64_t)((double)fs.f_blocks * (double)fs.f_frsize / 4);
}

const char *kt_cache_why_not(int point, int augmenting, int views, int disabled)
{
    if (disabled)
        return "disabled (--no-cache)";
    if (point < 1)
        return "nothing is frozen (model.freeze is the input)";
    if (augmenting && views <= 0)
        return "augmentation is on and data.cached_views is 0: the frozen part's output changes "
               "every epoch (set data.cached_views to cache that many augmented views per image)";
    return NULL;
}

/* ---- the key ------------------------------------------------------------------- */

static void hash_floats(hasher *h, const float *p, int64_t n)
{
    uint8_t present = p != NULL;
    hash_update(h, &present, 1);
    if (p)
        hash_update(h, p, (size_t)n * sizeof *p);
}

static void hash_conv(hasher *h, const kt_conv_desc *c)
{
    int32_t geo[5] = {c->cin, c->cout, c->k, c->stride, c->pad};
    hash_update(h, geo, sizeof geo);
    hash_floats(h, c->w, (int64_t)c->cout * c->cin * c->k * c->k);
    hash_floats(h, c->bias, c->cout);
}

static void hash_bn(hasher *h, const kt_bn_desc *b)
{
    hash_update(h, &b->c, sizeof b->c);
    hash_update(h, &b->eps, sizeof b->eps);
    hash_floats(h, b->gamma, b->c);
    hash_floats(h, b->beta, b->c);
    hash_floats(h, b->mean, b->c);
    hash_floats(h, b->var, b->c);
}

/* Every number the layers producing points <= point compute with. */
static void frozen_checksum(uint64_t out[2], const kt_arch *a, int point)
{
    hasher h;
    hash_init(&h, 0x6b74636163686531ull);
    hash_conv(&h, &a->stem_conv);
    hash_bn(&h, &a->stem_bn);
    int nb = point - 1 < a->nblocks ? point - 1 : a->nblocks;
    for (int i = 0; i < nb; i++) {
        const kt_block_desc *b = &a->blocks[i];
        int32_t geo[4] = {b->bottleneck, b->has_down, b->stride, b->cin};
        hash_update(&h, geo, sizeof geo);
        for (int j = 0; j < (b->bottleneck ? 3 : 2); j++) {
            hash_conv(&h, &b->conv[j]);
            hash_bn(&h, &b->bn[j]);
        }
        if (b->has_down) {
            hash_conv(&h, &b->down);
            hash_bn(&h, &b->down_bn);
        }
    }
    hash_final(&h, out);
}

static cJSON *floats_json(const float *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)v[i]));
    return a;
}

/* The group's key as a JSON object: everything but the file and the view.
 * Its unformatted text is hashed into the group id. */
static cJSON *key_json(const kt_cache_opts *o, int c, int h, int w)
{
    uint64_t fz[2];
    char hex[33], name[64];
    frozen_checksum(fz, o->arch, o->point);
    hex128(hex, fz);
    cJSON *k = cJSON_CreateObject();
    cJSON_AddNumberToObject(k, "format", 1);
    cJSON_AddStringToObject(k, "frozen", hex);
    cJSON_AddStringToObject(k, "cut", kt_arch_point_name(o->arch, o->point, name, sizeof name));
    cJSON *shape = cJSON_AddArrayToObject(k, "shape");
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(c));
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(h));
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(w));
    cJSON_AddStringToObject(k, "dtype", o->dtype == KT_CACHE_FLOAT16 ? "float16" : "float32");
    cJSON_AddNumberToObject(k, "image_size", o->image_size);
    cJSON_AddNumberToObject(k, "resize", o->resize);
    const kt_norm *nm = &o->arch->norm;
    cJSON *norm = cJSON_AddObjectToObject(k, "norm");
    cJSON_AddNumberToObject(norm, "bgr", nm->bgr);
    cJSON_AddNumberToObject(norm, "scale", (double)nm->scale);
    cJSON_AddItemToObject(norm, "mean", floats_json(nm->mean, 3));
    cJSON_AddItemToObject(norm, "std", floats_json(nm->std, 3));
    if (o->aug) {
        /* The view count is not part of the key: view v is the same image
         * whatever the number of views, so runs with more views reuse these. */
        const kt_augment *a = o->aug;
        char seed[24];
        cJSON_AddStringToObject(k, "transform", "train");
        cJSON *aj = cJSON_AddObjectToObject(k, "augment");
        cJSON_AddNumberToObject(aj, "rrc", a->rrc);
        cJSON *sc = cJSON_AddArrayToObject(aj, "scale"), *ra = cJSON_AddArrayToObject(aj, "ratio");
        for (int i = 0; i < 2; i++) {
            cJSON_AddItemToArray(sc, cJSON_CreateNumber(a->scale[i]));
            cJSON_AddItemToArray(ra, cJSON_CreateNumber(a->ratio[i]));
        }
        cJSON_AddNumberToObject(aj, "flip", a->flip);
        cJSON_AddNumberToObject(aj, "brightness", a->brightness);
        cJSON_AddNumberToObject(aj, "contrast", a->contrast);
        cJSON_AddNumberToObject(aj, "saturation", a->saturation);
        snprintf(seed, sizeof seed, "%" PRIu64, o->seed);
        cJSON_AddStringToObject(k, "seed", seed); /* a u64 does not fit a JSON number */
    } else {
        cJSON_AddStringToObject(k, "transform", "eval");
    }
    cJSON_AddStringToObject(k, "blas", kt_blas_core());
    return k;
}

/* ---- entries ------------------------------------------------------------------- */

/* Native byte order: a file from a machine of the other order fails the
 * magic check and is recomputed. */
typedef struct {
    char magic[8];              /* "KTACT\0\0\1" */
    uint32_t version, dtype, c, h, w, view;
    uint64_t group;
    uint64_t file_hash[2];
    uint64_t payload_sum;       /* first word of hash128(payload) */
    uint64_t header_sum;        /* first word of hash128(the bytes above) */
} entry_header;

_Static_assert(sizeof(entry_header) == 72, "entry header layout");

static const char ENTRY_MAGIC[8] = {'K', 'T', 'A', 'C', 'T', 0, 0, 1};

typedef struct {
    int bad;                    /* 1: unreadable or undecodable (msg says why) */
    char *msg;                  /* owned, for bad images */
    uint64_t hash[2];           /* content hash of the file */
} image_state;

struct kt_cache {
    kt_cache_opts o;
    kt_augment aug;             /* copy of *o.aug */
    int V;                      /* views per image (1 without augmentation) */
    int C, H, W;
    int avg;                    /* 1: cut at avgpool, batches are [n][C] */
    size_t numel, esize, slot_bytes;
    int n;                      /* images */
    uint64_t group;
    char gdir[4200];            /* DIR/v1/<group> */
    char *key_text;             /* unformatted key JSON */
    int persist;                /* 0: the folder is unusable, this run keeps entries in memory */
    image_state *img;           /* [n] */
    uint8_t *have;              /* [n*V] 1: slot holds a valid activation */
    uint8_t *arena;             /* [n*V][slot_bytes] */
    size_t arena_bytes;
    int mapped;
    /* batches */
    int nb;
    uint32_t *perm;
    int perm_epoch;
    float *act;                 /* [C][batch][H][W] or [batch][C] */
    int *labels, *samples, *pick; /* [batch]; pick: slot index per kept sample */
    uint8_t *warned;            /* [n] */
    char *warn_text;            /* [batch][MSG + 1] + 1 */
    kt_batch out;
    int64_t seq;                /* kt_cache_next position */
    kt_cache_stats st;
    double t_forward;           /* seconds in the frozen forward of the fill */
    struct timespec t_start;    /* wall clock at open: entries newer than this are in use */
    char write_msg[6000];       /* first failure writing entries */
};

static uint8_t *slot_of(const kt_cache *c, int64_t s) { return c->arena + (size_t)s * c->slot_bytes; }

static void entry_name(char *buf, size_t size, const kt_cache *c, const uint64_t h[2], int view)
{
    char hex[33];
    hex128(hex, h);
    snprintf(buf, size, "%s/%s-%d.act", c->gdir, hex, view);
}

static void header_fill(entry_header *e, const kt_cache *c, const uint64_t fh[2], int view,
                        const void *payload)
{
    uint64_t sum[2];
    memset(e, 0, sizeof *e);
    memcpy(e->magic, ENTRY_MAGIC, 8);
    e->version = ENTRY_VERSION;
    e->dtype = c->o.dtype == KT_CACHE_FLOAT16;
    e->c = (uint32_t)c->C, e->h = (uint32_t)c->H, e->w = (uint32_t)c->W, e->view = (uint32_t)view;
    e->group = c->group;
    e->file_hash[0] = fh[0], e->file_hash[1] = fh[1];
    if (payload) {
        hash128(sum, payload, c->slot_bytes);
        e->payload_sum = sum[0];
    }
    hash128(sum, e, offsetof(entry_header, header_sum));
    e->header_sum = sum[0];
}

static int read_full(int fd, void *buf, size_t n, off_t off)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r, n -= (size_t)r, off += r;
    }
    return 0;
}

enum { ENTRY_OK, ENTRY_MISSING, ENTRY_CORRUPT };

/* Reads the entry of (file hash, view) into dst and checks everything about
 * it; a good entry's mtime is set to now (its last use, for the LRU cap). */
static int entry_read(const kt_cache *c, const uint64_t fh[2], int view, uint8_t *dst)
{
    char path[4300];
    entry_name(path, sizeof path, c, fh, view);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ENTRY_MISSING;
    int rc = ENTRY_CORRUPT;
    struct stat sb;
    entry_header e, want;
    uint64_t sum[2];
    if (fstat(fd, &sb) != 0 || (size_t)sb.st_size != sizeof e + c->slot_bytes ||
        read_full(fd, &e, sizeof e, 0) != 0)
        goto done;
    header_fill(&want, c, fh, view, NULL);
    want.payload_sum = e.payload_sum; /* only the payload knows; checked below */
    hash128(sum, &want, offsetof(entry_header, header_sum));
    want.header_sum = sum[0];
    if (memcmp(&e, &want, sizeof e) != 0 || read_full(fd, dst, c->slot_bytes, sizeof e) != 0)
        goto done;
    hash128(sum, dst, c->slot_bytes);
    if (sum[0] != e.payload_sum)
        goto done;
    futimens(fd, NULL);
    rc = ENTRY_OK;
done:
    close(fd);
    return rc;
}

/* Temporary names are unique per process and call, so concurrent writers
 * never share one; the rename makes the entry appear whole or not at all. */
static int entry_write(kt_cache *c, const uint64_t fh[2], int view, const uint8_t *payload,
                       int tid)
{
    static atomic_uint counter;
    char path[4300], tmp[4400];
    entry_header e;
    entry_name(path, sizeof path, c, fh, view);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%d.%u", path, (long)getpid(), tid,
             atomic_fetch_add(&counter, 1));
    header_fill(&e, c, fh, view, payload);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    struct iovec iov[2] = {{&e, sizeof e}, {(void *)payload, c->slot_bytes}};
    size_t total = sizeof e + c->slot_bytes;
    ssize_t w = writev(fd, iov, 2);
    int ok = w == (ssize_t)total; /* a regular file takes it in one go unless the disk is full */
    ok &= close(fd) == 0;
    if (!ok || rename(tmp, path) != 0) {
        int saved = errno;
        unlink(tmp);
        errno = ok ? saved : (w < 0 ? saved : ENOSPC);
        return -1;
    }
    return 0;
}

/* ---- worker threads ------------------------------------------------------------ */

typedef struct {
    uint8_t *file;              /* the image file's bytes, grown as needed */
    size_t filecap;
    kt_image img;
    kt_transform_ws ws;
} worker;

typedef struct {
    int n;
    atomic_int next;
    void (*fn)(void *ctx, worker *w, int tid, int i);
    void *ctx;
    worker *workers;
} pfor;

typedef struct {
    pfor *p;
    int tid;
} pfor_arg;

static void *pfor_run(void *arg)
{
    pfor_arg *a = arg;
    pfor *p = a->p;
    for (int i; (i = atomic_fetch_add(&p->next, 1)) < p->n;)
        p->fn(p->ctx, &p->workers[a->tid], a->tid, i);
    return NULL;
}

/* Runs fn(ctx, worker, tid, i) for i in [0, n) on up to nthreads threads
 * (the caller is one of them); if a thread cannot start, the others do its
 * share. */
static void parallel_for(worker *workers, int nthreads, int n,
                         void (*fn)(void *ctx, worker *w, int tid, int i), void *ctx)
{
    pfor p = {.n = n, .fn = fn, .ctx = ctx, .workers = workers};
    atomic_init(&p.next, 0);
    pthread_t th[8];
    pfor_arg args[8];
    int started = 0;
    for (int t = 1; t < nthreads && t < 8 && t < n; t++) {
        args[t] = (pfor_arg){&p, t};
        if (pthread_create(&th[t], NULL, pfor_run, &args[t]) != 0)
            break;
        started = t;
    }
    args[0] = (pfor_arg){&p, 0};
    pfor_run(&args[0]);
    for (int t = 1; t <= started; t++)
        pthread_join(th[t], NULL);
}

static int nworkers(int workers)
{
    if (workers > 0)
        return workers < 8 ? workers : 8;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;
}

/* ---- phase A: hash every file, read what the folder has ---------------------- */

static void set_bad(kt_cache *c, int i, const char *msg)
{
    /* Each image is handled by one thread at a time, so no lock. */
    image_state *s = &c->img[i];
    if (s->bad)
        return;
    s->bad = 1;
    s->msg = strdup(msg);
}

static void lookup_one(void *ctx, worker *w, int tid, int i)
{
    kt_cache *c = ctx;
    kt_err err = {0};
    size_t n = 0;
    (void)tid;
    if (kt_image_read_file(&w->file, &w->filecap, &n, c->o.ds->paths[i], &err) != KT_OK) {
        set_bad(c, i, err.msg);
        return;
    }
    hash128(c->img[i].hash, w->file, n);
    for (int v = 0; v < c->V && c->persist; v++) {
        int64_t s = (int64_t)i * c->V + v;
        int rc = entry_read(c, c->img[i].hash, v, slot_of(c, s));
        c->have[s] = rc == ENTRY_OK;
        if (rc == ENTRY_CORRUPT) {
            char path[4300];
            entry_name(path, sizeof path, c, c->img[i].hash, v);
            unlink(path);
            c->have[s] = 2; /* counted as rebuilt once computed */
        }
    }
}

/* ---- phase B: compute the missing views ---------------------------------------- */

typedef struct {
    kt_cache *c;
    const int64_t *jobs;        /* slot indices of this batch */
    float *input;               /* [3][batch][S][S] */
    kt_status *status;          /* [batch] */
    char *msg;                  /* [batch][MSG] */
} compute_ctx;

/* Decodes and transforms one view into its column of the batch, exactly as
 * the loader does for the same transform (see loader.c process()). */
static void prepare_one(void *ctx, worker *w, int tid, int j)
{
    compute_ctx *x = ctx;
    kt_cache *c = x->c;
    const kt_cache_opts *o = &c->o;
    int i = (int)(x->jobs[j] / c->V), v = (int)(x->jobs[j] % c->V);
    const char *path = o->ds->paths[i];
    size_t S2 = (size_t)o->image_size * o->image_size, n = 0, cstride = (size_t)o->batch * S2;
    float *out = x->input + (size_t)j * S2;
    kt_image_opts io = {0};
    kt_err err = {0};
    kt_status st;
    (void)tid;
    if ((st = kt_image_read_file(&w->file, &w->filecap, &n, path, &err)) != KT_OK)
        goto done;
    /* The entry will be stored under the hash taken in phase A: the bytes
     * must still be those, or a stale activation would be filed under them. */
    uint64_t h[2];
    hash128(h, w->file, n);
    if (h[0] != c->img[i].hash[0] || h[1] != c->img[i].hash[1]) {
        st = kt_err_set(&err, KT_ERR_DATA, "%s: changed while kt was reading it", path);
        goto done;
    }
    if (o->aug) {
        /* 58 bits of the content hash: sample * 64 + draw stays below 2^64. */
        uint64_t sample = c->img[i].hash[0] >> 6;
        if ((st = kt_image_decode_ex(&w->img, w->file, n, path, &io, &err)) == KT_OK)
            st = kt_transform_train(out, cstride, &w->img, o->image_size, o->resize, &o->arch->norm,
                                    &c->aug, o->seed, (uint64_t)v, sample, &w->ws, &err);
    } else {
        kt_image_info info;
        if ((st = kt_image_probe(&info, w->file, n, path, &err)) != KT_OK)
            goto done;
        kt_transform_eval_roi(info.w, info.h, o->resize, o->image_size, &io.roi_x0, &io.roi_y0,
                              &io.roi_x1, &io.roi_y1);
        if ((st = kt_image_decode_ex(&w->img, w->file, n, path, &io, &err)) == KT_OK)
            st = kt_transform_eval_ws(out, cstride, &w->img, o->resize, o->image_size,
                                      &o->arch->norm, &w->ws, &err);
    }
done:
    x->status[j] = st;
    memcpy(x->msg + (size_t)j * MSG, err.msg, MSG);
}

/* Copies image k of a forward result into slot s, converting the dtype. */
static void store_slot(kt_cache *c, int64_t s, const float *res, int n, int k)
{
    uint8_t *dst = slot_of(c, s);
    size_t hw = (size_t)c->H * c->W;
    for (int ch = 0; ch < c->C; ch++) {
        const float *src = c->avg ? res + (size_t)k * c->C + ch : res + ((size_t)ch * n + k) * hw;
        size_t m = c->avg ? 1 : hw;
        if (c->o.dtype == KT_CACHE_FLOAT16) {
            uint16_t *d = (uint16_t *)dst + (size_t)ch * hw;
            for (size_t q = 0; q < m; q++)
                d[q] = f32_to_f16(src[q]);
        } else {
            memcpy((float *)dst + (size_t)ch * hw, src, m * sizeof(float));
        }
    }
}

typedef struct {
    kt_cache *c;
    const int64_t *jobs;
    atomic_int nfail;
    atomic_int err_no;
} write_ctx;

static void write_one(void *ctx, worker *w, int tid, int j)
{
    write_ctx *x = ctx;
    kt_cache *c = x->c;
    int64_t s = x->jobs[j];
    (void)w;
    if (entry_write(c, c->img[s / c->V].hash, (int)(s % c->V), slot_of(c, s), tid) != 0) {
        atomic_fetch_add(&x->nfail, 1);
        atomic_store(&x->err_no, errno);
    }
}

/* ---- the folder: group.json, scanning, trimming --------------------------------- */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            char *nb = realloc(buf, cap = 2 * cap + 8192);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r < 4096)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int write_text_atomic(const char *path, const char *text)
{
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int bad = fputs(text, f) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* seconds_per_image recorded by an earlier run, 0 when unknown. */
static double group_spi(const char *gdir)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/group.json", gdir);
    char *text = read_text(path);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "seconds_per_image");
    double spi = cJSON_IsNumber(v) && v->valuedouble > 0 ? v->valuedouble : 0;
    cJSON_Delete(j);
    free(text);
    return spi;
}

static void group_write(const kt_cache *c, double spi)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/group.json", c->gdir);
    cJSON *j = cJSON_CreateObject(), *key = cJSON_Parse(c->key_text);
    if (!j || !key) {
        cJSON_Delete(j);
        cJSON_Delete(key);
        return;
    }
    cJSON_AddItemToObject(j, "key", key);
    cJSON_AddStringToObject(j, "weights", c->o.weights_path ? c->o.weights_path : "");
    cJSON_AddStringToObject(j, "variant", c->o.arch->variant);
    cJSON_AddStringToObject(j, "weights_format", c->o.arch->format);
    cJSON_AddNumberToObject(j, "seconds_per_image", spi);
    char *text = cJSON_Print(j);
    if (text)
        write_text_atomic(path, text); /* informational: a failure only loses the description */
    free(text);
    cJSON_Delete(j);
}

typedef enum { FILE_ENTRY, FILE_TEMP, FILE_GROUP, FILE_OTHER } file_kind;

static file_kind classify(const char *name)
{
    if (strcmp(name, "group.json") == 0)
        return FILE_GROUP;
    if (strstr(name, ".tmp."))
        return FILE_TEMP;
    size_t n = strlen(name);
    if (n >= 38 && strcmp(name + n - 4, ".act") == 0 && name[32] == '-' && is_hex_prefix(name, 32))
        return FILE_ENTRY;
    return FILE_OTHER;
}

typedef struct {
    char *path;
    int64_t size;
    struct timespec mtime;
    file_kind kind;
    int group;                  /* index of its group folder, for trim */
} file_info;

typedef struct {
    file_info *v;
    int n, cap;
} file_list;

static void files_free(file_list *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i].path);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Appends the files kt wrote in folder gdir (kind != FILE_OTHER). */
static int files_scan(file_list *l, const char *gdir)
{
    DIR *d = opendir(gdir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        file_kind k = classify(e->d_name);
        char path[4400];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", gdir, e->d_name);
        if (k == FILE_OTHER || lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (l->n == l->cap) {
            int cap = l->cap ? 2 * l->cap : 256;
            file_info *nv = realloc(l->v, sizeof *nv * (size_t)cap);
            if (!nv)
                break;
            l->v = nv, l->cap = cap;
        }
        char *p = strdup(path);
        if (!p)
            break;
        l->v[l->n++] = (file_info){p, (int64_t)sb.st_size, sb.st_mtim, k, 0};
    }
    closedir(d);
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(a, b); }

/* Names of the group folders under dir/v1 (16 hex digits), sorted. */
static int group_ids(char (**ids)[17], int *n, const char *dir)
{
    char root[4200];
    snprintf(root, sizeof root, "%s/" FORMAT_DIR, dir);
    *ids = NULL, *n = 0;
    DIR *d = opendir(root);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int cap = 0;
    while ((e = readdir(d))) {
        if (strlen(e->d_name) != 16 || !is_hex(e->d_name, 16))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char(*nv)[17] = realloc(*ids, sizeof *nv * (size_t)cap);
            if (!nv)
                break;
            *ids = nv;
        }
        memcpy((*ids)[(*n)++], e->d_name, 17);
    }
    closedir(d);
    if (*n > 1)
        qsort(*ids, (size_t)*n, 17, cmp_str);
    return 0;
}

static int ts_cmp(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec != b->tv_sec ? (a->tv_sec < b->tv_sec ? -1 : 1)
                                  : (a->tv_nsec < b->tv_nsec ? -1 : a->tv_nsec > b->tv_nsec);
}

static int cmp_mtime(const void *a, const void *b)
{
    return ts_cmp(&((const file_info *)a)->mtime, &((const file_info *)b)->mtime);
}

/* Deletes least recently used entries until the folder is within cap;
 * entries used since `in_use` (this run's) are kept. Temporaries older than
 * an hour are leftovers of killed runs and go too, and so do groups left
 * without entries. */
static void trim(const char *dir, int64_t cap, const struct timespec *in_use, int64_t *evicted)
{
    char(*ids)[17];
    int nid;
    file_list l = {0};
    if (group_ids(&ids, &nid, dir) != 0)
        return;
    int *left = calloc((size_t)(nid ? nid : 1), sizeof *left); /* entries per group */
    for (int g = 0; g < nid; g++) {
        char gdir[4300];
        int first = l.n;
        snprintf(gdir, sizeof gdir, "%s/" FORMAT_DIR "/%s", dir, ids[g]);
        files_scan(&l, gdir);
        for (int i = first; i < l.n; i++) {
            l.v[i].group = g;
            if (left)
                left[g] += l.v[i].kind == FILE_ENTRY;
        }
    }
    int64_t total = 0;
    time_t stale = time(NULL) - 3600;
    for (int i = 0; i < l.n; i++) {
        if (l.v[i].kind == FILE_TEMP && l.v[i].mtime.tv_sec < stale && unlink(l.v[i].path) == 0)
            l.v[i].size = 0;
        total += l.v[i].size;
    }
    qsort(l.v, (size_t)l.n, sizeof *l.v, cmp_mtime);
    for (int i = 0; i < l.n && total > cap; i++) {
        file_info *f = &l.v[i];
        if (f->kind != FILE_ENTRY || ts_cmp(&f->mtime, in_use) >= 0)
            continue;
        if (unlink(f->path) == 0) {
            total -= f->size, (*evicted)++;
            if (left && --left[f->group] == 0) {
                char gdir[4300], path[4400];
                snprintf(gdir, sizeof gdir, "%s/" FORMAT_DIR "/%s", dir, ids[f->group]);
                snprintf(path, sizeof path, "%s/group.json", gdir);
                unlink(path);
                rmdir(gdir); /* stays if a concurrent run just wrote into it */
            }
        }
    }
    files_free(&l);
    free(left);
    free(ids);
}

/* ---- open ------------------------------------------------------------------------ */

static kt_status check_opts(const kt_cache_opts *o, kt_err *err)
{
    if (!o->arch || !o->ds || !o->dir)
        return kt_err_set(err, KT_ERR_USAGE, "cache: arch, dataset and folder are required");
    if (o->ds->n < 1)
        return kt_err_set(err, KT_ERR_DATA, "cache: the dataset has no images");
    if (o->point < 1 || o->point > 2 + o->arch->nblocks)
        return kt_err_set(err, KT_ERR_USAGE, "cache: cut point %d out of range 1..%d (avgpool)",
                          o->point, 2 + o->arch->nblocks);
    if (o->batch < 1 || o->batch > 65536)
        return kt_err_set(err, KT_ERR_USAGE, "cache: batch size %d out of range 1..65536", o->batch);
    if (o->image_size < 1 || o->image_size > 1024)
        return kt_err_set(err, KT_ERR_USAGE, "cache: image size %d out of range 1..1024",
                          o->image_size);
    if ((!o->aug || !o->aug->rrc) && o->resize < o->image_size)
        return kt_err_set(err, KT_ERR_USAGE, "cache: resize %d is smaller than the image size %d",
                          o->resize, o->image_size);
    if (o->aug && (o->views < 1 || o->views > 1000))
        return kt_err_set(err, KT_ERR_USAGE, "cache: %d views out of range 1..1000 with augmentation",
                          o->views);
    if (o->start_epoch < 0 || o->start_batch < 0)
        return kt_err_set(err, KT_ERR_USAGE, "cache: negative start position");
    return KT_OK;
}

/* The run's slots: in RAM within the budget, else in an unlinked file
 * mapped shared (the page cache holds what fits). */
static kt_status alloc_arena(kt_cache *c, kt_err *err)
{
    c->arena_bytes = (size_t)c->n * c->V * c->slot_bytes;
    if ((int64_t)c->arena_bytes <= c->o.memory && (c->arena = malloc(c->arena_bytes ? c->arena_bytes : 1)))
        return KT_OK;
    char path[4300];
    const char *tmpdir = c->persist ? c->o.dir : (env("TMPDIR") ? env("TMPDIR") : "/tmp");
    snprintf(path, sizeof path, "%s/spill-XXXXXX", tmpdir);
    int fd = mkstemp(path);
    if (fd < 0)
        return kt_err_set(err, KT_ERR_RUNTIME, "cache: cannot create a file for %.0f MiB of activations in %s: %s",
                          (double)c->arena_bytes / 1048576, tmpdir, strerror(errno));
    unlink(path);
    /* Reserve the blocks now: a full disk must be an error here, not a
     * SIGBUS when a page is first written. */
    int rc = posix_fallocate(fd, 0, (off_t)c->arena_bytes);
    void *p = rc == 0 ? mmap(NULL, c->arena_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    close(fd);
    if (p == MAP_FAILED)
        return kt_err_set(err, KT_ERR_RUNTIME, "cache: cannot map %.0f MiB of activations in %s: %s",
                          (double)c->arena_bytes / 1048576, tmpdir, strerror(rc ? rc : errno));
    c->arena = p;
    c->mapped = 1;
    return KT_OK;
}

static void free_workers(worker *w, int n)
{
    for (int i = 0; w && i < n; i++) {
        free(w[i].file);
        kt_image_free(&w[i].img);
        kt_transform_ws_free(&w[i].ws);
    }
    free(w);
}

static void note_write_failure(kt_cache *c, int nfail, int err_no)
{
    if (!c->write_msg[0])
        snprintf(c->write_msg, sizeof c->write_msg,
                 "cache: cannot write %d entr%s to %s: %s; this run keeps its activations in memory only",
                 nfail, nfail == 1 ? "y" : "ies", c->gdir, strerror(err_no));
    c->persist = 0; /* a full or read-only disk: stop trying */
}

/* Computes the views marked missing, batch by batch. */
static kt_status compute_missing(kt_cache *c, worker *workers, int nw, kt_err *err)
{
    const kt_cache_opts *o = &c->o;
    int64_t total = 0, done = 0;
    for (int64_t s = 0; s < (int64_t)c->n * c->V; s++)
        total += c->have[s] != 1 && !c->img[s / c->V].bad;
    if (total == 0)
        return KT_OK;
    kt_resnet *net = NULL;
    kt_resnet_plan plan = {.batch = o->batch, .image_size = o->image_size, .freeze = o->point,
                           .stop = o->point, .train = 0, .chunk = 1};
    size_t S2 = (size_t)o->image_size * o->image_size;
    compute_ctx x = {.c = c};
    int64_t *jobs = malloc(sizeof *jobs * (size_t)o->batch);
    x.input = malloc(3 * (size_t)o->batch * S2 * sizeof(float));
    x.status = malloc(sizeof *x.status * (size_t)o->batch);
    x.msg = malloc(MSG * (size_t)o->batch);
    kt_status st = KT_OK;
    if (!jobs || !x.input || !x.status || !x.msg) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "cache: out of memory for a batch of %d images", o->batch);
        goto done;
    }
    if ((st = kt_resnet_init(&net, o->arch, &plan, err)) != KT_OK)
        goto done;
    x.jobs = jobs;
    int64_t s = 0;
    while (s < (int64_t)c->n * c->V) {
        int nj = 0;
        for (; s < (int64_t)c->n * c->V && nj < o->batch; s++)
            if (c->have[s] != 1 && !c->img[s / c->V].bad)
                jobs[nj++] = s;
        if (nj == 0)
            break;
        parallel_for(workers, nw, nj, prepare_one, &x);
        /* Drop the images that failed, packing the input to [3][n][S][S]. */
        int n = 0;
        for (int j = 0; j < nj; j++) {
            if (x.status[j] != KT_OK) {
                if (x.status[j] != KT_ERR_DATA) {
                    st = kt_err_set(err, x.status[j], "%s", x.msg + (size_t)j * MSG);
                    goto done;
                }
                set_bad(c, (int)(jobs[j] / c->V), x.msg + (size_t)j * MSG);
                if (o->fail_on_bad) {
                    st = kt_err_set(err, KT_ERR_DATA, "%s", x.msg + (size_t)j * MSG);
                    goto done;
                }
                continue;
            }
            jobs[n++] = jobs[j];
            for (int ch = 0; ch < 3 && n - 1 != j; ch++)
                memmove(x.input + ((size_t)ch * o->batch + n - 1) * S2,
                        x.input + ((size_t)ch * o->batch + j) * S2, S2 * sizeof(float));
        }
        if (n > 0) {
            /* The batch was written with channel stride batch*S2; the network
             * wants [3][n][S][S]: close the gaps between channel planes. */
            for (int ch = 1; ch < 3 && n < o->batch; ch++)
                memmove(x.input + (size_t)ch * n * S2, x.input + (size_t)ch * o->batch * S2,
                        (size_t)n * S2 * sizeof(float));
            double t0 = now();
            const float *res = kt_resnet_forward(net, 0, x.input, n, 0);
            c->t_forward += now() - t0;
            for (int k = 0; k < n; k++) {
                store_slot(c, jobs[k], res, n, k);
                c->st.rebuilt += c->have[jobs[k]] == 2;
                c->have[jobs[k]] = 1;
            }
            c->st.computed += n;
            if (c->persist) {
                write_ctx w = {.c = c, .jobs = jobs};
                atomic_init(&w.nfail, 0);
                atomic_init(&w.err_no, 0);
                parallel_for(workers, nw, n, write_one, &w);
                if (atomic_load(&w.nfail))
                    note_write_failure(c, atomic_load(&w.nfail), atomic_load(&w.err_no));
            }
        }
        done += nj;
        if (o->progress)
            o->progress(o->ctx, done, total);
        if (o->stop && *o->stop && done < total) {
            st = kt_err_set(err, KT_ERR_INTERRUPTED,
                            "stopped by a signal while computing the activation cache: %lld of %lld "
                            "computed%s%s; run again to continue",
                            (long long)done, (long long)total, c->persist ? " and kept in " : "",
                            c->persist ? c->gdir : "");
            goto done;
        }
    }
done:
    kt_resnet_free(net);
    free(jobs);
    free(x.input);
    free(x.status);
    free(x.msg);
    return st;
}

kt_status kt_cache_open(kt_cache **out, const kt_cache_opts *opts, kt_err *err)
{
    *out = NULL;
    kt_status st = check_opts(opts, err);
    if (st != KT_OK)
        return st;
    double t_open = now();
    kt_cache *c = calloc(1, sizeof *c);
    if (!c)
        return kt_err_set(err, KT_ERR_RUNTIME, "cache: out of memory");
    worker *workers = NULL;
    int nw = nworkers(opts->workers);
    c->o = *opts;
    if (opts->aug)
        c->aug = *opts->aug, c->o.aug = &c->aug;
    c->V = opts->aug ? opts->views : 1;
    c->n = opts->ds->n;
    c->avg = opts->point == 2 + opts->arch->nblocks;
    kt_arch_point_shape(opts->arch, opts->point, opts->image_size, &c->C, &c->H, &c->W);
    c->numel = (size_t)c->C * c->H * c->W;
    c->esize = opts->dtype == KT_CACHE_FLOAT16 ? 2 : 4;
    c->slot_bytes = c->numel * c->esize;
    c->perm_epoch = -1;
    /* File times come from a coarser clock than this one: back off 100 ms so
     * entries touched right after open count as in use. */
    clock_gettime(CLOCK_REALTIME, &c->t_start);
    c->t_start.tv_nsec -= 100000000;
    if (c->t_start.tv_nsec < 0)
        c->t_start.tv_sec--, c->t_start.tv_nsec += 1000000000;

    cJSON *key = key_json(&c->o, c->C, c->H, c->W);
    c->key_text = key ? cJSON_PrintUnformatted(key) : NULL;
    cJSON_Delete(key);
    if (!c->key_text)
        goto oom;
    uint64_t gid[2];
    hash128(gid, c->key_text, strlen(c->key_text));
    c->group = gid[0];
    snprintf(c->gdir, sizeof c->gdir, "%s/" FORMAT_DIR "/%016" PRIx64, opts->dir, c->group);
    kt_err merr = {0};
    c->persist = kt_fs_mkdir_p(c->gdir, "cache folder", &merr) == KT_OK;
    if (!c->persist)
        snprintf(c->write_msg, sizeof c->write_msg, "%s; this run keeps its activations in memory only",
                 merr.msg);

    int64_t nslots = (int64_t)c->n * c->V;
    int B = opts->batch;
    c->img = calloc((size_t)c->n, sizeof *c->img);
    c->have = calloc((size_t)nslots, 1);
    c->perm = malloc(sizeof *c->perm * (size_t)c->n);
    c->warned = calloc((size_t)c->n, 1);
    c->act = malloc(c->numel * (size_t)B * sizeof(float));
    c->labels = malloc(sizeof *c->labels * (size_t)B);
    c->samples = malloc(sizeof *c->samples * (size_t)B);
    c->pick = malloc(sizeof *c->pick * (size_t)B);
    c->warn_text = malloc((size_t)B * (MSG + 1) + 1);
    workers = calloc((size_t)nw, sizeof *workers);
    if (!c->img || !c->have || !c->perm || !c->warned || !c->act || !c->labels || !c->samples ||
        !c->pick || !c->warn_text || !workers)
        goto oom;
    if ((st = alloc_arena(c, err)) != KT_OK)
        goto fail;
    c->nb = (c->n + B - 1) / B;
    if (opts->start_batch >= c->nb) {
        st = kt_err_set(err, KT_ERR_USAGE, "cache: start batch %d beyond the %d batches of an epoch",
                        opts->start_batch, c->nb);
        goto fail;
    }

    /* A: hashes and what the folder already has. */
    double t0 = now();
    parallel_for(workers, nw, c->n, lookup_one, c);
    c->st.hash_seconds = now() - t0;
    for (int i = 0; i < c->n; i++) {
        if (c->img[i].bad && opts->fail_on_bad) {
            st = kt_err_set(err, KT_ERR_DATA, "%s", c->img[i].msg);
            goto fail;
        }
        for (int v = 0; v < c->V; v++)
            c->st.hits += c->have[(int64_t)i * c->V + v] == 1;
    }
    /* B: the rest. */
    if ((st = compute_missing(c, workers, nw, err)) != KT_OK)
        goto fail;

    for (int i = 0; i < c->n; i++)
        c->st.bad += c->img[i].bad;
    c->st.entries = nslots - c->st.bad * c->V;
    double prior = c->persist ? group_spi(c->gdir) : 0;
    c->st.seconds_per_image = c->st.computed ? c->t_forward / (double)c->st.computed : prior;
    if (c->persist && (c->st.computed || prior == 0))
        group_write(c, c->st.seconds_per_image);
    if (c->persist && c->st.computed)
        trim(opts->dir, kt_cache_cap(opts->dir), &c->t_start, &c->st.evicted);
    c->st.bytes = (int64_t)c->arena_bytes;
    c->st.mapped = c->mapped;

    free_workers(workers, nw);
    c->st.fill_seconds = now() - t_open;
    *out = c;
    return KT_OK;
oom:
    st = kt_err_set(err, KT_ERR_RUNTIME, "cache: out of memory");
fail:
    free_workers(workers, nw);
    kt_cache_free(c);
    return st;
}

void kt_cache_free(kt_cache *c)
{
    if (!c)
        return;
    for (int i = 0; c->img && i < c->n; i++)
        free(c->img[i].msg);
    if (c->mapped)
        munmap(c->arena, c->arena_bytes);
    else
        free(c->arena);
    free(c->img), free(c->have), free(c->perm), free(c->warned), free(c->act);
    free(c->labels), free(c->samples), free(c->pick), free(c->warn_text);
    free(c->key_text);
    free(c);
}

/* ---- batches ---------------------------------------------------------------------- */

/* Slot s into column k of an n-image batch, as float32. */
static void gather(kt_cache *c, int64_t s, int n, int k)
{
    const uint8_t *src = slot_of(c, s);
    size_t hw = (size_t)c->H * c->W;
    if (c->avg) {
        float *dst = c->act + (size_t)k * c->C;
        if (c->o.dtype == KT_CACHE_FLOAT16)
            for (int ch = 0; ch < c->C; ch++)
                dst[ch] = f16_to_f32(((const uint16_t *)src)[ch]);
        else
            memcpy(dst, src, (size_t)c->C * sizeof(float));
        return;
    }
    for (int ch = 0; ch < c->C; ch++) {
        float *dst = c->act + ((size_t)ch * n + k) * hw;
        if (c->o.dtype == KT_CACHE_FLOAT16) {
            const uint16_t *h = (const uint16_t *)src + (size_t)ch * hw;
            for (size_t q = 0; q < hw; q++)
                dst[q] = f16_to_f32(h[q]);
        } else {
            memcpy(dst, (const float *)src + (size_t)ch * hw, hw * sizeof(float));
        }
    }
}

kt_status kt_cache_batch(kt_cache *c, int epoch, int index, const kt_batch **out, kt_err *err)
{
    *out = NULL;
    if (epoch < 0 || index < 0 || index >= c->nb)
        return kt_err_set(err, KT_ERR_USAGE, "cache: batch %d of epoch %d does not exist (%d per epoch)",
                          index, epoch, c->nb);
    double t0 = now();
    int B = c->o.batch;
    if (c->o.shuffle && c->perm_epoch != epoch) {
        kt_rng_permutation(c->perm, (uint32_t)c->n, c->o.seed, (uint64_t)epoch);
        c->perm_epoch = epoch;
    }
    int count = c->n - index * B < B ? c->n - index * B : B, n = 0, skipped = 0;
    char *w = c->warn_text;
    *w = '\0';
    for (int p = 0; p < count; p++) {
        int k = index * B + p, idx = c->o.shuffle ? (int)c->perm[k] : k;
        if (c->img[idx].bad) {
            skipped++;
            if (!c->warned[idx] && c->img[idx].msg) {
                c->warned[idx] = 1;
                w += snprintf(w, MSG + 1, "%s\n", c->img[idx].msg);
            }
            continue;
        }
        int v = c->V > 1 ? (int)kt_rng_below(c->o.seed, STREAM_VIEW, (uint64_t)epoch, (uint64_t)idx,
                                              (uint64_t)c->V)
                         : 0;
        c->pick[n] = idx * c->V + v;
        c->labels[n] = c->o.ds->labels[idx];
        c->samples[n] = idx;
        n++;
    }
    for (int k = 0; k < n; k++)
        gather(c, c->pick[k], n, k);
    c->st.served += n;
    kt_batch *b = &c->out;
    b->epoch = epoch;
    b->index = index;
    b->n = n;
    b->input = c->act;
    b->labels = c->labels;
    b->samples = c->samples;
    b->nskipped = skipped;
    b->warnings = c->warn_text;
    b->wait_seconds = now() - t0;
    b->last_in_epoch = index == c->nb - 1;
    *out = b;
    return KT_OK;
}

kt_status kt_cache_next(kt_cache *c, const kt_batch **out, kt_err *err)
{
    int64_t abs = (int64_t)c->o.start_batch + c->seq;
    int epoch = c->o.start_epoch + (int)(abs / c->nb), index = (int)(abs % c->nb);
    *out = NULL;
    if (c->o.epochs > 0 && epoch >= c->o.epochs)
        return KT_OK;
    kt_status st = kt_cache_batch(c, epoch, index, out, err);
    c->seq += st == KT_OK;
    return st;
}

int kt_cache_batches_per_epoch(const kt_cache *c) { return c->nb; }

int64_t kt_cache_bytes(const kt_cache *c) { return c && !c->mapped ? (int64_t)c->arena_bytes : 0; }

const char *kt_cache_warnings(const kt_cache *c) { return c->write_msg; }

const char *kt_cache_group_dir(const kt_cache *c) { return c->gdir; }

void kt_cache_stats_add(kt_cache_stats *sum, const kt_cache *c)
{
    const kt_cache_stats *s = &c->st;
    double spi_w = sum->seconds_per_image * (double)sum->entries;
    sum->entries += s->entries, sum->hits += s->hits, sum->computed += s->computed;
    sum->rebuilt += s->rebuilt, sum->bad += s->bad, sum->served += s->served;
    sum->evicted += s->evicted, sum->bytes += s->bytes, sum->mapped |= s->mapped;
    sum->hash_seconds += s->hash_seconds, sum->fill_seconds += s->fill_seconds;
    /* per-image cost: the entries-weighted mean of the caches' */
    sum->seconds_per_image = sum->entries ? (spi_w + s->seconds_per_image * (double)s->entries) / (double)sum->entries : 0;
    double saved = (double)(s->served - s->computed) * s->seconds_per_image;
    sum->saved_seconds += saved > 0 ? saved : 0;
}

cJSON *kt_cache_stats_json(const kt_cache_stats *s)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "entries", (double)s->entries);
    cJSON_AddNumberToObject(o, "hits", (double)s->hits);
    cJSON_AddNumberToObject(o, "computed", (double)s->computed);
    cJSON_AddNumberToObject(o, "rebuilt", (double)s->rebuilt);
    cJSON_AddNumberToObject(o, "bad", (double)s->bad);
    cJSON_AddNumberToObject(o, "served", (double)s->served);
    cJSON_AddNumberToObject(o, "evicted", (double)s->evicted);
    cJSON_AddNumberToObject(o, "bytes", (double)s->bytes);
    cJSON_AddBoolToObject(o, "mapped", s->mapped);
    cJSON_AddNumberToObject(o, "hit_rate", s->entries > 0 ? (double)s->hits / (double)s->entries : 0);
    cJSON_AddNumberToObject(o, "fill_s", s->fill_seconds);
    cJSON_AddNumberToObject(o, "saved_s", s->saved_seconds);
    return o;
}

/* ---- the folder, for kt cache ------------------------------------------------------ */

static int cmp_last_use(const void *a, const void *b)
{
    const kt_cache_group *x = a, *y = b;
    return x->last_use != y->last_use ? (x->last_use > y->last_use ? -1 : 1) : strcmp(x->id, y->id);
}

kt_status kt_cache_list(kt_cache_group **out, int *n, const char *dir, kt_err *err)
{
    char(*ids)[17];
    int nid;
    *out = NULL, *n = 0;
    if (group_ids(&ids, &nid, dir) != 0)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s/" FORMAT_DIR ": %s", dir, strerror(errno));
    kt_cache_group *g = calloc((size_t)(nid ? nid : 1), sizeof *g);
    if (!g) {
        free(ids);
        return kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
    }
    for (int i = 0; i < nid; i++) {
        char gdir[4300], path[4400];
        file_list l = {0};
        snprintf(gdir, sizeof gdir, "%s/" FORMAT_DIR "/%s", dir, ids[i]);
        files_scan(&l, gdir);
        memcpy(g[i].id, ids[i], 17);
        for (int k = 0; k < l.n; k++) {
            g[i].bytes += l.v[k].size;
            if (l.v[k].kind != FILE_ENTRY)
                continue;
            g[i].entries++;
            if (l.v[k].mtime.tv_sec > g[i].last_use)
                g[i].last_use = l.v[k].mtime.tv_sec;
        }
        files_free(&l);
        snprintf(path, sizeof path, "%s/group.json", gdir);
        g[i].json = read_text(path);
    }
    free(ids);
    qsort(g, (size_t)nid, sizeof *g, cmp_last_use);
    *out = g, *n = nid;
    return KT_OK;
}

void kt_cache_groups_free(kt_cache_group *g, int n)
{
    for (int i = 0; g && i < n; i++)
        free(g[i].json);
    free(g);
}

kt_status kt_cache_clear(const char *dir, const char *const *ids, int nids, int64_t *freed,
                         int *ngroups, kt_err *err)
{
    char(*gid)[17];
    int n;
    *freed = 0, *ngroups = 0;
    if (group_ids(&gid, &n, dir) != 0)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s/" FORMAT_DIR ": %s", dir, strerror(errno));
    kt_status st = KT_OK;
    for (int i = 0; i < n; i++) {
        int match = nids == 0;
        for (int k = 0; k < nids && !match; k++)
            match = strncmp(gid[i], ids[k], strlen(ids[k])) == 0;
        if (!match)
            continue;
        char gdir[4300];
        file_list l = {0};
        snprintf(gdir, sizeof gdir, "%s/" FORMAT_DIR "/%s", dir, gid[i]);
        files_scan(&l, gdir);
        for (int k = 0; k < l.n; k++) {
            if (unlink(l.v[k].path) == 0)
                *freed += l.v[k].size;
            else if (errno != ENOENT && st == KT_OK)
                st = kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", l.v[k].path, strerror(errno));
        }
        files_free(&l);
        rmdir(gdir); /* fails, harmlessly, when someone else's file is in it */
        (*ngroups)++;
    }
    free(gid);
    return st;
}
