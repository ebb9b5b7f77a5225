/* t_dataset.c - image-folder scanning: class order, hidden files, nesting,
 * symlink loops, errors naming the folder, val folders and hash splits. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dataset.h"
#include "test.h"

#define ROOT "test/out/ds"

static void touch(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("x", f);
        fclose(f);
    }
}

static void rmtree(const char *path)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", path);
}

static void make_tree(void)
{
    rmtree(ROOT);
    mkdir("test/out", 0777);
    const char *dirs[] = {ROOT, ROOT "/train", ROOT "/train/b_bees", ROOT "/train/a_ants",
                          ROOT "/train/a_ants/sub", ROOT "/train/a_ants/sub2",
                          ROOT "/train/a_ants/sub2/deeper", ROOT "/train/.git", ROOT "/train/c_cats",
                          ROOT "/val", ROOT "/val/b_bees", ROOT "/empty", ROOT "/one",
                          ROOT "/one/only", ROOT "/hollow", ROOT "/hollow/x", ROOT "/hollow/y",
                          ROOT "/badval", ROOT "/badval/zebras"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++)
        mkdir(dirs[i], 0777);
    const char *files[] = {ROOT "/train/a_ants/z.jpg", ROOT "/train/a_ants/x.jpg",
                           ROOT "/train/a_ants/sub/y.png", ROOT "/train/a_ants/.DS_Store",
                           ROOT "/train/a_ants/sub2/deeper/w.jpg", ROOT "/train/a_ants/with space.jpg",
                           ROOT "/train/b_bees/1.jpg", ROOT "/train/b_bees/2.JPG",
                           ROOT "/train/c_cats/c.png", ROOT "/train/.git/HEAD", ROOT "/train/README.txt",
                           ROOT "/val/b_bees/v1.jpg", ROOT "/one/only/o.jpg", ROOT "/hollow/x/h.jpg",
                           ROOT "/badval/zebras/z.jpg", ROOT "/outside.jpg"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        touch(files[i]);
    /* A loop back to the class folder, a link to a file elsewhere, a dangling link. */
    if (symlink("..", ROOT "/train/a_ants/sub/loop") || symlink("../../outside.jpg", ROOT "/train/c_cats/linked.jpg") ||
        symlink("nowhere.jpg", ROOT "/train/c_cats/dangling.jpg"))
        printf("# symlink failed\n");
}

static void test_scan(void)
{
    kt_dataset ds;
    kt_err err = {0};
    kt_status st = kt_dataset_scan(&ds, ROOT "/train/", &err);
    CHECK(st == KT_OK, "scan a tree (%s)", err.msg);
    if (st)
        return;
    CHECK(ds.nclasses == 3 && !strcmp(ds.classes[0], "a_ants") && !strcmp(ds.classes[1], "b_bees") &&
              !strcmp(ds.classes[2], "c_cats"),
          "classes sorted, hidden .git ignored (%d)", ds.nclasses);
    const char *want[] = {"a_ants/with space.jpg", "a_ants/x.jpg", "a_ants/z.jpg",
                          "a_ants/sub/y.png", "a_ants/sub2/deeper/w.jpg", "b_bees/1.jpg",
                          "b_bees/2.JPG", "c_cats/c.png", "c_cats/linked.jpg"};
    int labels[] = {0, 0, 0, 0, 0, 1, 1, 2, 2};
    int ok = ds.n == 9;
    for (int i = 0; ok && i < 9; i++)
        ok = !strcmp(ds.rel[i], want[i]) && ds.labels[i] == labels[i];
    CHECK(ok, "samples in torchvision order, nested folders in their class, loop and dangling "
          "links skipped, hidden files ignored (%d samples)", ds.n);
    CHECK(ds.count[0] == 5 && ds.count[1] == 2 && ds.count[2] == 2, "counts per class");
    CHECK(ds.n > 0 && !strcmp(ds.paths[0], ROOT "/train/a_ants/with space.jpg") &&
              !strcmp(ds.root, ROOT "/train"),
          "paths are root/rel with the trailing slash of root dropped");
    kt_dataset val;
    st = kt_dataset_scan_val(&val, ROOT "/val", &ds, &err);
    CHECK(st == KT_OK && val.nclasses == 3 && val.n == 1 && val.labels[0] == 1 && val.count[0] == 0 &&
              val.count[1] == 1 && val.count[2] == 0,
          "val folder labelled with train's classes, missing classes counted 0 (%s)", err.msg);
    kt_dataset_free(&val);
    st = kt_dataset_scan_val(&val, ROOT "/badval", &ds, &err);
    CHECK(st == KT_ERR_DATA && strstr(err.msg, ROOT "/badval/zebras"),
          "a val class unknown to train is an error naming it (%s)", err.msg);
    kt_dataset_free(&val);
    kt_dataset_free(&ds);
    kt_dataset_free(&ds);
    kt_dataset_free(NULL);
}

