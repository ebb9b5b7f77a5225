/* t_spec.c - job spec: defaults, round trip, messages, and that
 * config.example.json covers every key of the schema. */
#include <cJSON.h>
#include <stdlib.h>

#include "spec.h"
#include "test.h"

static kt_spec s;
static kt_err err;

static kt_status parse_in(const char *text, const char *dir)
{
    kt_spec_free(&s);
    err.msg[0] = '\0';
    return kt_spec_parse(&s, text, "job.json", dir, 0, &err);
}

static kt_status parse(const char *text) { return parse_in(text, "jobs"); }

static int has_problem(const char *line)
{
    return s.problems && strstr(s.problems, line) != NULL;
}

static const char *minimal = "{\"model\": {\"weights\": \"w.safetensors\"}, \"data\": {\"train\": \"imgs\"}}";

/* Walks "a.b.c" in a cJSON tree. */
static const cJSON *walk(const cJSON *root, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *n = root;
    for (char *t = strtok(buf, "."); t && n; t = strtok(NULL, "."))
        n = cJSON_GetObjectItemCaseSensitive(n, t);
    return n;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *t = calloc(1, 1 << 16);
    if (t)
        t[fread(t, 1, (1 << 16) - 1, f)] = '\0';
    fclose(f);
    return t;
}

