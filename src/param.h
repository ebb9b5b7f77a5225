/* param.h - a trainable tensor as the optimizer and the checkpoint see it. */
#ifndef KT_PARAM_H
#define KT_PARAM_H

#include <stdint.h>

typedef struct {
    char name[64];          /* torchvision-style: "layer4.0.conv1.weight", "fc.weight" */
    float *data;            /* [numel], owned by the module that made it */
    float *grad;            /* [numel], accumulated by backward; zeroed by the trainer */
    int64_t numel;
    int ndim;
    int64_t shape[4];
    int no_decay;           /* batch-norm and bias parameters: no weight decay by default */
    int backbone;           /* 1: lr scaled by train.backbone_lr_mult */
} kt_param;

/* A non-trainable tensor saved in checkpoints (BN running stats, counters). */
typedef struct {
    char name[64];          /* "layer4.0.bn1.running_mean", "layer4.0.bn1.num_batches_tracked" */
    float *data;            /* [numel] or NULL when idata is used */
    int64_t *idata;
    int64_t numel;
    int ndim;
    int64_t shape[4];
} kt_buffer;

#endif
