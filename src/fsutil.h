/* fsutil.h - small file-system helpers shared by the modules that write
 * folders of their own (the training output, the activation cache). */
#ifndef KT_FSUTIL_H
#define KT_FSUTIL_H

#include "err.h"

/* mkdir -p: creates path and its missing parents. what names the folder in
 * errors (e.g. "output.dir"); a path that exists but is not a folder is an
 * error too. */
kt_status kt_fs_mkdir_p(const char *path, const char *what, kt_err *err);

#endif