int main(void)
{
    CHECK(parse(minimal) == KT_OK, "minimal spec: %s", err.msg);
    CHECK(strcmp(s.model.weights, "jobs/w.safetensors") == 0 && strcmp(s.data.train, "jobs/imgs") == 0,
          "relative paths joined to the job's folder");
    CHECK(strcmp(s.output.dir, "jobs/runs/job") == 0, "output.dir default beside the job: %s", s.output.dir);
    CHECK(strcmp(s.model.freeze, "avgpool") == 0 && s.head.nhidden == 0 && s.data.val == NULL, "model/head defaults");
    CHECK(s.data.val_split == 0.1 && s.data.image_size == 224 && s.data.resize == 256, "data defaults");
    CHECK(s.data.augment.flip == 1 && s.data.augment.random_resized_crop.enabled == 1 &&
              s.data.augment.random_resized_crop.scale[0] == 0.08,
          "augment defaults");
    CHECK(s.train.optimizer.name == KT_OPTIM_SGD && s.train.optimizer.lr == 0.01 &&
              s.train.optimizer.momentum == 0.9 && s.train.optimizer.betas[1] == 0.999,
          "optimizer defaults");
    CHECK(s.train.schedule.name == KT_SCHED_COSINE && s.output.best_metric == KT_METRIC_VAL_ACC &&
              s.train.ngates == 0 && s.train.cache_dir == NULL,
          "schedule, metric, gates defaults");

    /* Round trip: the resolved JSON (paths already resolved, so read from
     * the current folder) parses back to the same resolved JSON. */
    char *j1 = kt_spec_to_json(&s);
    CHECK(j1 && parse_in(j1, "") == KT_OK, "resolved JSON parses: %s", err.msg);
    char *j2 = kt_spec_to_json(&s);
    CHECK(j1 && j2 && strcmp(j1, j2) == 0, "resolved JSON is a fixed point");
    free(j1), free(j2);

    CHECK(parse("{\"model\": {\"weights\": \"/abs/w\"}, \"data\": {\"train\": \"t\"},"
                " \"head\": {\"hidden\": [512, 256], \"activation\": \"gelu\"},"
                " \"data\": {\"train\": \"t\"}}") == KT_ERR_USAGE && has_problem("job.json: data: duplicate key"),
          "duplicate key reported");
    CHECK(parse("{\"model\": {\"weights\": \"/abs/w\"}, \"data\": {\"train\": \"t\", \"val\": \"v\"},"
                " \"head\": {\"hidden\": [512, 256], \"activation\": \"gelu\"},"
                " \"data_\": 1}") == KT_ERR_USAGE, "unknown top-level key");
    CHECK(has_problem("job.json: data_: unknown key; did you mean 'data'?"), "top-level suggestion");
    CHECK(strcmp(s.model.weights, "/abs/w") == 0 && s.head.nhidden == 2 && s.head.hidden[1] == 256 &&
              s.head.activation == KT_ACT_GELU && s.data.val_split == 0,
          "values parsed even when another key is wrong");

    CHECK(parse("{\"model\": {\"weights\": \"w\"}, \"data\": {\"train\": \"t\"},"
                " \"train\": {\"max_time\": \"1h30m\", \"cache_memory\": \"1.5G\", \"seed\": 12345678901,"
                " \"gates\": {\"val_acc\": 0.9, \"train_loss\": 0.5}}}") == KT_OK,
          "durations, sizes, seeds, gates: %s", err.msg);
    CHECK(s.train.max_time == 5400 && s.train.cache_memory == 1610612736LL && s.train.seed == 12345678901ULL,
          "1h30m = 5400 s, 1.5G = 1.5 * 2^30 bytes, 64-bit seed");
    CHECK(s.train.ngates == 2 && s.train.gates[0].metric == KT_METRIC_VAL_ACC && s.train.gates[0].value == 0.9 &&
              s.train.gates[1].metric == KT_METRIC_TRAIN_LOSS,
          "gates parsed in order");

    CHECK(parse("{\"model\": {\"weights\": \"w\"}, \"data\": {\"train\": \"t\","
                " \"augment\": {\"random_resized_crop\": false, \"color_jitter\": true}}}") == KT_OK &&
              s.data.augment.random_resized_crop.enabled == 0 && s.data.augment.color_jitter.contrast == 0.4,
          "augment toggles as booleans");
    j1 = kt_spec_to_json(&s);
    CHECK(j1 && strstr(j1, "\"random_resized_crop\": false"), "a disabled crop prints as false");
    free(j1);

    /* Every problem at once, each with its JSON path. */
    CHECK(parse("{\"model\": {\"freeze\": \"layer9\"}, \"data\": {\"train\": 3, \"val_split\": 1},"
                " \"train\": {\"optimizer\": {\"lr\": -1, \"name\": \"adamw\", \"nesterov\": true},"
                " \"epochs\": 2.5, \"batch_size\": \"32\"}, \"output\": {\"keep\": -1}}") == KT_ERR_USAGE,
          "bad spec is a usage error");
    CHECK(has_problem("job.json: train.optimizer.lr: expected a number > 0, got -1\n"), "lr message");
    CHECK(has_problem("job.json: train.epochs: expected an integer in 1..1000000, got 2.5"), "non-integer epochs");
    CHECK(has_problem("job.json: train.batch_size: expected an integer in 1..65536, got \"32\""), "string for int");
    CHECK(has_problem("job.json: data.train: expected a folder path, got 3"), "wrong type for a path");
    CHECK(has_problem("job.json: data.val_split: expected a number >= 0 and < 1, got 1"), "exclusive upper bound");
    CHECK(has_problem("job.json: model.weights: missing; this key is required"), "required key");
    CHECK(has_problem("job.json: model.freeze: expected a cut point"), "freeze form checked");
    CHECK(has_problem("job.json: output.keep: expected an integer in 0..1000000, got -1"), "keep range");
    CHECK(has_problem("train.optimizer.nesterov: needs optimizer \"sgd\""), "nesterov needs sgd");
    CHECK(s.nproblems == 9, "9 problems found, got %d", s.nproblems);
    CHECK(strstr(err.msg, "train.optimizer.lr") != NULL, "err->msg carries the first problems");

    CHECK(parse("{\"model\": {\"weights\": \"w\"}, \"data\": {\"train\": \"t\", \"val_split\": 0},"
                " \"output\": {\"best_metric\": \"val_loss\"}}") == KT_ERR_USAGE &&
              has_problem("output.best_metric: \"val_loss\" needs validation data"),
          "validation metric without validation data");
    CHECK(parse("{\"model\": {\"weights\": \"w\"}, \"data\": {\"train\": \"t\", \"val_split\": 0}}") == KT_OK &&
              s.output.best_metric == KT_METRIC_TRAIN_ACC && s.train.early_stopping.metric == KT_METRIC_TRAIN_LOSS,
          "default metrics fall back to training metrics without validation");

    for (int i = 0; i < 8; i++) {
        static const char *const forms[] = {"none", "stem", "layer4", "layer3.2", "res4", "res4f",
                                            "conv4_block6_out", "logits"};
        char text[256];
        snprintf(text, sizeof text, "{\"model\": {\"weights\": \"w\", \"freeze\": \"%s\"}, \"data\": {\"train\": \"t\"}}",
                 forms[i]);
        CHECK(parse(text) == KT_OK && strcmp(s.model.freeze, forms[i]) == 0, "freeze \"%s\" accepted", forms[i]);
    }

    /* Syntax errors: line and column of the fault. */
    CHECK(parse("{\n  \"model\": {\n    \"weights\": \"w\",\n  }\n}") == KT_ERR_USAGE &&
              has_problem("job.json:4:3: syntax error: trailing comma"),
          "trailing comma at 4:3");
    CHECK(parse("{\"a\": 1\n \"b\": 2}") == KT_ERR_USAGE &&
              has_problem("job.json:2:2: syntax error: expected ',' or '}'"),
          "missing comma at 2:2");
    CHECK(parse("{\"a\": tru}") == KT_ERR_USAGE && has_problem("job.json:1:7: syntax error: expected a value"),
          "bad literal at 1:7");
    CHECK(parse("{\"a\": \"\xc3\xa9\xc3\xa9\" x}") == KT_ERR_USAGE && has_problem("job.json:1:12:"),
          "columns count characters, not bytes");
    CHECK(parse("{\"a\": 1} x") == KT_ERR_USAGE && has_problem("job.json:1:10: syntax error: unexpected text"),
          "trailing text");
    CHECK(parse("{\"a\": [1, 2") == KT_ERR_USAGE && has_problem("syntax error: unexpected end of file"),
          "truncated file");
    CHECK(parse("[1]") == KT_ERR_USAGE && has_problem("expected a JSON object"), "top level must be an object");

    /* The schema table is data: every key is in config.example.json, and
     * config.example.json itself parses without problems. */
    char *ex = slurp("config.example.json");
    cJSON *root = ex ? cJSON_Parse(ex) : NULL;
    CHECK(root != NULL, "config.example.json is JSON");
    int missing = 0;
    for (int i = 0; root && i < kt_spec_key_count(); i++) {
        const char *key = kt_spec_key_at(i, NULL);
        if (!walk(root, key)) {
            printf("# config.example.json lacks %s\n", key);
            missing++;
        }
    }
    CHECK(root && kt_spec_key_count() > 50 && missing == 0, "config.example.json covers all %d keys (%d missing)",
          kt_spec_key_count(), missing);
    CHECK(ex && parse(ex) == KT_OK, "config.example.json parses: %s", err.msg);
    cJSON_Delete(root);
    free(ex);
    kt_spec_free(&s);
    kt_spec_free(NULL);
    TEST_EXIT();
}
