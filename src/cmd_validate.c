/* cmd_validate.c - "kt validate JOB": check a job spec, print it resolved.
 *
 * Problems are printed one per line on stderr, compiler style (file first),
 * so an editor or a CI log points at each; the summary goes through main as
 * the error. The resolved spec goes to stdout, so it can be saved and reused.
 *
 * Beyond the spec itself, the weights are opened (they are memory-mapped, so
 * this is cheap) to check that they are a ResNet kt can use and that the cut
 * point model.freeze exists in them: a typo there should not wait for train.
 */
#include <stdio.h>
#include <stdlib.h>

#include "arch.h"
#include "cli.h"
#include "commands.h"
#include "spec.h"
#include "weights.h"

/* Opens the weights and finds the cut point; errors name the job and key. */
static kt_status check_model(const kt_spec *s, kt_err *err)
{
    kt_weights *w = NULL;
    kt_arch *a = NULL;
    int point;
    kt_status st = kt_weights_load(&w, s->model.weights, err);
    if (st == KT_OK)
        st = kt_arch_init(&a, w, err);
    if (st != KT_OK) {
        kt_err_prefix(err, "%s: model.weights", s->path);
        goto done;
    }
    st = kt_arch_point_find(a, s->model.freeze, &point, err);
    if (st != KT_OK)
        kt_err_prefix(err, "%s: model.freeze", s->path);
done:
    kt_arch_free(a);
    kt_weights_free(w);
    return st;
}

kt_status kt_cmd_validate(int argc, char **argv, kt_err *err)
{
    int keys = 0, quiet = 0;
    kt_opt opts[] = {
        {"keys", 0, KT_OPT_FLAG, NULL, "list every key of the job spec and exit", 0, 0, &keys},
        {"quiet", 'q', KT_OPT_FLAG, NULL, "print problems only, not the resolved spec", 0, 0, &quiet},
    };
    static const kt_cmd cmd = {
        "validate",
        "Checks a job spec, reports every problem found, and prints the spec with\n"
        "every default filled in and paths resolved (JSON on stdout).",
        "kt validate [options] JOB.json"};
    char **pos;
    int npos;
    kt_spec s;
    kt_status st = kt_cli_parse(&cmd, opts, KT_NOPTS(opts), argc, argv, &pos, &npos, err);
    if (st != KT_OK || !pos)
        return st;
    if (keys) {
        for (int i = 0; i < kt_spec_key_count(); i++) {
            const char *kind;
            const char *key = kt_spec_key_at(i, &kind);
            printf("%-45s %s\n", key, kind);
        }
        return KT_OK;
    }
    if (npos != 1)
        return kt_err_set(err, KT_ERR_USAGE, "expected one job file, got %d arguments", npos);

    st = kt_spec_load(&s, pos[0], err);
    if (st != KT_OK) {
        if (s.problems) {
            fputs(s.problems, stderr);
            kt_err_set(err, st, "%s: %d problem%s found", pos[0], s.nproblems, s.nproblems == 1 ? "" : "s");
        }
        kt_spec_free(&s);
        return st;
    }
    st = check_model(&s, err);
    if (st != KT_OK) {
        kt_spec_free(&s);
        return st;
    }
    char *json = kt_spec_to_json(&s);
    kt_spec_free(&s);
    if (!json)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: out of memory", pos[0]);
    if (!quiet)
        printf("%s\n", json);
    free(json);
    return KT_OK;
}
