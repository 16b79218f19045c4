#include "jsonmem.h"

#include <stdlib.h>

#include <jansson.h>

static __thread size_t allocated;

static void *counted_malloc(size_t n)
{
    allocated += n;
    return malloc(n);
}

void jsonmem_init(void)
{
    json_set_alloc_funcs(counted_malloc, free);
}

size_t jsonmem_allocated(void)
{
    return allocated;
}
