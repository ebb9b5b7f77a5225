/* arch.h - the ResNet described by a weights file: variant, blocks, the
 * preprocessing that belongs to the weights, and the named cut points.
 *
 * Derived from tensor names and shapes, never assumed: stage depths, widths,
 * basic vs bottleneck, stride placement (torchvision v1.5 on the 3x3, Keras/Caffe
 * v1 on the first 1x1), conv biases, BN eps. Keras tensors are converted once
 * at load to the torchvision conventions used everywhere else in kt:
 * conv weights OIHW, fc weight [classes][features], torchvision-style names.
 *
 * Cut points are indices into a linear order of points:
 *   0 input, 1 stem, 2 .. 1+nblocks one per block, 2+nblocks avgpool,
 *   3+nblocks logits.
 * "freeze at point p" means everything producing points <= p is frozen.
 */
#ifndef KT_ARCH_H
#define KT_ARCH_H

#include <stdint.h>

#include "err.h"
#include "weights.h"

typedef struct {
    char name[48];          /* torchvision-style, e.g. "layer1.0.conv1" */
    const float *w;         /* [cout][cin][k][k], owned by the arch or the weights */
    const float *bias;      /* [cout] or NULL (Keras convs have one) */
    int cin, cout, k, stride, pad;
} kt_conv_desc;

typedef struct {
    char name[48];          /* "layer1.0.bn1" */
    const float *gamma, *beta, *mean, *var; /* [c] each */
    float eps;              /* 1e-5 torchvision, 1e-3 Keras */
    int c;
} kt_bn_desc;

typedef struct {
    char name[16];          /* "layer3.2" */
    char keras_name[16];    /* "res4c" */
    int stage;              /* 1..4 */
    int bottleneck;         /* 1: conv1 1x1, conv2 3x3, conv3 1x1; 0: two 3x3 */
    kt_conv_desc conv[3];   /* conv[2] unused when !bottleneck */
    kt_bn_desc bn[3];
    int has_down;           /* projection shortcut */
    kt_conv_desc down;
    kt_bn_desc down_bn;
    int cin, cout, stride;
} kt_block_desc;

/* input = (pixel * scale - mean[c]) / std[c]. To reproduce torchvision bit
 * for bit, compute pixel / 255.0f rather than pixel * (1/255.0f) when scale
 * is 1/255 (the reference does a true division). */
typedef struct {
    int bgr;                /* 1: channel 0 is blue (Keras caffe) */
    float scale;            /* 1/255 (torchvision) or 1 (caffe), applied first */
    float mean[3], std[3];  /* in network channel order, after scale */
} kt_norm;

typedef struct {
    char variant[32];       /* "resnet50", "wide_resnet50_2", "resnet-custom" */
    char format[16];        /* "torchvision", "keras", "kt" */
    int nstages;            /* 4 */
    int depth[4];           /* blocks per stage, e.g. 3 4 6 3 */
    int width[4];           /* bottleneck width per stage */
    int bottleneck;
    int stride_on_3x3;      /* 1 v1.5, 0 v1 */
    kt_conv_desc stem_conv;
    kt_bn_desc stem_bn;
    int nblocks;
    kt_block_desc *blocks;  /* [nblocks], owned */
    int features;           /* channels after the last stage (2048 for ResNet-50) */
    int num_classes;        /* of the file's own fc head; 0 when it has none */
    const float *fc_w;      /* [num_classes][features] or NULL */
    const float *fc_b;      /* [num_classes] or NULL */
    kt_norm norm;
    int64_t nparams;
} kt_arch;

/* Builds the arch from w (w must outlive the arch). Missing or misshapen
 * tensors, NaN values and unknown layouts are KT_ERR_RUNTIME errors naming the
 * tensor and kt_weights_path(w). */
kt_status kt_arch_init(kt_arch **out, const kt_weights *w, kt_err *err);
void kt_arch_free(kt_arch *a);

/* Cut points (see top of file). The logits point exists only when the file
 * has its own classifier (num_classes > 0): npoints is 3 + nblocks, plus 1. */
int kt_arch_npoints(const kt_arch *a);
/* Canonical name of point p: "input", "stem", "layer3.2", "avgpool", "logits". */
const char *kt_arch_point_name(const kt_arch *a, int p, char *buf, int bufsize);
/* Output shape of point p for a square input of image_size: c, h, w (h = w = 1
 * for avgpool and logits). */
void kt_arch_point_shape(const kt_arch *a, int p, int image_size, int *c, int *h, int *w);
/* Resolves a name: "input", "stem", "layer1".."layer4" (last block of the
 * stage), "layer3.2", "avgpool", "logits", "none" (= input, nothing frozen),
 * and Keras names "res2".."res5", "res4f", "conv4_block6_out". Unknown names
 * are KT_ERR_USAGE listing the valid ones. */
kt_status kt_arch_point_find(const kt_arch *a, const char *name, int *p, kt_err *err);

/* kt checkpoints (safetensors with __metadata__["kt"]) hold the network under
 * torchvision names, plus what names and shapes cannot tell, in an "arch"
 * object of the kt metadata JSON. Every key is optional (defaults: the
 * torchvision conventions):
 *   "arch": {
 *     "variant": "resnet50",          informational
 *     "stride_on_3x3": 0,             1: v1.5 (torchvision), 0: v1 (Keras/Caffe)
 *     "bn_eps": 0.001,                every batch norm
 *     "norm": {"bgr": 1, "scale": 1, "mean": [103.939, 116.779, 123.68], "std": [1, 1, 1]}
 *   }
 * Conv biases are stored as "<conv>.bias" tensors ("layer1.0.conv1.bias",
 * "layer1.0.downsample.0.bias") and picked up when present. A head other than
 * a plain "fc" (e.g. "fc.0.weight") is ignored here: num_classes is then 0.
 * kt_arch_metadata_json returns that object for a (JSON text, caller frees;
 * NULL when out of memory), for the checkpoint writer to embed as "arch". */
char *kt_arch_metadata_json(const kt_arch *a);

#endif
