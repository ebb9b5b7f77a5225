/* t_weights.c - safetensors / TF.js reading, the writer, and every malformed
 * file in test/fixtures/bad (see test/fixtures/README). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "arch.h"
#include "test.h"
#include "weights.h"

#define FIX "test/fixtures/"

static kt_weights *load_ok(const char *path)
{
    kt_weights *w = NULL;
    kt_err e = {0};
    kt_status st = kt_weights_load(&w, path, &e);
    CHECK(st == KT_OK && w, "load %s%s%s", path, st ? ": " : "", st ? e.msg : "");
    return st == KT_OK ? w : NULL;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b = NULL;
    long sz;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = malloc(sz > 0 ? (size_t)sz : 1);
    *n = b ? fread(b, 1, (size_t)sz, f) : 0;
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(b, 1, n, f);
        fclose(f);
    }
}

static void test_safetensors(void)
{
    kt_weights *w = load_ok(FIX "narrow50.safetensors");
    if (!w)
        return;
    CHECK(kt_weights_format(w) == KT_FORMAT_SAFETENSORS, "narrow50: format safetensors");
    CHECK(kt_weights_kt_metadata(w) == NULL, "narrow50: no kt metadata");
    CHECK(kt_weights_tfjs_topology(w) == NULL, "narrow50: no topology");
    const kt_tensor *t = kt_weights_find(w, "conv1.weight");
    CHECK(t && t->ndim == 4 && t->shape[0] == 4 && t->shape[1] == 3 && t->shape[2] == 7
              && t->shape[3] == 7 && t->numel == 4 * 3 * 49 && !t->is_int && t->data,
          "narrow50: conv1.weight is F32 [4,3,7,7]");
    t = kt_weights_find(w, "layer4.2.bn3.num_batches_tracked");
    CHECK(t && t->is_int && t->ndim == 0 && t->numel == 1 && t->idata && t->idata[0] == 0,
          "narrow50: num_batches_tracked is an I64 scalar");
    CHECK(kt_weights_find(w, "layer4.3.conv1.weight") == NULL, "narrow50: absent name is NULL");
    int nf = 0, ni = 0;
    for (int i = 0; i < kt_weights_count(w); i++)
        kt_weights_at(w, i)->is_int ? ni++ : nf++;
    CHECK(ni > 0 && nf > 0 && kt_weights_at(w, kt_weights_count(w)) == NULL,
          "narrow50: %d float and %d int tensors, at(count) is NULL", nf, ni);

    /* F16 / BF16 files hold the same values, rounded. */
    const char *files[2] = {FIX "narrow50_f16.safetensors", FIX "narrow50_bf16.safetensors"};
    const double tol[2] = {1.0 / 2048, 1.0 / 256};
    for (int f = 0; f < 2; f++) {
        kt_weights *h = load_ok(files[f]);
        if (!h)
            continue;
        int same = kt_weights_count(h) == kt_weights_count(w), close = 1;
        double worst = 0;
        for (int i = 0; same && i < kt_weights_count(w); i++) {
            const kt_tensor *a = kt_weights_at(w, i), *b = kt_weights_find(h, a->name);
            if (!b || b->numel != a->numel || b->is_int != a->is_int) {
                same = 0;
                break;
            }
            for (int64_t j = 0; !a->is_int && j < a->numel; j++) {
                double d = fabs((double)a->data[j] - b->data[j]);
                double lim = tol[f] * fabs((double)a->data[j]) + 1e-7;
                if (d > lim)
                    close = 0;
                if (d / (fabs((double)a->data[j]) + 1e-30) > worst && fabs((double)a->data[j]) > 1e-4)
                    worst = d / fabs((double)a->data[j]);
            }
        }
        CHECK(same && close && worst > 0, "%s: same tensors, values within %g relative (worst %.2g)",
              files[f], tol[f], worst);
        kt_weights_free(h);
    }

    /* "module." prefix stripped. */
    kt_weights *m = load_ok(FIX "tiny_module.safetensors");
    if (m) {
        CHECK(kt_weights_find(m, "conv1.weight") && !kt_weights_find(m, "module.conv1.weight"),
              "tiny_module: module. prefix stripped");
        kt_weights_free(m);
    }
    kt_weights_free(w);
}

/* A TF.js model against its raw bytes: the shards concatenated hold every
 * tensor back to back in manifest order; returns how many straddle shards. */
