/* chain_lib.c — the frame-pointer-less half of the call chain (built -O2 -g -fomit-frame-pointer
 * -fno-optimize-sibling-calls as libbenchchain.so). A frame-pointer walk sees none of these
 * frames (rbp still holds the executable's frame); a CFI unwinder sees all four.
 * `noipa` = noinline + noclone + no identical-code folding, so every level is a real frame. */
#include <stdlib.h>
#include "chain.h"

#define NOIPA __attribute__((noipa))
#define BARRIER() __asm__ volatile("" ::: "memory") /* nothing after a call is a tail call */

NOIPA void lib_step(churn_op *op)
{
    free(op->ring[op->slot]);
    char *p = malloc(op->size);
    if (p != NULL)
        p[0] = (char)op->size; /* touch it, as a program would */
    op->ring[op->slot] = p;
}

NOIPA static void lib_level4(churn_op *op) { lib_step(op); BARRIER(); }
NOIPA static void lib_level3(churn_op *op) { lib_level4(op); BARRIER(); }
NOIPA static void lib_level2(churn_op *op) { lib_level3(op); BARRIER(); }
NOIPA void lib_chain_entry(churn_op *op) { lib_level2(op); BARRIER(); }
