/* gen_train_data.c - writes a small, learnable image-folder dataset for the
 * kt train tests (test/t_train.sh builds and runs it):
 *
 *   gen_train_data DIR
 *     DIR/train/{dark,light,stripes}/NNN.{png,jpg}   24 images per class
 *     DIR/val/{dark,light,stripes}/NNN.{png,jpg}     12 per class
 *     DIR/train/light/zz_broken.jpg                  not an image (a bad file to skip)
 *
 * Classes differ in brightness and texture, so even the random narrow fixture
 * network separates them. Sizes vary (70..119 px) so resizing and cropping are
 * exercised. Deterministic: a fixed generator, the same bytes every run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gen_images.h"

static uint64_t state = 0x2545f4914f6cdd1dull;

static unsigned next(void)
{
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return (unsigned)(state >> 32);
}

/* Roughly normal noise: the sum of four uniforms. */
static int noise(int sd)
{
    int s = 0;
    for (int i = 0; i < 4; i++)
        s += (int)(next() % 256);
    return (s - 510) * sd / 148;
}

static uint8_t clamp(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

static int write_image(const char *path, int cls, int jpeg)
{
    int w = 70 + (int)(next() % 50), h = 70 + (int)(next() % 50);
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                int base = cls == 0 ? 60 : cls == 1 ? 190 : 120 + (x % 8 == 0 ? 120 : 0);
                p[((size_t)y * w + x) * 3 + c] = clamp(base + noise(cls == 2 ? 20 : 30));
            }
    int rc = jpeg ? gen_jpeg_rgb(path, w, h, p, 90, 1, 0) : gen_png_rgb(path, w, h, p, 1);
    free(p);
    return rc;
}

int main(int argc, char **argv)
{
    static const char *const classes[3] = {"dark", "light", "stripes"};
    static const char *const splits[2] = {"train", "val"};
    char path[4096];
    if (argc != 2) {
        fprintf(stderr, "usage: gen_train_data DIR\n");
        return 2;
    }
    mkdir(argv[1], 0777);
    for (int s = 0; s < 2; s++) {
        snprintf(path, sizeof path, "%s/%s", argv[1], splits[s]);
        mkdir(path, 0777);
        for (int c = 0; c < 3; c++) {
            snprintf(path, sizeof path, "%s/%s/%s", argv[1], splits[s], classes[c]);
            mkdir(path, 0777);
            for (int i = 0; i < (s ? 12 : 24); i++) {
                snprintf(path, sizeof path, "%s/%s/%s/%03d.%s", argv[1], splits[s], classes[c], i,
                         i % 2 ? "png" : "jpg");
                if (write_image(path, c, i % 2 == 0) != 0) {
                    fprintf(stderr, "gen_train_data: cannot write %s\n", path);
                    return 1;
                }
            }
        }
    }
    snprintf(path, sizeof path, "%s/train/light/zz_broken.jpg", argv[1]);
    return gen_write_file(path, "not an image\n", 13) != 0;
}
