/* t_head.c - the classifier head: names, PyTorch's default init bounds,
 * dropout masks as a function of (seed, step), and a finite-difference check of
 * the whole head (every activation, with and without dropout) through the
 * softmax cross-entropy loss. */
#include <stdlib.h>

#include "head.h"
#include "ops.h"
#include "rng.h"
#include "test.h"

static void test_names(void)
{
    kt_err err;
    kt_head *h;
    kt_head_shape s = {.features = 8, .classes = 3};
    CHECK(kt_head_init(&h, &s, 2, &err) == KT_OK, "linear head init");
    CHECK(kt_head_nparams(h) == 2 && strcmp(kt_head_param(h, 0)->name, "fc.weight") == 0 &&
              strcmp(kt_head_param(h, 1)->name, "fc.bias") == 0 &&
              kt_head_param(h, 0)->shape[0] == 3 && kt_head_param(h, 0)->shape[1] == 8 &&
              kt_head_param(h, 1)->no_decay && !kt_head_param(h, 0)->no_decay,
          "no hidden layer: fc.weight [3,8], fc.bias (no decay)");
    kt_head_free(h);

    int hid[2] = {16, 4};
    kt_head_shape t = {.features = 8, .nhidden = 2, .hidden = hid, .act = KT_ACT_GELU,
                       .dropout = 0.5, .classes = 3};
    CHECK(kt_head_init(&h, &t, 2, &err) == KT_OK, "mlp head init");
    CHECK(kt_head_nparams(h) == 6 && strcmp(kt_head_param(h, 0)->name, "fc.0.weight") == 0 &&
              strcmp(kt_head_param(h, 3)->name, "fc.3.bias") == 0 &&
              strcmp(kt_head_param(h, 4)->name, "fc.6.weight") == 0 &&
              kt_head_param(h, 2)->shape[0] == 4 && kt_head_param(h, 2)->shape[1] == 16 &&
              kt_head_param(h, 4)->shape[0] == 3 && kt_head_param(h, 4)->shape[1] == 4,
          "hidden layers: nn.Sequential names fc.0, fc.3, fc.6 with their shapes");
    kt_head_free(h);

    int bad[1] = {0};
    kt_head_shape u = {.features = 8, .nhidden = 1, .hidden = bad, .classes = 3};
    CHECK(kt_head_init(&h, &u, 2, &err) == KT_ERR_USAGE && strstr(err.msg, "head.hidden[0]"),
          "zero hidden width refused: %s", err.msg);
    kt_head_shape v = {.features = 8, .dropout = 1.0, .classes = 3};
    CHECK(kt_head_init(&h, &v, 2, &err) == KT_ERR_USAGE && strstr(err.msg, "head.dropout"),
          "dropout 1 refused: %s", err.msg);
}

static void test_init(void)
{
    kt_err err;
    kt_head *h, *h2;
    kt_head_shape s = {.features = 2048, .classes = 4};
    kt_head_init(&h, &s, 1, &err);
    kt_head_init(&h2, &s, 1, &err);
    kt_head_init_params(h, 42);
    kt_param *w = kt_head_param(h, 0), *b = kt_head_param(h, 1);
    double bound = 1 / sqrt(2048.0), sum = 0, sq = 0, mx = 0;
    for (int64_t i = 0; i < w->numel; i++) {
        sum += w->data[i], sq += (double)w->data[i] * w->data[i];
        if (fabs(w->data[i]) > mx)
            mx = fabs(w->data[i]);
    }
    double mean = sum / (double)w->numel, var = sq / (double)w->numel - mean * mean;
    /* U(-b, b): variance b^2/3; with 8192 draws the sample variance is within ~2%. */
    CHECK(mx <= bound && mx > 0.99 * bound && fabs(mean) < 0.02 * bound &&
              fabs(var / (bound * bound / 3) - 1) < 0.05,
          "weight ~ U(-1/sqrt(in), 1/sqrt(in)) (max %.5f bound %.5f var ratio %.3f)", mx, bound,
          var / (bound * bound / 3));
    int inb = 1;
    for (int i = 0; i < 4; i++)
        inb &= fabs(b->data[i]) <= bound && b->data[i] != 0;
    CHECK(inb, "bias within the same bound");
    kt_head_init_params(h2, 42);
    CHECK(memcmp(w->data, kt_head_param(h2, 0)->data, sizeof(float) * 8192) == 0,
          "same seed, same init");
    kt_head_init_params(h2, 43);
    CHECK(memcmp(w->data, kt_head_param(h2, 0)->data, sizeof(float) * 8192) != 0,
          "another seed, another init");
    kt_head_free(h);
    kt_head_free(h2);
}

