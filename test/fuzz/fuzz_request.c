/*
 * fuzz_request.c — libFuzzer target for popbsmtp-policy's request reader
 * (policy/request.c). Whatever reaches the policy socket is parsed there, in whatever
 * pieces read() returns. The input is fed twice: whole, and in pieces whose sizes come
 * from the input itself; both must see the same requests (same count, same problems,
 * same attributes), every kept value must be a terminated string within its buffer, a
 * request with no problem must have its values under their limits, and the reader must
 * always make progress. A broken promise abort()s, which libFuzzer reports.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NAME "fuzz_request"
#include "fuzz_check.h"

#define MAX_SEEN 64

/* What one feeding saw: a fingerprint of each completed request, and whether input ended
 * inside one. */
struct run {
	unsigned long long prints[MAX_SEEN];
	int count;
	bool partial;
};

/* FNV-1a over the bytes of S (up to its NUL) into H. */
static unsigned long long mix(unsigned long long h, const char *s)
{
	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (h ^ 0xff) * 1099511628211ULL;
}

/* FIELD is a NUL-terminated string inside its SIZE bytes. */
static void check_terminated(const char *field, size_t size, const char *name)
{
	CHECK(memchr(field, '\0', size) != NULL, "%s not terminated", name);
}

static unsigned long long fingerprint(const struct pbs_request *r)
{
	unsigned long long h = 14695981039346656037ULL;

#define FIELD(f) (check_terminated(r->f, sizeof r->f, #f), h = mix(h, r->f))
	FIELD(request);
	FIELD(protocol_state);
	FIELD(client_address);
	FIELD(sasl_username);
	FIELD(recipient);
	FIELD(queue_id);
	FIELD(instance);
	FIELD(problem);
#undef FIELD
	return (h ^ r->seen) * 1099511628211ULL;
}

/* Feed DATA in pieces: STEPS (NSTEPS bytes, cycled) give each piece's size, 1..256;
 * NSTEPS 0 feeds everything at once. */
static void feed(const uint8_t *data, size_t size, const uint8_t *steps, size_t nsteps,
		 struct run *out)
{
	static struct pbs_request_parser p;
	size_t off = 0, piece, used, k = 0;
	bool complete;

	out->count = 0;
	pbs_request_begin(&p);
	while (off < size) {
		piece = nsteps == 0 ? size - off : (size_t)steps[k++ % nsteps] + 1;
		if (piece > size - off)
			piece = size - off;
		used = pbs_request_feed(&p, (const char *)data + off, piece, &complete);
		CHECK(used <= piece, "took %zu of %zu", used, piece);
		CHECK(used > 0, "no progress at %zu", off);
		CHECK(complete || used == piece, "stopped early without a request");
		off += used;
		if (!complete)
			continue;
		if (out->count < MAX_SEEN)
			out->prints[out->count] = fingerprint(&p.req);
		out->count++;
		pbs_request_begin(&p);
	}
	out->partial = pbs_request_partial(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run whole, pieces;
	size_t nsteps = size > 0 ? data[0] % 8 : 0;
	int i;

	if (size <= nsteps + 1)
		return 0;
	feed(data + 1 + nsteps, size - 1 - nsteps, NULL, 0, &whole);
	feed(data + 1 + nsteps, size - 1 - nsteps, data + 1, nsteps ? nsteps : 1, &pieces);
	CHECK(whole.count == pieces.count, "%d requests whole, %d in pieces", whole.count,
	      pieces.count);
	CHECK(whole.partial == pieces.partial, "partial differs");
	for (i = 0; i < whole.count && i < MAX_SEEN; i++)
		CHECK(whole.prints[i] == pieces.prints[i], "request %d differs", i);
	return 0;
}
