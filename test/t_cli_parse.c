/* t_cli_parse.c - kt_cli_parse: option forms, ranges, messages, positionals. */
#include <stdlib.h>

#include "cli.h"
#include "test.h"

typedef struct {
    const char *model;
    int k, json, verbose;
    double thr;
} vals;

static const kt_cmd cmd = {"predict", "classify images", "kt predict [options] IMAGE..."};

/* Parses the words of line (space separated, argv[0] = "predict"). */
static kt_status run(const char *line, vals *v, char ***pos, int *npos, kt_err *err)
{
    static char buf[512];
    static char *argv[32];
    int argc = 0;
    snprintf(buf, sizeof buf, "predict %s", line);
    for (char *t = strtok(buf, " "); t && argc < 31; t = strtok(NULL, " "))
        argv[argc++] = t;
    argv[argc] = NULL;
    *v = (vals){NULL, 5, 0, 0, 0.5};
    kt_opt opts[] = {
        {"model", 'm', KT_OPT_STRING, "MODEL", "checkpoint", 0, 0, &v->model},
        {"top", 'k', KT_OPT_INT, "K", "best K", 1, 1000, &v->k},
        {"json", 'j', KT_OPT_FLAG, NULL, "json", 0, 0, &v->json},
        {"verbose", 'v', KT_OPT_FLAG, NULL, "more", 0, 0, &v->verbose},
        {"threshold", 0, KT_OPT_DOUBLE, "P", "min probability", 0, 1, &v->thr},
    };
    err->msg[0] = '\0';
    return kt_cli_parse(&cmd, opts, KT_NOPTS(opts), argc, argv, pos, npos, err);
}

int main(void)
{
    vals v;
    char **pos;
    int npos;
    kt_err err;
    kt_status st;

    st = run("--model m.st --top 3 a.jpg --json b.png", &v, &pos, &npos, &err);
    CHECK(st == KT_OK && v.model && strcmp(v.model, "m.st") == 0 && v.k == 3 && v.json == 1,
          "long options with separate values and a flag");
    CHECK(npos == 2 && strcmp(pos[0], "a.jpg") == 0 && strcmp(pos[1], "b.png") == 0 && pos[2] == NULL,
          "positionals kept in order around options");

    st = run("--model=x --top=7 --threshold=0.25", &v, &pos, &npos, &err);
    CHECK(st == KT_OK && strcmp(v.model, "x") == 0 && v.k == 7 && v.thr == 0.25 && npos == 0,
          "--name=value forms");

    st = run("-k 9 -mfoo -k5", &v, &pos, &npos, &err);
    CHECK(st == KT_OK && v.k == 5 && strcmp(v.model, "foo") == 0, "short -k 9, -mfoo, -k5; last wins");

    st = run("-jv -vjk 12 x", &v, &pos, &npos, &err);
    CHECK(st == KT_OK && v.json && v.verbose && v.k == 12 && npos == 1, "bundled short flags with a value last");

    st = run("a -- --top -k - b", &v, &pos, &npos, &err);
    CHECK(st == KT_OK && v.k == 5 && npos == 5 && strcmp(pos[1], "--top") == 0 && strcmp(pos[3], "-") == 0,
          "-- ends options; '-' is a positional");

    st = run("--top x", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE && strcmp(err.msg, "--top: expected an integer in 1..1000, got 'x'") == 0,
          "non-numeric integer: %s", err.msg);
    st = run("--top 1001", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE && strstr(err.msg, "in 1..1000, got '1001'"), "integer above range");
    st = run("-k0", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE && strcmp(err.msg, "-k: expected an integer in 1..1000, got '0'") == 0,
          "short option range error names -k: %s", err.msg);
    st = run("--top 3x", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE, "trailing garbage in a number");
    st = run("--top 99999999999999999999", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE, "integer overflow");
    st = run("--threshold 1.5", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE && strcmp(err.msg, "--threshold: expected a number in 0..1, got '1.5'") == 0,
          "double out of range: %s", err.msg);
    st = run("--threshold nan", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE, "NaN refused");

    st = run("--top", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE && strcmp(err.msg, "--top: missing value K") == 0, "missing value: %s", err.msg);
    st = run("--json=1", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE && strcmp(err.msg, "--json: takes no value") == 0, "flag with a value");
    st = run("--tpo 3", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE && strcmp(err.msg, "unknown option '--tpo'; did you mean '--top'?") == 0,
          "unknown long option suggests: %s", err.msg);
    st = run("--zzzzzzzz", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE && strcmp(err.msg, "unknown option '--zzzzzzzz'") == 0, "no wild suggestion");
    st = run("-q", &v, &pos, &npos, &err);
    CHECK(st == KT_ERR_USAGE && strcmp(err.msg, "unknown option '-q'") == 0, "unknown short option");

    /* --help prints on stdout and signals it with pos == NULL. */
    fflush(stdout);
    FILE *saved = stdout;
    FILE *tmp = tmpfile();
    stdout = tmp;
    st = run("a --help", &v, &pos, &npos, &err);
    stdout = saved;
    char help[2048] = "";
    rewind(tmp);
    size_t n = fread(help, 1, sizeof help - 1, tmp);
    help[n] = '\0';
    fclose(tmp);
    CHECK(st == KT_OK && pos == NULL, "--help returns OK without positionals");
    CHECK(strstr(help, "usage: kt predict [options] IMAGE...") && strstr(help, "-k, --top K") &&
              strstr(help, "--threshold P") && strstr(help, "-h, --help"),
          "help text lists every option");

    CHECK(kt_cli_distance("train", "trian") == 2 && kt_cli_distance("", "abc") == 3 &&
              kt_cli_distance("kitten", "sitting") == 3,
          "edit distance");
    TEST_EXIT();
}
