/* Standard base64 (RFC 4648, with padding), for payloads that are not UTF-8 text. */
#ifndef QWORKER_BASE64_H
#define QWORKER_BASE64_H

#include <stddef.h>

/* Returns a malloc'ed NUL-terminated string, or NULL if out of memory. */
char *base64_encode(const void *data, size_t len);
/* Returns the malloc'ed bytes and their number in len, or NULL if text is not base64. */
void *base64_decode(const char *text, size_t *len);

#endif
