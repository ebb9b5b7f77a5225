/* fsutil.c - see fsutil.h. */
#include "fsutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

kt_status kt_fs_mkdir_p(const char *path, const char *what, kt_err *err)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: name too long: %s", what, path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return kt_err_set(err, KT_ERR_RUNTIME, "%s: cannot create %s: %s", what, buf,
                              strerror(errno));
        *p = c;
        if (!c) break;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return kt_err_set(err, KT_ERR_RUNTIME, "%s: %s is not a folder", what, path);
    return KT_OK;
}
