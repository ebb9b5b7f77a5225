/* cmd_embed.c - "kt embed -m MODEL --layer NAME -o OUT.npy IMAGE|DIR...":
 * the activations at a named point, one row per image in input order, as a
 * NumPy .npy file (format 1.0, little-endian float32, C order, [N, ...]).
 *
 * The file is written to OUT.npy.tmp and renamed at the end, so OUT.npy is
 * either absent/old or complete. The row count is known only at the end
 * (--skip-bad may drop images), so the header is written with room for the
 * largest possible count and rewritten, same length, before the rename.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blas.h"
#include "cli.h"
#include "commands.h"
#include "infer.h"

/* .npy v1.0 header: magic, version, little-endian u16 length of the
 * dict, the dict padded with spaces and a final newline so the data starts
 * at a multiple of 64 bytes. */
static int npy_header(char *buf, size_t cap, int64_t rows, int c, int h, int w, int vec,
                      size_t fixed_len)
{
    char dict[256];
    int n = vec ? snprintf(dict, sizeof dict,
                           "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %d), }",
                           (long long)rows, c)
                : snprintf(dict, sizeof dict,
                           "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %d, %d, %d), }",
                           (long long)rows, c, h, w);
    size_t total = fixed_len ? fixed_len : ((10 + (size_t)n + 1 + 63) / 64) * 64;
    if (total > cap || 10 + (size_t)n + 1 > total) return 0;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    size_t dl = total - 10;
    buf[8] = (char)(dl & 0xff), buf[9] = (char)(dl >> 8);
    memcpy(buf + 10, dict, (size_t)n);
    memset(buf + 10 + n, ' ', dl - (size_t)n - 1);
    buf[total - 1] = '\n';
    return (int)total;
}

