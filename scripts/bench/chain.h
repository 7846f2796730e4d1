/* chain.h — the call chain shared by churn.c (executable, built with frame pointers) and
 * chain_lib.c (a shared object built with -fomit-frame-pointer). */
#ifndef BENCH_CHAIN_H
#define BENCH_CHAIN_H
#include <stddef.h>

/* One churn step: free(ring[slot]) then ring[slot] = malloc(size); touches the new block. */
typedef struct churn_op {
    void **ring;
    unsigned slot;
    size_t size;
} churn_op;

/* chain_lib.c: four nested non-inlined frames without frame pointers, then the malloc/free. */
void lib_chain_entry(churn_op *op);

/* chain_lib.c: the step itself at depth 0 (called from the shallow loop). */
void lib_step(churn_op *op);

#endif
