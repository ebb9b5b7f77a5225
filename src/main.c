/* main.c - "kt <command> [options]": picks the command, prints errors and
 * turns the status into the exit code. The only place that exits: statuses
 * in err.h are the exit codes, so a command's status is returned as is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "cli.h"
#include "commands.h"

#ifndef KT_VERSION
#define KT_VERSION "0.0.0-dev"
#endif
#ifndef KT_BUILD_FLAGS
#define KT_BUILD_FLAGS "unknown"
#endif

typedef struct {
    const char *name;
    kt_status (*run)(int argc, char **argv, kt_err *err);
    const char *summary;
} command;

static const command commands[] = {
    {"train", kt_cmd_train, "fine-tune a pretrained ResNet on an image folder"},
    {"predict", kt_cmd_predict, "classify images with a trained model"},
    {"eval", kt_cmd_eval, "measure accuracy on a labelled image folder"},
    {"embed", kt_cmd_embed, "write feature vectors of images"},
    {"inspect", kt_cmd_inspect, "describe a weights file or checkpoint"},
    {"validate", kt_cmd_validate, "check a job spec and print it with defaults filled in"},
    {"check", kt_cmd_check, "check an image folder before training"},
    {"cache", kt_cmd_cache, "list or clear the activation cache"},
};
enum { NCOMMANDS = sizeof commands / sizeof commands[0] };

static void usage(FILE *f)
{
    fprintf(f, "usage: kt <command> [options] [arguments]\n"
               "       kt help <command> | kt --help | kt --version\n\n"
               "Fine-tunes a pretrained ResNet-50 on a folder of images root/<class>/<image>.\n\n"
               "commands:\n");
    for (int i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'kt <command> --help' for a command's options; see kt(1) for the job spec.\n");
}

static void version(void)
{
    printf("kt %s\n", KT_VERSION);
    printf("OpenBLAS: %s\n", kt_blas_config());
    printf("BLAS core: %s (%s), %d threads\n", kt_blas_core(), kt_blas_note(), kt_blas_threads());
    printf("build: %s\n", KT_BUILD_FLAGS);
}

static const command *find(const char *name)
{
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static kt_status unknown_command(const char *name, kt_err *err)
{
    const char *names[NCOMMANDS];
    for (int i = 0; i < NCOMMANDS; i++)
        names[i] = commands[i].name;
    const char *s = kt_cli_suggest(name, names, NCOMMANDS);
    if (s)
        return kt_err_set(err, KT_ERR_USAGE, "unknown command '%s'; did you mean '%s'?", name, s);
    return kt_err_set(err, KT_ERR_USAGE, "unknown command '%s'", name);
}

/* Every line of a (possibly multi-line) message gets the "kt: error: " prefix
 * so scripts can grep for it. */
static void print_error(const char *msg)
{
    while (*msg) {
        const char *nl = strchr(msg, '\n');
        int len = nl ? (int)(nl - msg) : (int)strlen(msg);
        fprintf(stderr, "kt: error: %.*s\n", len, msg);
        msg += len + (nl != NULL);
    }
}

int main(int argc, char **argv)
{
    kt_err err = {KT_OK, ""};
    kt_status st;
    const char *try_cmd = NULL; /* command named in the "try" hint, NULL for kt itself */

    kt_blas_init(argv);
    const char *arg = argc > 1 ? argv[1] : "";
    if (argc < 2) {
        usage(stderr);
        st = KT_ERR_USAGE;
    } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0 ||
               (strcmp(arg, "help") == 0 && argc == 2)) {
        usage(stdout);
        st = KT_OK;
    } else if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
        version();
        st = KT_OK;
    } else if (strcmp(arg, "help") == 0) {
        const command *c = find(argv[2]);
        if (!c) {
            st = unknown_command(argv[2], &err);
        } else {
            char *hargv[] = {argv[2], "--help", NULL};
            try_cmd = c->name;
            st = c->run(2, hargv, &err);
        }
    } else if (arg[0] == '-') {
        st = kt_err_set(&err, KT_ERR_USAGE, "unknown option '%s'", arg);
    } else {
        const command *c = find(arg);
        if (c) {
            try_cmd = c->name;
            st = c->run(argc - 1, argv + 1, &err);
        } else {
            st = unknown_command(arg, &err);
        }
    }
    if (st != KT_OK && err.msg[0]) {
        print_error(err.msg);
        if (st == KT_ERR_USAGE)
            fprintf(stderr, "try 'kt %s%s--help'\n", try_cmd ? try_cmd : "", try_cmd ? " " : "");
    }
    /* A result lost on a full disk must not look like success. */
    if (fflush(stdout) != 0 && st == KT_OK) {
        fprintf(stderr, "kt: error: writing standard output failed\n");
        st = KT_ERR_RUNTIME;
    }
    exit((int)st);
}
