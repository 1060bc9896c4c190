/*
 * libibvi examples - small host utilities the example programs share: a
 * wall clock, the host's own shuffling generator and the --width parser.
 * Nothing here calls libibvi.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef IBVI_EXAMPLES_HOST_H
#define IBVI_EXAMPLES_HOST_H

#include <stdint.h>

/* Seconds on the monotonic clock. */
double host_now_seconds(void);

/* splitmix64: the host's own generator (data order, splits), independent
 * of the library's noise. */
uint64_t host_next_random(uint64_t *state);

/* Fisher-Yates shuffle of order[0..n) with host_next_random. */
void host_shuffle(int64_t *order, int64_t n, uint64_t *state);

/* Parses "256,128" into widths (at most max of them, each in 1..limit);
 * returns their count, or -1 for an empty, malformed or too long list. */
int host_parse_widths(const char *text, int32_t *widths, int max,
                      long limit);

#endif /* IBVI_EXAMPLES_HOST_H */