static void test_dropout(void)
{
    enum { B = 16, F = 10, H = 256 };
    kt_err err;
    kt_head *h;
    int hid[1] = {H};
    kt_head_shape s = {.features = F, .nhidden = 1, .hidden = hid, .act = KT_ACT_RELU,
                       .dropout = 0.25, .classes = 2};
    kt_head_init(&h, &s, B, &err);
    kt_head_init_params(h, 1);
    /* Hidden layer outputs its bias (weights 0, bias 1) and the final layer
     * sums its inputs (weights 1, bias 0): each logit counts the kept units. */
    kt_param *w0 = kt_head_param(h, 0), *b0 = kt_head_param(h, 1), *w1 = kt_head_param(h, 2);
    memset(w0->data, 0, sizeof(float) * (size_t)w0->numel);
    memset(kt_head_param(h, 3)->data, 0, sizeof(float) * 2);
    for (int i = 0; i < H; i++)
        b0->data[i] = 1;
    for (int i = 0; i < 2 * H; i++)
        w1->data[i] = 1;
    float x[B * F];
    for (int i = 0; i < B * F; i++)
        x[i] = (float)kt_rng_uniform(9, KT_RNG_INIT, 99, (uint64_t)i);
    float eval[B * 2], t1[B * 2], t2[B * 2], t3[B * 2];
    memcpy(eval, kt_head_forward(h, x, B, 0, 7, 5), sizeof eval);
    memcpy(t1, kt_head_forward(h, x, B, 1, 7, 5), sizeof t1);
    memcpy(t2, kt_head_forward(h, x, B, 1, 7, 5), sizeof t2);
    memcpy(t3, kt_head_forward(h, x, B, 1, 7, 6), sizeof t3);
    CHECK(memcmp(t1, t2, sizeof t1) == 0, "same (seed, step): same dropout mask");
    CHECK(memcmp(t1, t3, sizeof t1) != 0, "next step: another mask");
    /* Inverted dropout keeps the expected value: eval gives H per row, training
     * H within sampling noise (about 1% over 16 rows of 256 units). */
    double se = 0, st = 0;
    for (int i = 0; i < B * 2; i += 2)
        se += eval[i], st += t1[i];
    CHECK(se == B * H && fabs(st / se - 1) < 0.04,
          "inverted dropout keeps the expected value (ratio %.3f)", st / se);
    kt_head_free(h);

    /* Fraction dropped, counted through a 1-wide identity probe: a head with
     * one hidden unit and many rows. */
    int one[1] = {1};
    kt_head_shape p = {.features = 1, .nhidden = 1, .hidden = one, .act = KT_ACT_RELU,
                       .dropout = 0.25, .classes = 2};
    enum { R = 4000 };
    static float xs[R], out[R * 2];
    kt_head_init(&h, &p, R, &err);
    kt_head_param(h, 0)->data[0] = 0, kt_head_param(h, 1)->data[0] = 1;
    kt_head_param(h, 2)->data[0] = 1, kt_head_param(h, 2)->data[1] = 0;
    kt_head_param(h, 3)->data[0] = 0, kt_head_param(h, 3)->data[1] = 0;
    memcpy(out, kt_head_forward(h, xs, R, 1, 3, 0), sizeof out);
    int dropped = 0, scaled = 1;
    for (int i = 0; i < R; i++) {
        dropped += out[2 * i] == 0;
        scaled &= out[2 * i] == 0 || fabsf(out[2 * i] - 1 / 0.75f) < 1e-6f;
    }
    CHECK(fabs(dropped / (double)R - 0.25) < 0.025 && scaled,
          "dropout p=0.25 drops %.3f, kept ones scaled by 1/(1-p)", dropped / (double)R);
    kt_head_free(h);
}

