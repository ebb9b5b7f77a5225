/* t_metrics.c - accuracy, top-5 with ties, per-class P/R/F1 and confusion on
 * hand-worked cases; metrics.jsonl truncation on resume; the plain progress
 * line. */
#include <stdlib.h>

#include "metrics.h"
#include "test.h"

static void test_counts(void)
{
    kt_metrics m;
    kt_err err;
    CHECK(kt_metrics_init(&m, 3, &err) == KT_OK, "init");
    /* true: 0 0 1 2 2 2; predicted: 0 1 1 2 0 2 */
    float z[6 * 3] = {
        5, 1, 0, /* 0 -> 0 */
        1, 3, 2, /* 0 -> 1 */
        0, 9, 1, /* 1 -> 1 */
        1, 1, 2, /* 2 -> 2 */
        4, 4, 1, /* 2 -> 0 (tie: first max) */
        0, 0, 7, /* 2 -> 2 */
    };
    int y[6] = {0, 0, 1, 2, 2, 2};
    kt_metrics_add(&m, z, y, 4, 0.5);
    kt_metrics_add(&m, z + 12, y + 4, 2, 2.0);
    CHECK(m.n == 6 && fabs(kt_metrics_acc(&m) - 4.0 / 6) < 1e-15, "accuracy 4/6");
    CHECK(fabs(kt_metrics_loss(&m) - (0.5 * 4 + 2.0 * 2) / 6) < 1e-15, "loss is the sample mean");
    int64_t want[9] = {1, 1, 0, 0, 1, 0, 1, 0, 2};
    CHECK(memcmp(m.confusion, want, sizeof want) == 0, "confusion matrix (rows true)");
    double p, r, f1;
    int64_t sup;
    kt_metrics_class(&m, 2, &p, &r, &f1, &sup);
    CHECK(p == 1 && fabs(r - 2.0 / 3) < 1e-15 && fabs(f1 - 0.8) < 1e-15 && sup == 3,
          "class 2: P 1, R 2/3, F1 0.8, support 3");
    kt_metrics_class(&m, 0, &p, &r, &f1, &sup);
    CHECK(p == 0.5 && r == 0.5 && f1 == 0.5 && sup == 2, "class 0: P R F1 0.5");

    cJSON *j = kt_metrics_json(&m, (const char *const[]){"ants", "bees", "wasps"});
    char *s = cJSON_PrintUnformatted(j);
    CHECK(s && strstr(s, "\"class\":\"wasps\"") && strstr(s, "\"confusion\":[[1,1,0],[0,1,0],[1,0,2]]") &&
              !strstr(s, "top5"),
          "json: names, confusion, no top5 below 5 classes: %.200s", s ? s : "");
    free(s);
    cJSON_Delete(j);

    kt_metrics_reset(&m);
    CHECK(m.n == 0 && m.confusion[0] == 0 && kt_metrics_acc(&m) == 0, "reset");
    kt_metrics_free(&m);
    kt_metrics_free(&m);
}

static void test_top5(void)
{
    kt_metrics m;
    kt_err err;
    kt_metrics_init(&m, 7, &err);
    float z[3 * 7] = {
        7, 6, 5, 4, 3, 2, 1, /* true 4: rank 5 -> top-5 hit */
        7, 6, 5, 4, 3, 2, 1, /* true 5: rank 6 -> miss */
        1, 1, 1, 1, 1, 1, 1, /* true 4, all tied: 4 earlier classes rank above -> hit */
    };
    int y[3] = {4, 5, 4};
    kt_metrics_add(&m, z, y, 3, 1);
    CHECK(m.top5 == 2 && m.top1 == 0, "top-5 by rank with index tie-break (%lld)", (long long)m.top5);
    int y2[1] = {5};
    kt_metrics_add(&m, z + 14, y2, 1, 1);
    CHECK(m.top5 == 2, "all tied, class 5 ranks sixth: miss");
    cJSON *j = kt_metrics_json(&m, NULL);
    CHECK(cJSON_GetObjectItem(j, "top5") != NULL, "json has top5 with 7 classes");
    cJSON_Delete(j);
    kt_metrics_free(&m);
}

static void test_log(void)
{
    const char *path = "test/out/t_metrics.jsonl";
    kt_err err;
    kt_metrics_log *l;
    remove(path);
    CHECK(kt_metrics_log_open(&l, path, -1, &err) == KT_OK, "log open");
    for (int s = 1; s <= 5; s++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "step", s * 10);
        kt_metrics_log_write(l, o, &err);
        cJSON_Delete(o);
    }
    kt_metrics_log_close(l);
    FILE *f = fopen(path, "a");
    fputs("{\"step\":60,\"tor", f); /* a line torn by a kill */
    fclose(f);

    CHECK(kt_metrics_log_open(&l, path, 30, &err) == KT_OK, "log reopen keeping step <= 30");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", 31);
    kt_metrics_log_write(l, o, &err);
    cJSON_Delete(o);
    kt_metrics_log_close(l);
    char buf[256] = {0};
    f = fopen(path, "r");
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    CHECK(strcmp(buf, "{\"step\":10}\n{\"step\":20}\n{\"step\":30}\n{\"step\":31}\n") == 0,
          "resumed log keeps lines up to the checkpoint and appends: %s", buf);
    kt_err e2;
    CHECK(kt_metrics_log_open(&l, "test/out/no/such/dir/m.jsonl", -1, &e2) == KT_ERR_RUNTIME &&
              strstr(e2.msg, "test/out/no/such/dir/m.jsonl"),
          "unwritable log names the path: %s", e2.msg);
}

static void test_progress(void)
{
    FILE *f = tmpfile();
    kt_progress p;
    kt_progress_init(&p, f, 3, 0);
    for (int s = 1; s <= 7; s++)
        kt_progress_step(&p, 1, 2, s, 7, s, 0.5, 0.75, 12.5, 65);
    kt_progress_printf(&p, "epoch 1 done\n");
    kt_progress_done(&p);
    rewind(f);
    char buf[1024] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    int lines = 0;
    for (char *c = buf; *c; c++)
        lines += *c == '\n';
    CHECK(!p.tty && lines == 4 && strstr(buf, "step 3/7") && strstr(buf, "step 6/7") &&
              strstr(buf, "step 7/7") && !strstr(buf, "step 4/7") && !strchr(buf, '\r') &&
              strstr(buf, "eta 1m05s"),
          "plain progress every 3 steps and at the end, no control codes: %s", buf);
    fclose(f);

    f = tmpfile();
    kt_progress_init(&p, f, 1, 1);
    kt_progress_step(&p, 1, 1, 1, 1, 1, 0, 0, 0, 0);
    kt_progress_printf(&p, "x\n");
    CHECK(ftell(f) == 0, "quiet prints nothing");
    fclose(f);

    char d[32];
    kt_progress_duration(d, sizeof d, 7325);
    CHECK(strcmp(d, "2h02m") == 0, "duration %s", d);
}

int main(void)
{
    test_counts();
    test_top5();
    test_log();
    test_progress();
    TEST_EXIT();
}
