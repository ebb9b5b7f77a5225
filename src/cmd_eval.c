/* cmd_eval.c - "kt eval" (placeholder until the command is built: says so and
 * exits with the usage status). */
#include "commands.h"

kt_status kt_cmd_eval(int argc, char **argv, kt_err *err)
{
    (void)argc, (void)argv;
    return kt_err_set(err, KT_ERR_USAGE, "kt eval: not built yet");
}
