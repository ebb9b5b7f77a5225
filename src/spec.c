/* spec.c - job spec loading (stub: the interface of spec.h, filled in next). */
#include "spec.h"

#include <stdlib.h>
#include <string.h>

static const char *const metric_names[] = {"val_acc", "val_loss", "train_acc", "train_loss"};
static const char *const act_names[] = {"relu", "gelu", "silu", "tanh"};
static const char *const optim_names[] = {"sgd", "adam", "adamw"};
static const char *const sched_names[] = {"constant", "step", "cosine"};

kt_status kt_spec_parse(kt_spec *s, const char *text, const char *name, const char *dir,
                        int check_paths, kt_err *err)
{
    (void)text, (void)dir, (void)check_paths;
    memset(s, 0, sizeof *s);
    return kt_err_set(err, KT_ERR_USAGE, "%s: job specs are not supported yet", name);
}

kt_status kt_spec_load(kt_spec *s, const char *path, kt_err *err)
{
    return kt_spec_parse(s, "", path, "", 1, err);
}

char *kt_spec_to_json(const kt_spec *s)
{
    (void)s;
    return NULL;
}

void kt_spec_free(kt_spec *s)
{
    if (!s)
        return;
    free(s->path);
    free(s->dir);
    memset(s, 0, sizeof *s);
}

const char *kt_spec_metric_name(kt_metric m) { return metric_names[m]; }
int kt_spec_metric_higher(kt_metric m) { return m == KT_METRIC_VAL_ACC || m == KT_METRIC_TRAIN_ACC; }
const char *kt_spec_activation_name(kt_activation a) { return act_names[a]; }
const char *kt_spec_optim_name(kt_optim_name o) { return optim_names[o]; }
const char *kt_spec_sched_name(kt_sched_name s) { return sched_names[s]; }

int kt_spec_key_count(void) { return 0; }
const char *kt_spec_key_at(int i, const char **kind)
{
    (void)i;
    if (kind)
        *kind = NULL;
    return NULL;
}