static int check_tfjs_bytes(const kt_weights *w, const char *dir, int nshards)
{
    unsigned char *all = NULL;
    size_t total = 0, ends[8] = {0};
    for (int i = 0; i < nshards && i < 8; i++) {
        char path[256];
        size_t n = 0;
        snprintf(path, sizeof path, "%s/group1-shard%dof%d.bin", dir, i + 1, nshards);
        unsigned char *b = slurp(path, &n);
        unsigned char *na = b ? realloc(all, total + n + 1) : NULL;
        if (!na) {
            free(b);
            free(all);
            return -1;
        }
        all = na;
        memcpy(all + total, b, n);
        total += n;
        ends[i] = total;
        free(b);
    }
    size_t off = 0;
    int ok = 1, straddle = 0;
    for (int i = 0; i < kt_weights_count(w); i++) {
        const kt_tensor *t = kt_weights_at(w, i);
        size_t bytes = (size_t)t->numel * 4;
        if (off + bytes > total || memcmp(all + off, t->data, bytes) != 0)
            ok = 0;
        for (int s = 0; s + 1 < nshards; s++)
            straddle += off < ends[s] && off + bytes > ends[s];
        off += bytes;
    }
    free(all);
    return ok && off == total ? straddle : -1;
}

static void test_tfjs(void)
{
    kt_weights *w = load_ok(FIX "narrow50_keras");
    kt_weights *w2 = load_ok(FIX "narrow50_keras/model.json");
    kt_weights *v = load_ok(FIX "tiny_keras_v15");
    if (!w || !w2 || !v)
        goto done;
    CHECK(kt_weights_format(w) == KT_FORMAT_TFJS, "narrow50_keras: format tfjs");
    CHECK(strstr(kt_weights_path(w), "model.json") != NULL, "narrow50_keras: path names model.json");
    const char *topo = kt_weights_tfjs_topology(w);
    CHECK(topo && strstr(topo, "\"res3a_branch2a\"") && strstr(topo, "\"epsilon\""),
          "narrow50_keras: topology text kept");
    CHECK(kt_weights_checksum(w) == kt_weights_checksum(w2), "folder and model.json load the same");
    /* Page-sized shards are mapped back to back; others copy straddlers. */
    int s1 = check_tfjs_bytes(w, FIX "narrow50_keras", 3);
    CHECK(s1 >= 2, "narrow50_keras: every tensor equals its bytes in the 3 page-sized shards (%d straddle)", s1);
    int s2 = check_tfjs_bytes(v, FIX "tiny_keras_v15", 2);
    CHECK(s2 == 1, "tiny_keras_v15: every tensor equals its bytes in 2 odd-sized shards (%d straddles)", s2);
    const kt_tensor *t0 = kt_weights_at(w, 0);
    CHECK(strcmp(t0->name, "bn2a_branch1/gamma") == 0, "narrow50_keras: names kept, manifest order (%s)",
          t0->name);
    const kt_tensor *k = kt_weights_find(w, "res2a_branch2b/kernel");
    CHECK(k && k->ndim == 4 && k->shape[0] == 3 && k->shape[1] == 3 && k->shape[2] == 2 && k->shape[3] == 2,
          "narrow50_keras: HWIO kernel left as is");
done:
    kt_weights_free(w);
    kt_weights_free(w2);
    kt_weights_free(v);
}

