#include "config_include.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* libconfig 1.5 refuses deeper nesting itself (MAX_INCLUDE_DEPTH); a loop stops here first. */
#define INCLUDE_DEPTH_MAX 10

/* The path of an "@include" line, as libconfig's scanner reads it (^[ \t]*@include[ \t]+"...",
 * with \" and \\ escapes); NULL if the line is not one. */
static char *include_of(const char *line, char *out, size_t outlen)
{
    size_t o = 0;

    line += strspn(line, " \t");
    if (strncmp(line, "@include", 8) != 0 || (line[8] != ' ' && line[8] != '\t'))
        return NULL;
    line += 8 + strspn(line + 8, " \t");
    if (*line++ != '"')
        return NULL;
    for (; *line != '\0' && *line != '"' && o + 1 < outlen; line++) {
        if (*line == '\\' && line[1] != '\0')
            line++;
        out[o++] = *line;
    }
    out[o] = '\0';
    return out;
}

static int readable_file(const char *path, char *why, size_t whylen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0) {
        snprintf(why, whylen, "cannot read: %s", strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        snprintf(why, whylen, "cannot read: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "cannot read: %s",
                 S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* NOLINTNEXTLINE(misc-no-recursion): one level per @include, at most INCLUDE_DEPTH_MAX */
static int check(const char *path, const char *dir, int depth, char *err, size_t errlen)
{
    char inc[4096], full[8192], why[256] = "cannot read";
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    FILE *f;

    if (readable_file(path, why, sizeof(why)) < 0 || (f = fopen(path, "re")) == NULL) {
        snprintf(err, errlen, "%s:0: %s", path, why);
        return -1;
    }
    /* Whole lines, however long: a line cut in two would hide an @include. */
    while (rc == 0 && getline(&line, &cap, f) > 0) {
        lineno++;
        if (include_of(line, inc, sizeof(inc)) == NULL)
            continue;
        if (depth >= INCLUDE_DEPTH_MAX) {
            snprintf(err, errlen, "%s:%d: @include nested more than %d deep", path, lineno,
                     INCLUDE_DEPTH_MAX);
            rc = -1;
            break;
        }
        /* As libconfig 1.5 does: joined to the include directory even when absolute. */
        if (dir != NULL)
            snprintf(full, sizeof(full), "%s/%s", dir, inc);
        else
            snprintf(full, sizeof(full), "%s", inc);
        if (readable_file(full, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "%s:%d: @include \"%s\": %s", path, lineno, inc, why);
            rc = -1;
        } else {
            rc = check(full, dir, depth + 1, err, errlen);
        }
    }
    free(line);
    fclose(f);
    return rc;
}

int config_check_includes(const char *path, const char *dir, char *err, size_t errlen)
{
    return check(path, dir, 0, err, errlen);
}
