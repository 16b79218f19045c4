/* Shared by the fuzz targets: a property check that aborts (so libFuzzer keeps the input as a
 * crash) with the failed condition, and a private temporary directory made once per process. */
#ifndef QWORKER_FUZZ_CHECK_H
#define QWORKER_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

/* Writes len bytes to path (created or truncated). Aborts on error: the harness is broken. */
static inline void fuzz_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "w");

    if (f == NULL || (len > 0 && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* A fresh directory under $TMPDIR (or /tmp) for this process, written into dir. */
static inline void fuzz_make_tmpdir(char *dir, size_t dirlen)
{
    const char *tmp = getenv("TMPDIR");

    snprintf(dir, dirlen, "%s/qworker-fuzz-XXXXXX", tmp != NULL && tmp[0] == '/' ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
}

#endif
