/* queue_order = "weighted": which queue a fetch serves first, by smooth weighted round robin
 * (nginx's): over any run of fetches each queue comes first in proportion to its weight, evenly
 * spread (3:1 gives A A B A, A A B A, ...), never leaving one out for long. Deterministic: the
 * share holds exactly, not only on average. The other queues follow in weight order, so that a
 * fetch whose first queue runs dry still fills up. */
#ifndef QWORKER_WEIGHTS_H
#define QWORKER_WEIGHTS_H

struct weights {
    int n;
    int total;
    int *weight;
    int *current;
};

/* -1: out of memory. */
int weights_init(struct weights *w, const int *weight, int n);
void weights_free(struct weights *w);
/* order: n queue indexes, the one to serve first at [0]. */
void weights_next(struct weights *w, int *order);

#endif
