#include "handler.h"

#include "handler_exec.h"
#include "handler_sleep.h"

const struct handler_ops *handler_ops(enum handler_type type)
{
    switch (type) {
    case HANDLER_SLEEP:
        return &handler_sleep_ops;
    case HANDLER_EXEC:
        return &handler_exec_ops;
    }
    return NULL;
}
