/* What a handler type does with a task on the loop thread. Every call is made on the loop thread
 * and must not block. */
#ifndef QWORKER_HANDLER_H
#define QWORKER_HANDLER_H

#include "config.h"

struct loop;
struct task;

struct handler_ops {
    /* Starts the task and arranges for loop_task_done() to be called when it ends. Returns -1
     * if it could not start, with task->reason and task->outcome filled: OUTCOME_INVALID for a
     * payload this handler cannot run, OUTCOME_FAILED for a failure worth another attempt. */
    int (*start)(struct loop *loop, struct task *task);
    /* Stops a running task at once (shutdown); loop_task_done() must not follow. */
    void (*cancel)(struct loop *loop, struct task *task);
    /* Cancelled (qworkerctl cancel): stopped as a timeout stops it (exec: SIGTERM to its group,
     * SIGKILL after kill_grace), ending through loop_task_done with OUTCOME_CANCELLED. */
    void (*stop)(struct loop *loop, struct task *task);
};

const struct handler_ops *handler_ops(enum handler_type type);

#endif
