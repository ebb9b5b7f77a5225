/* decode_bench - kt's decode + resize + centre crop (+ normalise) throughput
 * on one thread, for bench/decode_bench.sh.
 *
 *   decode_bench MODE PASSES LIST     (LIST: a file with one image path per line)
 *     MODE exact: region-of-interest decode + exact resize/crop (kt's eval path)
 *          full:  whole-image decode + exact resize/crop
 *          fast:  DCT-scaled decode (shorter side >= 256) + resize/crop
 * Times each pass in CPU time of the process (robust when other processes
 * share the core) and prints "MODE median_ips best_ips images" on stdout:
 * images per CPU-second, median and best over PASSES passes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "image.h"
#include "transform.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: decode_bench exact|full|fast PASSES LIST\n");
        return 2;
    }
    const char *mode = argv[1];
    int passes = atoi(argv[2]), nf = 0, S = 224, R = 256;
    char **files = NULL, line[4096];
    FILE *lf = fopen(argv[3], "r");
    if (!lf || passes < 1) {
        fprintf(stderr, "decode_bench: cannot read %s\n", argv[3]);
        return 2;
    }
    while (fgets(line, sizeof line, lf)) {
        line[strcspn(line, "\n")] = '\0';
        files = realloc(files, sizeof *files * (size_t)(nf + 1));
        files[nf++] = strdup(line);
    }
    fclose(lf);
    kt_norm norm = {0, 1.0f / 255.0f, {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
    kt_image img = {0};
    kt_transform_ws ws = {0};
    kt_err err;
    uint8_t *buf = NULL;
    size_t cap = 0;
    float *out = malloc(sizeof(float) * 3 * S * S);
    double *rate = malloc(sizeof(double) * (size_t)(passes + 1));
    int done = 0;
    for (int p = 0; p <= passes; p++) {     /* pass 0 warms caches and buffers */
        double t0 = now();
        done = 0;
        for (int i = 0; i < nf; i++) {
            const char *f = files[i];
            size_t n;
            kt_image_opts o = {0};
            kt_image_info info;
            if (kt_image_read_file(&buf, &cap, &n, f, &err) || kt_image_probe(&info, buf, n, f, &err))
                continue;
            if (!strcmp(mode, "fast"))
                o.dct_min_short = R;
            else if (!strcmp(mode, "exact"))
                kt_transform_eval_roi(info.w, info.h, R, S, &o.roi_x0, &o.roi_y0, &o.roi_x1, &o.roi_y1);
            if (kt_image_decode_ex(&img, buf, n, f, &o, &err) ||
                kt_transform_eval_ws(out, (size_t)S * S, &img, R, S, &norm, &ws, &err))
                continue;
            done++;
        }
        rate[p] = done / (now() - t0);
    }
    qsort(rate + 1, (size_t)passes, sizeof *rate, cmp_double);
    printf("%s %.1f %.1f %d\n", mode, rate[1 + passes / 2], rate[passes], done);
    kt_image_free(&img);
    kt_transform_ws_free(&ws);
    for (int i = 0; i < nf; i++)
        free(files[i]);
    free(files), free(buf), free(out), free(rate);
    return 0;
}