static void expect_scan_error(const char *root, const char *what, const char *name, const char *why)
{
    kt_dataset ds;
    kt_err err = {0};
    kt_status st = kt_dataset_scan(&ds, root, &err);
    CHECK(st == KT_ERR_DATA && strstr(err.msg, name) && strstr(err.msg, why),
          "%s is a data error naming %s: %s (%s)", what, name, why, err.msg);
    kt_dataset_free(&ds);
}

static void test_errors(void)
{
    expect_scan_error(ROOT "/empty", "an empty root", ROOT "/empty", "no class folders");
    expect_scan_error(ROOT "/one", "a single class", "'only'", "only one class");
    expect_scan_error(ROOT "/hollow", "a class without files", ROOT "/hollow/y", "no image files");
    expect_scan_error(ROOT "/missing", "a missing root", ROOT "/missing", "No such file");
    expect_scan_error(ROOT "/outside.jpg", "a file as root", ROOT "/outside.jpg", "not a folder");
    kt_dataset ds;
    kt_err err;
    CHECK(kt_dataset_scan_lenient(&ds, ROOT "/hollow", &err) == KT_OK && ds.nclasses == 2 &&
              ds.count[1] == 0,
          "lenient scan reports an empty class by its count");
    kt_dataset_free(&ds);
}

static void test_split(void)
{
    /* 2000 names: the val fraction follows val_split, membership depends on
     * the name alone (so adding files never moves others). */
    enum { N = 2000 };
    char *names[N];
    int in20 = 0, stable = 1;
    for (int i = 0; i < N; i++) {
        names[i] = malloc(32);
        snprintf(names[i], 32, "c%d/img_%05d.jpg", i % 3, i);
        int v = kt_dataset_in_val(names[i], 0.2);
        in20 += v;
        stable &= v == kt_dataset_in_val(names[i], 0.2);
        stable &= !v || kt_dataset_in_val(names[i], 0.3);   /* growing the fraction only adds */
    }
    CHECK(in20 > 330 && in20 < 470, "val_split 0.2 puts %d of 2000 in val", in20);
    CHECK(stable, "split is a pure function of the path, monotone in val_split");

    kt_dataset all, tr, va, small, tr2, va2;
    kt_err err = {0};
    const char *const *cn = (const char *const *)names;
    kt_dataset_from_paths(&all, cn, N, &err);
    CHECK(all.n == N && !strcmp(all.paths[7], names[7]) && all.labels[7] == -1,
          "dataset from a list keeps order and has no labels");
    kt_dataset_free(&all);

    kt_dataset_scan(&all, ROOT "/train", &err);
    CHECK(kt_dataset_split(&tr, &va, &all, 0.5, &err) == KT_OK && tr.n + va.n == all.n &&
              tr.nclasses == 3 && va.nclasses == 3,
          "split of the tree: %d train + %d val = %d", tr.n, va.n, all.n);
    /* Remove one file: everything else stays on its side. */
    unlink(ROOT "/train/a_ants/z.jpg");
    kt_dataset_scan(&small, ROOT "/train", &err);
    kt_dataset_split(&tr2, &va2, &small, 0.5, &err);
    int same = 1;
    for (int i = 0; i < va2.n; i++) {
        int found = 0;
        for (int j = 0; j < va.n; j++)
            found |= !strcmp(va2.rel[i], va.rel[j]);
        same &= found;
    }
    CHECK(same && va2.n + tr2.n == small.n, "removing a file moves no other file");
    kt_dataset_free(&tr2), kt_dataset_free(&va2);
    CHECK(kt_dataset_split(&tr2, &va2, &small, 1.5, &err) == KT_ERR_USAGE, "val_split out of range");
    kt_dataset_free(&all), kt_dataset_free(&tr), kt_dataset_free(&va);
    kt_dataset_free(&small), kt_dataset_free(&tr2), kt_dataset_free(&va2);
    for (int i = 0; i < N; i++)
        free(names[i]);
}

int main(void)
{
    make_tree();
    test_scan();
    test_errors();
    test_split();
    TEST_EXIT();
}
