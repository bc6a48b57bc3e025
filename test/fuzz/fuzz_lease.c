/*
 * fuzz_lease.c — libFuzzer target for the lease value decoder in lib/lease.c. The milter
 * decodes whatever it finds under a lease key, and anyone who can write to Redis can
 * put anything there, so the decoder sees hostile bytes. The input is the stored value
 * as Redis returns it (length-counted, not NUL-terminated). Whatever decodes must be a
 * valid lease that re-encodes, without truncation, to a value decoding to the same lease,
 * and encoding is then stable. A broken promise abort()s, which libFuzzer reports.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "popbsmtp/lease.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NAME "fuzz_lease"
#include "fuzz_check.h"

static bool same_lease(const pbs_lease *a, const pbs_lease *b)
{
	return a->granted == b->granted && strcmp(a->user, b->user) == 0 &&
	       strcmp(a->service, b->service) == 0;
}

/* LEASE encodes, the encoding decodes to LEASE, and encoding that gives the same bytes. */
static void check_round_trip(const pbs_lease *lease)
{
	char value[PBS_LEASE_VALUE_MAX], again[PBS_LEASE_VALUE_MAX];
	pbs_lease back;
	size_t n, m;

	n = pbs_lease_encode(lease, value);
	CHECK(n < PBS_LEASE_VALUE_MAX, "encoding of user '%s' truncated (%zu bytes)", lease->user,
	      n);
	CHECK(strlen(value) == n, "encode returned %zu for %zu bytes", n, strlen(value));
	CHECK(pbs_lease_decode(value, n, &back) == 0, "'%s' does not decode", value);
	CHECK(same_lease(lease, &back), "'%s' decodes to another lease", value);
	m = pbs_lease_encode(&back, again);
	CHECK(m == n && memcmp(value, again, n) == 0, "encoding not stable: '%s' then '%s'", value,
	      again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exactly-sized heap copy: ASan catches a read one byte past the value. */
	char *value = malloc(size ? size : 1);
	pbs_lease lease;

	if (value == NULL)
		return 0;
	memcpy(value, data, size);
	memset(&lease, 0x5a, sizeof lease); /* stale bytes must not leak into a result */
	if (pbs_lease_decode(value, size, &lease) == 0) {
		CHECK(memchr(lease.user, '\0', sizeof lease.user) != NULL, "user not terminated");
		CHECK(memchr(lease.service, '\0', sizeof lease.service) != NULL,
		      "service not terminated");
		CHECK(pbs_lease_user_problem(lease.user) == NULL, "decoded user '%s': %s",
		      lease.user, pbs_lease_user_problem(lease.user));
		CHECK(pbs_lease_service_problem(lease.service) == NULL, "decoded service '%s': %s",
		      lease.service, pbs_lease_service_problem(lease.service));
		CHECK(lease.granted >= 0 && lease.granted <= PBS_LEASE_GRANTED_MAX,
		      "grant time %lld out of range", lease.granted);
		check_round_trip(&lease);
	}
	free(value);
	return 0;
}
