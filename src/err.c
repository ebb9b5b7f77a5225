/* err.c - filling kt_err; see err.h. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

kt_status kt_err_set(kt_err *err, kt_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

kt_status kt_err_prefix(kt_err *err, const char *fmt, ...)
{
    char head[512], old[sizeof err->msg];
    va_list ap;

    if (!err)
        return KT_ERR_RUNTIME;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", head, old);
    return err->status;
}