static void test_write(void)
{
    kt_weights *w = load_ok(FIX "narrow50.safetensors");
    if (!w)
        return;
    int n = kt_weights_count(w);
    kt_wtensor *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++) {
        const kt_tensor *s = kt_weights_at(w, i);
        t[i].name = s->name;
        t[i].ndim = s->ndim;
        memcpy(t[i].shape, s->shape, sizeof t[i].shape);
        t[i].data = s->data;
        t[i].idata = s->idata;
    }
    const char *path = "test/out/t_weights_rt.safetensors";
    const char *meta = "{\"classes\":[\"a\",\"b\\\"q\"],\"epoch\":2}";
    kt_err e = {0};
    unlink(path);
    kt_status st = kt_weights_write(path, t, n, meta, &e);
    CHECK(st == KT_OK, "write %s%s%s", path, st ? ": " : "", st ? e.msg : "");
    CHECK(access("test/out/t_weights_rt.safetensors.tmp", F_OK) != 0, "write: no temporary left behind");
    kt_weights *r = load_ok(path);
    if (r) {
        CHECK(kt_weights_count(r) == n, "round trip: %d tensors", n);
        CHECK(kt_weights_checksum(r) == kt_weights_checksum(w),
              "round trip: same checksum (order-independent) %016llx",
              (unsigned long long)kt_weights_checksum(r));
        CHECK(kt_weights_kt_metadata(r) && strcmp(kt_weights_kt_metadata(r), meta) == 0,
              "round trip: kt metadata kept exactly");
        kt_weights_free(r);
    }
    /* Layout: header padded to 8, every tensor aligned to its element size,
     * contiguous (what the reference safetensors reader demands). */
    size_t fn = 0;
    unsigned char *fb = slurp(path, &fn);
    if (fb && fn > 8) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--)
            hl = hl << 8 | fb[i];
        CHECK(hl % 8 == 0 && 8 + hl <= fn, "written header length %llu is a multiple of 8",
              (unsigned long long)hl);
        size_t last = 8 + hl;
        while (last > 8 && fb[last - 1] == ' ')
            last--;
        CHECK(last > 8 && fb[last - 1] == '}', "header is JSON padded with spaces");
        cJSON *h = cJSON_ParseWithLength((const char *)fb + 8, last - 8);
        const cJSON *md = cJSON_GetObjectItemCaseSensitive(h, "__metadata__");
        const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(md, "format");
        CHECK(cJSON_IsString(fmt) && strcmp(fmt->valuestring, "pt") == 0, "metadata has format pt");
        /* Contiguous from 0 in header order, each tensor aligned to its
         * element size, the total matching the file. */
        const cJSON *it;
        double end = 0;
        int contiguous = 1, aligned = 1, count = 0;
        cJSON_ArrayForEach(it, h) {
            if (!strcmp(it->string, "__metadata__"))
                continue;
            const cJSON *o = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
            const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
            double b = cJSON_GetArrayItem(o, 0)->valuedouble, en = cJSON_GetArrayItem(o, 1)->valuedouble;
            int isz = strcmp(dt->valuestring, "I64") == 0 ? 8 : 4;
            contiguous &= b == end;
            aligned &= fmod(b, isz) == 0;
            end = en;
            count++;
        }
        CHECK(count == n && contiguous && aligned && (size_t)end == fn - 8 - hl,
              "written tensors contiguous and aligned to their element size");
        cJSON_Delete(h);
    }
    free(fb);

    /* A changed value changes the checksum. */
    float *copy = malloc((size_t)t[0].shape[0] * 4 + 4);
    int fi = 0;
    while (fi < n && (t[fi].idata || t[fi].ndim != 1))
        fi++;
    if (fi < n && copy) {
        memcpy(copy, t[fi].data, (size_t)t[fi].shape[0] * 4);
        copy[0] += 1.0f;
        const float *old = t[fi].data;
        t[fi].data = copy;
        st = kt_weights_write(path, t, n, NULL, &e);
        kt_weights *r2 = st == KT_OK ? load_ok(path) : NULL;
        CHECK(r2 && kt_weights_checksum(r2) != kt_weights_checksum(w) && !kt_weights_kt_metadata(r2),
              "changing one value of %s changes the checksum", t[fi].name);
        kt_weights_free(r2);
        /* NaN is refused, naming the tensor, and the previous file survives. */
        copy[0] = NAN;
        st = kt_weights_write(path, t, n, NULL, &e);
        CHECK(st == KT_ERR_RUNTIME && strstr(e.msg, t[fi].name) && strstr(e.msg, "NaN"),
              "write refuses NaN: %s", e.msg);
        r2 = load_ok(path);
        kt_weights_free(r2);
        t[fi].data = old;
    }
    free(copy);

    st = kt_weights_write("test/out/no/such/dir/x.safetensors", t, n, NULL, &e);
    CHECK(st == KT_ERR_RUNTIME && strstr(e.msg, "test/out/no/such/dir/x.safetensors"),
          "write into a missing folder names the path: %s", e.msg);
    kt_wtensor dup[2] = {t[0], t[0]};
    st = kt_weights_write(path, dup, 2, NULL, &e);
    CHECK(st == KT_ERR_RUNTIME && strstr(e.msg, t[0].name), "write refuses a repeated name: %s", e.msg);
    st = kt_weights_write(path, t, n, "{not json", &e);
    CHECK(st == KT_ERR_RUNTIME, "write refuses invalid kt metadata JSON: %s", e.msg);
    free(t);
    kt_weights_free(w);
}

/* Every malformed file: the weights (or, for structure, the arch) fail with a
 * message naming the file and what is wrong. */
