/* conf_finetune.c - runs the two fine-tune cases of ../shared/oracle/check_kt.md
 * with kt's modules and writes the results in the oracle's layout for
 * compare.py. Not a unit test (needs the oracle): built and run by
 * test/conformance_finetune.sh.
 *
 *   conf_finetune WEIGHTS CASES OUT
 *     WEIGHTS  resnet50_ref.safetensors (make_reference.py --weights-only)
 *     CASES    ../shared/oracle/cases
 *     OUT      folder to write finetune_sgd_layer3/ and finetune_adam_avgpool/ into
 *
 * finetune_sgd_layer3: frozen up to layer3 (eval BN), layer4 in train mode,
 * a Linear(2048, 2) head from fc_init_*, SGD lr 0.01 momentum 0.9 wd 1e-4 on
 * every trainable tensor (BN and biases included), 3 steps on the 4 oracle
 * inputs with labels 0 1 1 0.
 * finetune_adam_avgpool: the head alone on the 4 oracle avgpool vectors, Adam
 * lr 1e-3, same labels and initial head.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arch.h"
#include "blas.h"
#include "head.h"
#include "ops.h"
#include "optim.h"
#include "resnet.h"
#include "weights.h"

enum { N = 4, S = 224, F = 2048, K = 2 };

static const int labels[N] = {0, 1, 1, 0};

static int read_bin(const char *dir, const char *name, float *dst, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(dst, sizeof *dst, n, f) : 0;
    if (f)
        fclose(f);
    if (got != n) {
        fprintf(stderr, "conf_finetune: %s: cannot read %zu floats\n", path, n);
        return -1;
    }
    return 0;
}

static int write_bin(const char *dir, const char *name, const float *src, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(src, sizeof *src, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "conf_finetune: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static kt_param *find_param(kt_resnet *r, const char *name)
{
    for (int i = 0; i < kt_resnet_nparams(r); i++)
        if (strcmp(kt_resnet_param(r, i)->name, name) == 0)
            return kt_resnet_param(r, i);
    return NULL;
}

static kt_buffer *find_buffer(kt_resnet *r, const char *name)
{
    for (int i = 0; i < kt_resnet_nbuffers(r); i++)
        if (strcmp(kt_resnet_buffer(r, i)->name, name) == 0)
            return kt_resnet_buffer(r, i);
    return NULL;
}

static int head_from_init(kt_head *h, const char *sgd_dir)
{
    return read_bin(sgd_dir, "fc_init_weight.bin", kt_head_param(h, 0)->data, F * K) ||
           read_bin(sgd_dir, "fc_init_bias.bin", kt_head_param(h, 1)->data, K);
}

static void zero_grads(kt_param *const *ps, int n)
{
    for (int i = 0; i < n; i++)
        memset(ps[i]->grad, 0, sizeof(float) * (size_t)ps[i]->numel);
}

static int run_sgd(const char *weights, const char *cases, const char *out)
{
    char sgd_dir[4096], odir[4096], path[4096];
    kt_err err;
    kt_weights *w = NULL;
    kt_arch *a = NULL;
    kt_resnet *r = NULL;
    kt_head *h = NULL;
    kt_optim *o = NULL;
    kt_param **ps = NULL;
    float *input = NULL, *img = NULL, dlogits[N * K], *dfeat = NULL, losses[3];
    int rc = 1, freeze, stop;

    snprintf(sgd_dir, sizeof sgd_dir, "%s/finetune_sgd_layer3", cases);
    snprintf(odir, sizeof odir, "%s/finetune_sgd_layer3", out);
    mkdir(odir, 0777);
    if (kt_weights_load(&w, weights, &err) || kt_arch_init(&a, w, &err) ||
        kt_arch_point_find(a, "layer3", &freeze, &err) ||
        kt_arch_point_find(a, "avgpool", &stop, &err))
        goto fail;
    kt_resnet_plan plan = {.batch = N, .image_size = S, .freeze = freeze, .stop = stop, .train = 1};
    kt_head_shape hs = {.features = F, .classes = K};
    if (kt_resnet_init(&r, a, &plan, &err) || kt_head_init(&h, &hs, N, &err))
        goto fail;
    if (head_from_init(h, sgd_dir))
        goto out;

    /* The oracle's inputs are [3][S][S] per image; the network takes [3][N][S][S]. */
    input = malloc(sizeof(float) * 3 * N * S * S);
    img = malloc(sizeof(float) * 3 * S * S);
    dfeat = malloc(sizeof(float) * N * F);
    if (!input || !img || !dfeat)
        goto out;
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof path, "forward/img%d/input.bin", i);
        if (read_bin(cases, path, img, 3 * S * S))
            goto out;
        for (int c = 0; c < 3; c++)
            memcpy(input + ((size_t)c * N + i) * S * S, img + (size_t)c * S * S,
                   sizeof(float) * S * S);
    }

    int np = kt_resnet_nparams(r) + kt_head_nparams(h);
    ps = malloc(sizeof *ps * (size_t)np);
    if (!ps)
        goto out;
    for (int i = 0; i < kt_resnet_nparams(r); i++)
        ps[i] = kt_resnet_param(r, i);
    for (int i = 0; i < kt_head_nparams(h); i++)
        ps[kt_resnet_nparams(r) + i] = kt_head_param(h, i);
    /* torch.optim.SGD(all trainable, weight_decay=1e-4) decays BN and biases too. */
    kt_optim_config oc = {.kind = KT_OPTIM_SGD, .momentum = 0.9, .weight_decay = 1e-4,
                          .backbone_lr_mult = 1, .decay_all = 1};
    if (kt_optim_init(&o, &oc, ps, np, &err))
        goto fail;

    kt_param *g3 = find_param(r, "layer4.2.conv3.weight"), *g1 = find_param(r, "layer4.0.conv1.weight");
    kt_buffer *rm = find_buffer(r, "layer4.0.bn1.running_mean"),
              *rv = find_buffer(r, "layer4.0.bn1.running_var");
    if (!g3 || !g1 || !rm || !rv) {
        fprintf(stderr, "conf_finetune: layer4 tensors missing from the resnet's lists\n");
        goto out;
    }
    for (int step = 0; step < 3; step++) {
        zero_grads(ps, np);
        const float *feat = kt_resnet_forward(r, 0, input, N, 1);
        const float *logits = kt_head_forward(h, feat, N, 1, 0, step);
        losses[step] = (float)kt_softmax_ce(dlogits, logits, labels, NULL, 0, N, K);
        memset(dfeat, 0, sizeof(float) * N * F);
        kt_head_backward(h, dfeat, dlogits, N);
        kt_resnet_backward(r, dfeat, N);
        if (step == 0 &&
            (write_bin(odir, "features_step1.bin", feat, N * F) ||
             write_bin(odir, "logits_step1.bin", logits, N * K) ||
             write_bin(odir, "grad_fc_weight_step1.bin", kt_head_param(h, 0)->grad, F * K) ||
             write_bin(odir, "grad_fc_bias_step1.bin", kt_head_param(h, 1)->grad, K) ||
             write_bin(odir, "grad_layer4.2.conv3.weight_step1.bin", g3->grad, (size_t)g3->numel) ||
             write_bin(odir, "grad_layer4.0.conv1.weight_step1.bin", g1->grad, (size_t)g1->numel) ||
             write_bin(odir, "layer4.0.bn1.running_mean_after_step1.bin", rm->data, (size_t)rm->numel) ||
             write_bin(odir, "layer4.0.bn1.running_var_after_step1.bin", rv->data, (size_t)rv->numel)))
            goto out;
        kt_optim_step(o, 0.01);
    }
    printf("sgd layer3: losses %.5f %.5f %.5f (oracle 0.63310 0.77619 4.08458)\n", losses[0],
           losses[1], losses[2]);
    if (write_bin(odir, "loss_steps1-3.bin", losses, 3) ||
        write_bin(odir, "fc_weight_after_step3.bin", kt_head_param(h, 0)->data, F * K) ||
        write_bin(odir, "fc_bias_after_step3.bin", kt_head_param(h, 1)->data, K))
        goto out;
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "conf_finetune: %s\n", err.msg);
out:
    free(ps);
    free(input);
    free(img);
    free(dfeat);
    kt_optim_free(o);
    kt_head_free(h);
    kt_resnet_free(r);
    kt_arch_free(a);
    kt_weights_free(w);
    return rc;
}