kt_status kt_cmd_embed(int argc, char **argv, kt_err *err)
{
    const char *model = NULL, *layer = NULL, *out = NULL;
    int batch = 32, threads = 0, resize = 0, size = 0, skip_bad = 0, quiet = 0;
    kt_opt opts[] = {
        {"model", 'm', KT_OPT_STRING, "MODEL", "weights file, model.json or kt checkpoint", 0, 0, &model},
        {"layer", 'l', KT_OPT_STRING, "NAME",
         "point to extract: input, stem, layer1..layer4, layer3.2, avgpool, logits, res4f, ...", 0, 0,
         &layer},
        {"output", 'o', KT_OPT_STRING, "OUT.npy", "where to write the float32 array [N, ...]", 0, 0, &out},
        {"batch", 'b', KT_OPT_INT, "N", "images per forward pass (default 32)", 1, 1024, &batch},
        {"threads", 't', KT_OPT_INT, "N", "threads (default: all cores)", 1, 256, &threads},
        {"resize", 0, KT_OPT_INT, "N", "shorter side resized to N before the crop (default: the checkpoint's, else 256)", 1, 8192, &resize},
        {"size", 0, KT_OPT_INT, "N", "centre crop side, the network input (default: the checkpoint's, else 224)", 32, 4096, &size},
        {"skip-bad", 0, KT_OPT_FLAG, NULL, "leave out unreadable images with a warning instead of failing", 0, 0, &skip_bad},
        {"quiet", 'q', KT_OPT_FLAG, NULL, "no summary line on stderr", 0, 0, &quiet},
    };
    static const kt_cmd cmd = {"embed", "write activations of images at a named layer",
                               "kt embed -m MODEL --layer NAME -o OUT.npy [options] IMAGE|DIR..."};
    char **pos = NULL, **paths = NULL, *tmp = NULL;
    int npos = 0, npaths = 0;
    FILE *f = NULL;
    kt_infer inf = {0};
    kt_status st = kt_cli_parse(&cmd, opts, KT_NOPTS(opts), argc, argv, &pos, &npos, err);
    if (st != KT_OK || !pos) return st;
    if (!model || !layer || !out)
        return kt_err_set(err, KT_ERR_USAGE, "kt embed needs --model, --layer and --output");
    if (threads) kt_blas_set_threads(threads);
    if ((st = kt_infer_list(&paths, &npaths, pos, npos, err)) != KT_OK) goto fail;
    if (batch > npaths) batch = npaths;
    if ((st = kt_infer_open(&inf, model, layer, batch, resize, size, err)) != KT_OK ||
        (st = kt_infer_start(&inf, (const char *const *)paths, npaths, skip_bad, err)) != KT_OK)
        goto fail;

    int c, h, w;
    kt_infer_shape(&inf, &c, &h, &w);
    int vec = inf.point >= 2 + inf.a->nblocks; /* avgpool, logits: [N, C] */
    size_t row = (size_t)c * h * w;
    char hdr[512];
    int hlen = npy_header(hdr, sizeof hdr, npaths, c, h, w, vec, 0);
    size_t tl = strlen(out) + 5;
    float *rowbuf = malloc(sizeof(float) * row);
    tmp = malloc(tl);
    if (!rowbuf || !tmp) {
        free(rowbuf);
        st = kt_err_set(err, KT_ERR_RUNTIME, "out of memory");
        goto fail;
    }
    snprintf(tmp, tl, "%s.tmp", out);
    if (!(f = fopen(tmp, "wb")) || fwrite(hdr, 1, (size_t)hlen, f) != (size_t)hlen) {
        free(rowbuf);
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: cannot write: %s", tmp, strerror(errno));
        goto fail;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int64_t rows = 0;
    const kt_batch *b = NULL;
    while (st == KT_OK && (st = kt_infer_next(&inf, &b, err)) == KT_OK && b) {
        kt_infer_warn(b);
        const int n = b->n;
        if (n == 0) continue;
        const float *y = kt_infer_run(&inf, b);
        /* [C][n][H][W] -> one [C][H][W] row per image; avgpool and logits
         * are [n][C] rows already. */
        for (int j = 0; j < n && st == KT_OK; j++) {
            const float *src = y + (size_t)j * row;
            if (!vec) {
                size_t hw = (size_t)h * w;
                for (int ch = 0; ch < c; ch++)
                    memcpy(rowbuf + ch * hw, y + ((size_t)ch * n + j) * hw, sizeof(float) * hw);
                src = rowbuf;
            }
            if (fwrite(src, sizeof(float), row, f) != row)
                st = kt_err_set(err, KT_ERR_RUNTIME, "%s: write failed", tmp);
        }
        rows += n;
    }
    free(rowbuf);
    if (st != KT_OK) goto fail;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    npy_header(hdr, sizeof hdr, rows, c, h, w, vec, (size_t)hlen);
    if (fseek(f, 0, SEEK_SET) != 0 || fwrite(hdr, 1, (size_t)hlen, f) != (size_t)hlen ||
        fclose(f) != 0) {
        f = NULL;
        st = kt_err_set(err, KT_ERR_RUNTIME, "%s: write failed", tmp);
        goto fail;
    }
    f = NULL;
    if (rename(tmp, out) != 0) {
        st = kt_err_set(err, KT_ERR_RUNTIME, "cannot rename %s to %s", tmp, out);
        goto fail;
    }
    if (!quiet) {
        double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        char shape[64];
        if (vec)
            snprintf(shape, sizeof shape, "[%lld, %d]", (long long)rows, c);
        else
            snprintf(shape, sizeof shape, "[%lld, %d, %d, %d]", (long long)rows, c, h, w);
        fprintf(stderr, "kt embed: wrote %s %s float32 (%lld images in %.2f s, %.1f images/s, %d threads, BLAS %s)\n",
                out, shape, (long long)rows, s, s > 0 ? rows / s : 0.0, kt_blas_threads(),
                kt_blas_core());
    }
fail:
    if (f) {
        fclose(f);
        remove(tmp);
    }
    free(tmp), free(paths);
    kt_infer_close(&inf);
    return st;
}
