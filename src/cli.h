/* cli.h - command-line option tables: parsing, range checks and --help text.
 *
 * Every command declares its options in one table; the same table drives
 * parsing and the help text, and test/t_cli_man.sh checks the man page lists
 * every long option the help prints.
 *
 * Usage inside a command:
 *   const char *model = NULL; int k = 5; int json = 0;
 *   kt_opt opts[] = {
 *       {"model", 'm', KT_OPT_STRING, "MODEL", "checkpoint or weights file", 0, 0, &model},
 *       {"top", 'k', KT_OPT_INT, "K", "show the K best classes (default 5)", 1, 1000, &k},
 *       {"json", 0, KT_OPT_FLAG, NULL, "one JSON object per image", 0, 0, &json},
 *   };
 *   static const kt_cmd cmd = {"predict", "classify images", "kt predict -m MODEL [options] IMAGE|DIR|-..."};
 *   int npos; char **pos;
 *   kt_status st = kt_cli_parse(&cmd, opts, KT_NOPTS(opts), argc, argv, &pos, &npos, err);
 *   if (st != KT_OK || !pos) return st;   // pos == NULL: --help was printed
 */
#ifndef KT_CLI_H
#define KT_CLI_H

#include <stdio.h>

#include "err.h"

typedef enum {
    KT_OPT_FLAG,   /* dest: int*, set to 1 */
    KT_OPT_STRING, /* dest: const char**, points into argv */
    KT_OPT_INT,    /* dest: int*, range [min, max] */
    KT_OPT_DOUBLE  /* dest: double*, range [min, max] */
} kt_opt_type;

typedef struct {
    const char *name;     /* long name without "--" */
    char short_name;      /* 0 for none */
    kt_opt_type type;
    const char *metavar;  /* "FILE", "K"; NULL for flags */
    const char *help;     /* one line */
    double min, max;      /* numeric range, inclusive */
    void *dest;
} kt_opt;

typedef struct {
    const char *name;     /* "predict" */
    const char *summary;  /* one line for "kt --help" */
    const char *usage;    /* "kt predict -m MODEL [options] IMAGE|DIR|-..." */
} kt_cmd;

#define KT_NOPTS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Parses argv[1..] (argv[0] is the command name). On success *pos points to the
 * positional arguments (in argv order, "--" ends options) and *npos counts them.
 * "-h"/"--help" prints the help on stdout and returns KT_OK with *pos == NULL.
 * Errors are KT_ERR_USAGE with a message naming the option; main adds the
 * "try 'kt <command> --help'" line. */
kt_status kt_cli_parse(const kt_cmd *cmd, kt_opt *opts, int nopts, int argc, char **argv,
                       char ***pos, int *npos, kt_err *err);

/* Prints usage, summary and the option table (also used by "kt help CMD"). */
void kt_cli_help(FILE *f, const kt_cmd *cmd, const kt_opt *opts, int nopts);

/* Edit distance (insertions, deletions, substitutions) between two names. */
int kt_cli_distance(const char *a, const char *b);
/* The candidate nearest to word, or NULL when none is a plausible typo; used
 * for "did you mean" hints on options, commands and job-spec keys. */
const char *kt_cli_suggest(const char *word, const char *const *cands, int n);

#endif