/* Finite differences of the mean cross-entropy against the backward, for
 * every parameter element and input element. */
static void test_gradcheck(kt_activation act, int nhidden, double dropout)
{
    enum { B = 4, F = 5, C = 3 };
    int hid[2] = {6, 4};
    kt_head_shape s = {.features = F, .nhidden = nhidden, .hidden = hid, .act = act,
                       .dropout = dropout, .classes = C};
    kt_err err;
    kt_head *h;
    kt_head_init(&h, &s, B, &err);
    kt_head_init_params(h, 11);
    /* Larger weights than the default init so every layer matters to the loss. */
    for (int i = 0; i < kt_head_nparams(h); i++) {
        kt_param *p = kt_head_param(h, i);
        for (int64_t j = 0; j < p->numel; j++)
            p->data[j] *= 3;
    }
    float x[B * F], dx[B * F] = {0}, dlog[B * C];
    int labels[B] = {0, 2, 1, 2};
    for (int i = 0; i < B * F; i++)
        x[i] = (float)(2 * kt_rng_uniform(5, KT_RNG_INIT, 77, (uint64_t)i) - 1);
    for (int i = 0; i < kt_head_nparams(h); i++) {
        kt_param *p = kt_head_param(h, i);
        memset(p->grad, 0, sizeof(float) * (size_t)p->numel);
    }
    const float *lg = kt_head_forward(h, x, B, 1, 3, 17);
    kt_softmax_ce(dlog, lg, labels, NULL, 0, B, C);
    kt_head_backward(h, dx, dlog, B);

    const float eps = 1e-2f;
    double worst = 0;
    int nbad = 0, nchk = 0;
    for (int i = -1; i < kt_head_nparams(h); i++) {
        float *v = i < 0 ? x : kt_head_param(h, i)->data;
        const float *g = i < 0 ? dx : kt_head_param(h, i)->grad;
        int64_t n = i < 0 ? B * F : kt_head_param(h, i)->numel;
        for (int64_t j = 0; j < n; j++) {
            float keep = v[j];
            v[j] = keep + eps;
            double lp = kt_softmax_ce(NULL, kt_head_forward(h, x, B, 1, 3, 17), labels, NULL, 0, B, C);
            v[j] = keep - eps;
            double lm = kt_softmax_ce(NULL, kt_head_forward(h, x, B, 1, 3, 17), labels, NULL, 0, B, C);
            v[j] = keep;
            double fd = (lp - lm) / (2 * eps);
            double e = fabs(fd - g[j]) / (fabs(fd) + 1e-2);
            if (e > worst)
                worst = e;
            nbad += e > 2e-2;
            nchk++;
        }
    }
    /* ReLU kinks can make an isolated element disagree; allow none for smooth
     * activations and at most 1% of elements for ReLU. */
    int allowed = act == KT_ACT_RELU ? nchk / 100 : 0;
    CHECK(nbad <= allowed, "gradcheck %s hidden=%d dropout=%.1f: %d/%d off (worst %.2g)",
          kt_spec_activation_name(act), nhidden, dropout, nbad, nchk, worst);
    kt_head_free(h);
}

int main(void)
{
    test_names();
    test_init();
    test_dropout();
    test_gradcheck(KT_ACT_RELU, 0, 0);
    test_gradcheck(KT_ACT_RELU, 2, 0);
    test_gradcheck(KT_ACT_RELU, 2, 0.3);
    test_gradcheck(KT_ACT_GELU, 1, 0.3);
    test_gradcheck(KT_ACT_GELU, 2, 0);
    test_gradcheck(KT_ACT_SILU, 2, 0.3);
    test_gradcheck(KT_ACT_TANH, 2, 0.3);
    TEST_EXIT();
}
