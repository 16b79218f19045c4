/* The built-in sleep handler: the payload is a number of seconds, run as a timer. */
#ifndef QWORKER_HANDLER_SLEEP_H
#define QWORKER_HANDLER_SLEEP_H

#include <stddef.h>

#include "handler.h"

extern const struct handler_ops handler_sleep_ops;

/* Parses a plain decimal number of seconds (no sign, exponent, hex, nan or inf) from 0 to max.
 * Returns 0, or -1 with the reason in reason. */
int sleep_parse_seconds(const char *payload, size_t len, double max, double *seconds, char *reason,
                        size_t reasonlen);

#endif
