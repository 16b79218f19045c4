/* The exec handler: runs a program named in the config (never a shell) with the task's arguments
 * as separate argv entries or as JSON on stdin, in its own process group, watched by a pidfd;
 * its output is logged line by line, bounded; a timeout stops the whole group. */
#ifndef QWORKER_HANDLER_EXEC_H
#define QWORKER_HANDLER_EXEC_H

#include "handler.h"

extern const struct handler_ops handler_exec_ops;

#endif
