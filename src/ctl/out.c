/* qworkerctl's output: aligned tables for people, JSON for scripts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "logtext.h"

#define CELL_MAX 512 /* escaped; longer text is cut at a whole character */

struct table {
    int ncols, nrows, cap;
    char **cells; /* nrows * ncols, the first row the headers */
    size_t *width;
};

static char *escaped(const char *s)
{
    char buf[CELL_MAX];

    logtext_escape(s ? s : "", s ? strlen(s) : 0, buf, sizeof(buf));
    return strdup(buf);
}

struct table *table_new(const char *const *headers, int ncols)
{
    struct table *t = calloc(1, sizeof(*t));

    if (t == NULL || (t->width = calloc((size_t)ncols, sizeof(*t->width))) == NULL) {
        free(t);
        return NULL;
    }
    t->ncols = ncols;
    table_add(t, headers);
    return t;
}

void table_add(struct table *t, const char *const *cells)
{
    if (t == NULL)
        return;
    if (t->nrows == t->cap) {
        int cap = t->cap ? t->cap * 2 : 16;
        char **grown = realloc(t->cells, (size_t)cap * (size_t)t->ncols * sizeof(*grown));
        if (grown == NULL)
            return; /* a row lost to out of memory: the table still prints */
        t->cells = grown;
        t->cap = cap;
    }
    for (int i = 0; i < t->ncols; i++) {
        char *s = escaped(cells[i]);
        size_t w = s ? strlen(s) : 0;
        t->cells[t->nrows * t->ncols + i] = s;
        if (w > t->width[i])
            t->width[i] = w;
    }
    t->nrows++;
}

void table_print(struct table *t)
{
    if (t == NULL)
        return;
    for (int r = 0; r < t->nrows; r++) {
        for (int i = 0; i < t->ncols; i++) {
            const char *s = t->cells[r * t->ncols + i];
            if (i + 1 < t->ncols)
                printf("%-*s  ", (int)t->width[i], s ? s : "");
            else
                printf("%s\n", s ? s : "");
        }
    }
}

void table_free(struct table *t)
{
    if (t == NULL)
        return;
    for (int i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t->width);
    free(t);
}

int json_print(json_t *v)
{
    /* JSON escapes control characters itself; ensure_ascii keeps odd bytes off the terminal. */
    int rc = v ? json_dumpf(v, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) : -1;

    if (rc == 0)
        putchar('\n');
    json_decref(v);
    return rc;
}

void print_safe(FILE *out, const char *label, const char *text)
{
    char *s = escaped(text);

    fprintf(out, "%s%s\n", label, s ? s : "");
    free(s);
}