static void test_bad(void)
{
    static const struct {
        const char *file;
        int arch; /* 1: loads, kt_arch_init must fail */
        const char *want1, *want2;
    } cases[] = {
        {"short.safetensors", 0, "truncated", NULL},
        {"truncated.safetensors", 0, "past the end", "tensor '"},
        {"hdrlen.safetensors", 0, "header length", "past the end of the file"},
        {"badjson.safetensors", 0, "not a valid JSON", NULL},
        {"dtype.safetensors", 0, "layer2.0.conv2.weight", "F64"},
        {"offsets.safetensors", 0, "layer3.0.bn1.running_var", "data_offsets"},
        {"overlap.safetensors", 0, "layer1.0.conv2.weight", "overlap"},
        {"size.safetensors", 0, "layer4.0.conv3.weight", "bytes"},
        {"nan.safetensors", 0, "layer2.0.bn2.weight", "NaN"},
        {"inf_f16.safetensors", 0, "layer1.0.conv1.weight", "Inf"},
        {"ndim5.safetensors", 0, "extra", "dimensions"},
        {"duplicate.safetensors", 0, "conv1.weight", "twice"},
        {"missing.safetensors", 1, "missing tensor 'layer3.0.bn2.running_mean'", NULL},
        {"shape.safetensors", 1, "layer2.0.conv2.weight", "expected [2, 2, 3, 3]"},
        {"negvar.safetensors", 1, "layer1.0.bn3.running_var", "negative"},
        {"nostage.safetensors", 1, "layer1.0.conv1.weight", NULL},
        {"notresnet.safetensors", 1, "not a ResNet", NULL},
        {"keras_noshard", 0, "group1-shard2of2.bin", "No such file"},
        {"keras_shortshard", 0, "shards hold only", "tensor 'res5a_branch2c/bias'"},
        {"keras_badjson", 0, "model.json", "not valid JSON"},
        {"keras_same_stride2", 1, "res3a_branch2b", "asymmetric"},
        {"does_not_exist.safetensors", 0, "No such file", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[256];
        kt_weights *w = NULL;
        kt_arch *a = NULL;
        kt_err e = {0};
        snprintf(path, sizeof path, FIX "bad/%s", cases[i].file);
        kt_status st = kt_weights_load(&w, path, &e);
        if (cases[i].arch) {
            CHECK(st == KT_OK, "bad/%s loads as weights%s%s", cases[i].file, st ? ": " : "", st ? e.msg : "");
            if (st == KT_OK)
                st = kt_arch_init(&a, w, &e);
        }
        int named = strstr(e.msg, cases[i].file) != NULL;
        int has = strstr(e.msg, cases[i].want1) && (!cases[i].want2 || strstr(e.msg, cases[i].want2));
        CHECK(st == KT_ERR_RUNTIME && named && has && !a && (cases[i].arch || !w),
              "bad/%s rejected: %s", cases[i].file, e.msg);
        kt_arch_free(a);
        kt_weights_free(w);
    }
}

/* Truncation at many lengths and byte flips in the header: each load either
 * succeeds or fails cleanly (ASan/UBSan watch for anything worse). */
static void test_fuzz(void)
{
    size_t n = 0;
    unsigned char *good = slurp(FIX "tiny.safetensors", &n);
    unsigned char *buf = malloc(n + 1);
    const char *path = "test/out/t_weights_fuzz.safetensors";
    int loads = 0, fails = 0, bad_status = 0;
    if (!good || !buf || n < 16) {
        CHECK(0, "read tiny.safetensors");
        free(good);
        free(buf);
        return;
    }
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | good[i];
    for (size_t len = 0; len < n; len += len < 8 + hl ? 11 : 97) {
        spit(path, good, len);
        kt_weights *w = NULL;
        kt_err e = {0};
        kt_status st = kt_weights_load(&w, path, &e);
        st == KT_OK ? loads++ : fails++;
        if (st != KT_OK && (st != KT_ERR_RUNTIME || !strstr(e.msg, path)))
            bad_status++;
        kt_weights_free(w);
    }
    CHECK(loads == 0 && fails > 100 && bad_status == 0,
          "every truncation of tiny.safetensors fails cleanly (%d tried)", fails);
    uint64_t x = 88172645463325252ull;
    loads = fails = bad_status = 0;
    for (int it = 0; it < 400; it++) {
        memcpy(buf, good, n);
        for (int k = 0; k < 3; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t at = (size_t)(x % (8 + hl));
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            static const char pool[] = "0123456789{}[]\",:-.eE FIBL64\\";
            buf[at] = it % 2 ? (unsigned char)pool[x % (sizeof pool - 1)] : (unsigned char)(x & 0xff);
        }
        spit(path, buf, n);
        kt_weights *w = NULL;
        kt_arch *a = NULL;
        kt_err e = {0};
        kt_status st = kt_weights_load(&w, path, &e);
        if (st == KT_OK) {
            loads++;
            st = kt_arch_init(&a, w, &e); /* must not crash either */
            kt_arch_free(a);
        } else {
            fails++;
            if (st != KT_ERR_RUNTIME || !strstr(e.msg, path))
                bad_status++;
        }
        kt_weights_free(w);
    }
    CHECK(bad_status == 0 && loads + fails == 400,
          "400 corrupted headers: %d load, %d fail cleanly naming the file", loads, fails);
    free(good);
    free(buf);
}

int main(void)
{
    mkdir("test/out", 0755);
    test_safetensors();
    test_tfjs();
    test_write();
    test_bad();
    test_fuzz();
    TEST_EXIT();
}
