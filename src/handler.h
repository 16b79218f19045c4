/* What a handler type does with a task on the loop thread. Every call is made on the loop thread
 * and must not block. */
#ifndef QWORKER_HANDLER_H
#define QWORKER_HANDLER_H

#include "config.h"

struct loop;
struct task;

struct handler_ops {
    /* Starts the task and arranges for loop_task_done() to be called when it ends. Returns -1,
     * with task->reason filled, if the payload cannot run with this handler. */
    int (*start)(struct loop *loop, struct task *task);
    /* Stops a running task at once (shutdown); loop_task_done() must not follow. */
    void (*cancel)(struct loop *loop, struct task *task);
};

const struct handler_ops *handler_ops(enum handler_type type);

#endif
