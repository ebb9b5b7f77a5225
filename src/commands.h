/* commands.h - one entry point per command, each in cmd_<name>.c.
 *
 * argv[0] is the command name; the function parses its own options with cli.h,
 * prints results on stdout and progress on stderr, and returns a status that
 * main.c turns into the exit code. On error, err->msg names what failed.
 */
#ifndef KT_COMMANDS_H
#define KT_COMMANDS_H

#include "err.h"

kt_status kt_cmd_train(int argc, char **argv, kt_err *err);
kt_status kt_cmd_predict(int argc, char **argv, kt_err *err);
kt_status kt_cmd_eval(int argc, char **argv, kt_err *err);
kt_status kt_cmd_embed(int argc, char **argv, kt_err *err);
kt_status kt_cmd_inspect(int argc, char **argv, kt_err *err);
kt_status kt_cmd_validate(int argc, char **argv, kt_err *err);
kt_status kt_cmd_check(int argc, char **argv, kt_err *err);
kt_status kt_cmd_cache(int argc, char **argv, kt_err *err);

#endif
