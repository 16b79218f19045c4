/* What jansson allocates, counted per thread: a 1 MiB envelope of small JSON values takes about
 * twenty times that once parsed, and the memory budget (capacity.h) must see it. */
#ifndef QWORKER_JSONMEM_H
#define QWORKER_JSONMEM_H

#include <stddef.h>

/* Routes jansson's allocations through the counter; once, before any thread uses jansson. */
void jsonmem_init(void);
/* Bytes jansson has allocated on this thread so far (never decreases: frees happen on other
 * threads, so only the difference across one call means something). */
size_t jsonmem_allocated(void);

#endif
