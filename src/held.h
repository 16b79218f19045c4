/* The ids of the tasks this process holds: fetched into its in-flight hash and not yet recorded
 * as done there (or fetched by a call whose reply has not come). After a failover the new
 * master's copy of that hash may name tasks whose completion reached only the old master (the
 * replication is asynchronous); the reporter puts back those this set does not hold, so that they
 * run again rather than wait for a restart. At-least-once delivery only; otherwise every call is a
 * no-op. Thread-safe. */
#ifndef QWORKER_HELD_H
#define QWORKER_HELD_H

#include <stdbool.h>

void held_enable(void);
/* ids: TASK_ID_LEN hex digits each (task_make_id). */
void held_add(const char *id);
void held_del(const char *id);
bool held_has(const char *id);
/* How many are held (for tests). */
unsigned long held_count(void);

#endif
