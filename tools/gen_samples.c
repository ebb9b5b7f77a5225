/* gen_samples - writes data-samples/, the small demo dataset of the README
 * and `make demo`: three classes of synthetic images that look nothing
 * alike to an ImageNet network (checkerboards, stripes, bubbles), with
 * random colours, scales, angles, sizes and a little noise, saved as a mix
 * of JPEG (baseline and progressive, 4:2:0 and 4:4:4) and PNG.
 *
 *   cc -O2 -Isrc -Itest -o build/gen_samples tools/gen_samples.c -ljpeg -lpng16 -lm
 *   build/gen_samples data-samples          (deterministic: same bytes every run)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "gen_images.h"

enum { TRAIN = 24, VAL = 8 };

static uint64_t rng_state;

static double rnd(void)     /* xorshift64*, uniform in [0, 1) */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545f4914f6cdd1dull) >> 11) * 0x1.0p-53;
}

static void colour(double c[3])
{
    for (int k = 0; k < 3; k++)
        c[k] = 20 + 215 * rnd();
}

typedef struct {
    int cls;
    double a[3], b[3];      /* the two colours of the pattern */
    double angle, scale, phase;
    int nbub;
    double bx[12], by[12], br[12], bc[12][3];
} pattern;

/* Colour of the pattern at (x, y) in pixels. */
static void shade(const pattern *p, double x, double y, double out[3])
{
    double u = x * cos(p->angle) + y * sin(p->angle), v = -x * sin(p->angle) + y * cos(p->angle);
    const double *c = p->b;
    if (p->cls == 0) {          /* checkerboard */
        long i = (long)floor(u / p->scale), j = (long)floor(v / p->scale);
        c = (i + j) & 1 ? p->a : p->b;
    } else if (p->cls == 1) {   /* stripes */
        c = sin(2 * M_PI * (u / p->scale + p->phase)) > 0 ? p->a : p->b;
    } else {                    /* bubbles: filled discs on a plain ground */
        for (int k = 0; k < p->nbub; k++) {
            double dx = x - p->bx[k], dy = y - p->by[k];
            if (dx * dx + dy * dy < p->br[k] * p->br[k])
                c = p->bc[k];
        }
    }
    out[0] = c[0], out[1] = c[1], out[2] = c[2];
}

static uint8_t *render(int cls, int w, int h, int noisy)
{
    pattern p = {0};
    p.cls = cls;
    colour(p.a), colour(p.b);
    p.angle = M_PI * rnd();
    p.scale = 8 + 28 * rnd();
    p.phase = rnd();
    p.nbub = 3 + (int)(9 * rnd());
    for (int k = 0; k < p.nbub; k++) {
        p.bx[k] = w * rnd(), p.by[k] = h * rnd();
        p.br[k] = 10 + 0.25 * (w < h ? w : h) * rnd();
        colour(p.bc[k]);
    }
    double light = 0.3 * (rnd() - 0.5), noise = noisy ? 2 + 5 * rnd() : 0;
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double acc[3] = {0, 0, 0}, c[3];
            for (int s = 0; s < 4; s++) {   /* 2x2 supersampling for smooth edges */
                shade(&p, x + 0.25 + 0.5 * (s & 1), y + 0.25 + 0.5 * (s >> 1), c);
                for (int k = 0; k < 3; k++)
                    acc[k] += c[k] / 4;
            }
            double g = 1 + light * ((double)y / h - 0.5), n = noise * (rnd() + rnd() - 1);
            for (int k = 0; k < 3; k++) {
                double v = acc[k] * g + n;
                px[((size_t)y * w + x) * 3 + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5);
            }
        }
    return px;
}

int main(int argc, char **argv)
{
    const char *root = argc > 1 ? argv[1] : "data-samples";
    const char *names[3] = {"checkerboard", "stripes", "bubbles"};
    char dir[512], path[600];
    rng_state = 0x6b74u;
    mkdir(root, 0777);
    for (int split = 0; split < 2; split++) {
        snprintf(dir, sizeof dir, "%s/%s", root, split ? "val" : "train");
        mkdir(dir, 0777);
        for (int c = 0; c < 3; c++) {
            snprintf(dir, sizeof dir, "%s/%s/%s", root, split ? "val" : "train", names[c]);
            mkdir(dir, 0777);
            for (int i = 0; i < (split ? VAL : TRAIN); i++) {
                int w = 160 + (int)(160 * rnd()), h = 140 + (int)(140 * rnd());
                /* 3 JPEG flavours and PNG; PNGs are smaller and without
                 * sensor-like noise, which PNG cannot compress. */
                int kind = (int)(4 * rnd());
                if (kind == 3)
                    w = 120 + w / 3, h = 100 + h / 3;
                uint8_t *px = render(c, w, h, kind != 3);
                int st;
                if (kind == 3) {
                    snprintf(path, sizeof path, "%s/%s_%02d.png", dir, names[c], i);
                    st = gen_png_rgb(path, w, h, px, 0);
                } else {
                    snprintf(path, sizeof path, "%s/%s_%02d.jpg", dir, names[c], i);
                    st = gen_jpeg_rgb(path, w, h, px, 80 + 5 * kind, kind != 1, kind == 2);
                }
                free(px);
                if (st != 0) {
                    fprintf(stderr, "gen_samples: cannot write %s\n", path);
                    return 1;
                }
            }
        }
    }
    return 0;
}
