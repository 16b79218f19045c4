#include "handler.h"

#include "handler_sleep.h"

const struct handler_ops *handler_ops(enum handler_type type)
{
    switch (type) {
    case HANDLER_SLEEP:
        return &handler_sleep_ops;
    }
    return NULL;
}
