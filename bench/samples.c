/*
 * samples.c — latency samples for the bench tools: sort them, read percentiles.
 */
#include "samples.h"

#include <stdlib.h>

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

void pbs_samples_sort(uint64_t *v, size_t n)
{
	if (n > 1)
		qsort(v, n, sizeof *v, cmp_u64);
}

double pbs_samples_pct_us(const uint64_t *v, size_t n, double p)
{
	size_t rank;

	if (n == 0)
		return 0.0;
	rank = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)v[rank - 1] / 1000.0;
}
