/* The arguments of one record.lua call (src/lua/record.lua says what they mean) for a batch of
 * finished tasks, built once and kept unchanged while the batch is sent again after a refusal
 * or a lost reply: the same tag, so that a batch Redis did apply is never applied twice. */
#ifndef QWORKER_RECORD_H
#define QWORKER_RECORD_H

#include <stdbool.h>
#include <stddef.h>

struct task;

struct record_keys {
    const char *inflight, *stats, *dead, *schedule, *marker;
    const char *worker;
    bool acks; /* at-least-once: acknowledge out of the in-flight hash */
};

struct record_call {
    const char **keys;
    int nkeys;
    const char **args;
    size_t *arglens;
    int nargs;
    size_t ntasks;
    /* what the call owns */
    char **owned;
    size_t nowned;
    size_t cap_keys, cap_args, cap_args_lens, cap_owned;
};

/* Builds the call for tasks (linked by ->next; each already decided: dead, due_ms, outcome),
 * tagged tag. 0, or -1 if out of memory (call is then empty). Tasks must outlive the call:
 * payloads and ids are pointed to, not copied. now_s dates dead letters. */
int record_build(struct record_call *call, const struct record_keys *k, const char *tag,
                 const struct task *tasks, long long now_s);
void record_free(struct record_call *call);

#endif
