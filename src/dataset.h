/* dataset.h - image-folder datasets: root/<class>/<files>.
 *
 * Rules (the same for train, val and kt check):
 *   - Classes are the sub-folders of root, sorted by name (byte order, like
 *     Python's sorted() on UTF-8 names). Files directly in root are ignored.
 *   - Names starting with '.' (files and folders) are ignored.
 *   - Every other regular file below a class folder, at any depth, is a sample
 *     of that class: the format is sniffed when the image is decoded, so a GIF
 *     or a text file is a bad image reported with its reason, not silently
 *     dropped. Samples are ordered like torchvision's ImageFolder: by folder
 *     path, then file name.
 *   - Symbolic links are followed; a link back to a folder already on the
 *     current path is not entered again (no loops).
 *   - An empty root, a single class, or a class folder without files is a
 *     KT_ERR_DATA error naming the folder.
 *
 * Validation: either a separate folder with the same classes (scanned with
 * kt_dataset_scan_val: a class missing there has count 0, for the caller to
 * report; a class unknown to train is an error), or kt_dataset_split, which
 * puts a sample in val when a hash of its relative path falls below val_split,
 * so adding images never moves an existing image between train and val.
 */
#ifndef KT_DATASET_H
#define KT_DATASET_H

#include <stdint.h>

#include "err.h"

/* Owns every string and array (one pool); kt_dataset_free releases them. */
typedef struct {
    char *root;             /* as given */
    int n;                  /* samples */
    char **paths;           /* [n] root/<class>/..., usable with fopen */
    const char **rel;       /* [n] path relative to root: "<class>/.../<file>" */
    int *labels;            /* [n] class index, -1 for a dataset made from a list */
    int nclasses;
    char **classes;         /* [nclasses] sorted class names */
    int *count;             /* [nclasses] samples per class */
    void *pool_;            /* private */
} kt_dataset;

/* Scans root. On error ds is left empty (safe to free). */
kt_status kt_dataset_scan(kt_dataset *ds, const char *root, kt_err *err);
/* The same, for reporting tools (kt check): an empty root, a single class
 * and empty class folders are not errors (count[c] == 0 shows them). */
kt_status kt_dataset_scan_lenient(kt_dataset *ds, const char *root, kt_err *err);
/* Scans a validation folder, labelling with train's classes: ds->classes and
 * ds->nclasses are copies of train's, ds->count[c] == 0 for a class with no
 * folder or no files there (the caller reports it). A class folder unknown to
 * train is KT_ERR_DATA naming it; so is a val folder with no samples at all. */
kt_status kt_dataset_scan_val(kt_dataset *ds, const char *root, const kt_dataset *train,
                              kt_err *err);
/* Splits all into train and val by hash of the relative path (0 < val_split < 1).
 * Both keep all's class list; a class may end with 0 val samples. */
kt_status kt_dataset_split(kt_dataset *train, kt_dataset *val, const kt_dataset *all,
                           double val_split, kt_err *err);
/* 1 when the sample with this relative path goes to val under val_split. */
int kt_dataset_in_val(const char *rel, double val_split);
/* A dataset of the given files, in order, labels -1, no classes (for predict
 * and embed). */
kt_status kt_dataset_from_paths(kt_dataset *ds, const char *const *paths, int n, kt_err *err);
void kt_dataset_free(kt_dataset *ds);

#endif
