/* err.h - status codes and error messages shared by every module.
 *
 * A status is also the process exit code, so main.c can return it directly.
 * Modules never print errors: they fill a kt_err with a message that names the
 * file, JSON path, tensor or image it is about, and return the status.
 * main.c prints "kt: error: <msg>" and exits with the status.
 */
#ifndef KT_ERR_H
#define KT_ERR_H

typedef enum {
    KT_OK = 0,
    KT_ERR_RUNTIME = 1,     /* I/O, out of memory, corrupt model file */
    KT_ERR_USAGE = 2,       /* bad command line or job spec */
    KT_ERR_DATA = 3,        /* dataset error: bad image under "fail", empty class */
    KT_ERR_DIVERGED = 4,    /* NaN/Inf loss */
    KT_ERR_GATE = 5,        /* a quality gate of the job was not met */
    KT_ERR_INTERRUPTED = 75 /* stopped by a signal after a resumable checkpoint */
} kt_status;

typedef struct {
    kt_status status;
    char msg[1024];
} kt_err;

/* Sets err (if not NULL) and returns status, so callers write
 *   return kt_err_set(err, KT_ERR_RUNTIME, "%s: %s", path, strerror(errno)); */
kt_status kt_err_set(kt_err *err, kt_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (adds context on the way up). */
kt_status kt_err_prefix(kt_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