static int run_adam(const char *cases, const char *out)
{
    char sgd_dir[4096], odir[4096], path[4096];
    kt_err err;
    kt_head *h = NULL;
    kt_optim *o = NULL;
    float feat[N * F], dlogits[N * K], losses[3];
    int rc = 1;

    snprintf(sgd_dir, sizeof sgd_dir, "%s/finetune_sgd_layer3", cases);
    snprintf(odir, sizeof odir, "%s/finetune_adam_avgpool", out);
    mkdir(odir, 0777);
    kt_head_shape hs = {.features = F, .classes = K};
    if (kt_head_init(&h, &hs, N, &err))
        goto fail;
    if (head_from_init(h, sgd_dir))
        goto out;
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof path, "forward/img%d/avgpool.bin", i);
        if (read_bin(cases, path, feat + i * F, F))
            goto out;
    }
    kt_param *ps[2] = {kt_head_param(h, 0), kt_head_param(h, 1)};
    kt_optim_config oc = {.kind = KT_OPTIM_ADAM, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                          .backbone_lr_mult = 1};
    if (kt_optim_init(&o, &oc, ps, 2, &err))
        goto fail;
    for (int step = 0; step < 3; step++) {
        zero_grads(ps, 2);
        const float *logits = kt_head_forward(h, feat, N, 1, 0, step);
        losses[step] = (float)kt_softmax_ce(dlogits, logits, labels, NULL, 0, N, K);
        kt_head_backward(h, NULL, dlogits, N);
        if (step == 0 && write_bin(odir, "grad_fc_weight_step1.bin", ps[0]->grad, F * K))
            goto out;
        kt_optim_step(o, 1e-3);
    }
    printf("adam avgpool: losses %.5f %.5f %.5f (oracle 0.62152 1.50622 0.58180)\n", losses[0],
           losses[1], losses[2]);
    if (write_bin(odir, "loss_steps1-3.bin", losses, 3) ||
        write_bin(odir, "fc_weight_after_step3.bin", ps[0]->data, F * K) ||
        write_bin(odir, "fc_bias_after_step3.bin", ps[1]->data, K))
        goto out;
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "conf_finetune: %s\n", err.msg);
out:
    kt_optim_free(o);
    kt_head_free(h);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: conf_finetune WEIGHTS CASES OUT\n");
        return 2;
    }
    kt_blas_init(argv);
    mkdir(argv[3], 0777);
    int rc = run_adam(argv[2], argv[3]);
    return run_sgd(argv[1], argv[2], argv[3]) || rc;
}
