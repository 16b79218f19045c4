#include "weights.h"

#include <stdlib.h>
#include <string.h>

int weights_init(struct weights *w, const int *weight, int n)
{
    memset(w, 0, sizeof(*w));
    w->weight = calloc((size_t)(n > 0 ? n : 1), sizeof(*w->weight));
    w->current = calloc((size_t)(n > 0 ? n : 1), sizeof(*w->current));
    if (w->weight == NULL || w->current == NULL) {
        weights_free(w);
        return -1;
    }
    w->n = n;
    for (int i = 0; i < n; i++) {
        w->weight[i] = weight[i];
        w->total += weight[i];
    }
    return 0;
}

void weights_free(struct weights *w)
{
    free(w->weight);
    free(w->current);
    memset(w, 0, sizeof(*w));
}

void weights_next(struct weights *w, int *order)
{
    int best = 0, k = 1;

    for (int i = 0; i < w->n; i++) {
        w->current[i] += w->weight[i];
        if (w->current[i] > w->current[best])
            best = i;
    }
    w->current[best] -= w->total;
    order[0] = best;
    /* The rest by weight, heaviest first; equal weights keep their configured order. */
    for (int i = 0; i < w->n; i++)
        if (i != best) {
            int j = k++;
            while (j > 1 && w->weight[order[j - 1]] < w->weight[i]) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = i;
        }
}
