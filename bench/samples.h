/*
 * samples.h — latency samples for the bench tools: sort them, read percentiles.
 */
#ifndef POPBSMTP_BENCH_SAMPLES_H
#define POPBSMTP_BENCH_SAMPLES_H

#include <stddef.h>
#include <stdint.h>

/* Sort N samples (nanoseconds) in place, smallest first. */
void pbs_samples_sort(uint64_t *v, size_t n);

/* Nearest-rank percentile P (0 < P <= 100) of N sorted samples in nanoseconds, returned
 * in microseconds; 0 when there are none. */
double pbs_samples_pct_us(const uint64_t *v, size_t n, double p);

#endif
