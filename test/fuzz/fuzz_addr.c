/*
 * fuzz_addr.c — libFuzzer target for lib/addr.c, the one place that knows what a client
 * address is. The input is taken as text (a macro value, a config word, a ctl argument)
 * and fed to every parser; whatever parses must keep the module's promises:
 *   - pbs_addr_format() of a parsed address parses back to the same address, and is
 *     canonical (formatting that again gives the same text);
 *   - no AF_INET6 result is IPv4-mapped or under NAT64's 64:ff9b::/96 (both are
 *     unmapped to AF_INET), but for a network wider than that /96;
 *   - pbs_addr_mask() clears exactly the bits after the prefix and never touches a byte
 *     beyond the family's width;
 *   - a parsed network has its host bits clear, contains its own address, and its text
 *     "NET/BITS" parses back to the same network;
 *   - the lease subject of an address is a network that contains the address;
 *   - pbs_addr_split_hostport() yields a host that fits the buffer and a port 1..65535.
 * A broken promise abort()s, which libFuzzer reports as a crash with the input.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "popbsmtp/addr.h"
#include "popbsmtp/lease.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NAME "fuzz_addr"
#include "fuzz_check.h"

static const unsigned char v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
static const unsigned char nat64_prefix[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

/* Bit I (0 = most significant) of A. */
static int bit(const pbs_addr *a, unsigned i)
{
	return (a->bytes[i / 8] >> (7 - i % 8)) & 1;
}

/* What every parsed address (BITS 128) or network of BITS must look like. */
static void check_shape(const pbs_addr *a, unsigned bits, const char *text)
{
	size_t i;

	CHECK(a->family == AF_INET || a->family == AF_INET6, "'%s': family %d", text, a->family);
	if (a->family == AF_INET) {
		for (i = 4; i < sizeof a->bytes; i++)
			CHECK(a->bytes[i] == 0, "'%s': IPv4 address with byte %zu set", text, i);
	} else {
		CHECK(memcmp(a->bytes, v4mapped_prefix, 12) != 0, "'%s': left IPv4-mapped", text);
		CHECK(bits < 96 || memcmp(a->bytes, nat64_prefix, 12) != 0,
		      "'%s': left under 64:ff9b::/96", text);
	}
}

/* Format A, parse the text back: same address, same text again. */
static void check_format_round_trip(const pbs_addr *a, const char *text)
{
	char buf[PBS_ADDR_STRLEN], again[PBS_ADDR_STRLEN];
	pbs_addr back;

	pbs_addr_format(a, buf);
	CHECK(strlen(buf) < PBS_ADDR_STRLEN, "'%s': formatted text too long", text);
	CHECK(pbs_addr_parse(buf, &back) == 0, "'%s' formats to '%s', which does not parse", text,
	      buf);
	CHECK(back.family == a->family && memcmp(back.bytes, a->bytes, sizeof a->bytes) == 0,
	      "'%s' formats to '%s', which parses to another address", text, buf);
	pbs_addr_format(&back, again);
	CHECK(strcmp(buf, again) == 0, "'%s': format not canonical: '%s' then '%s'", text, buf,
	      again);
}

/* Mask A to every length 0..width+8: prefix bits kept, the rest of the width cleared,
 * the bytes beyond the width untouched, the result inside the network it defines. */
static void check_mask(const pbs_addr *a, const char *text)
{
	unsigned width = pbs_addr_width(a), bits, i;

	CHECK(width == (a->family == AF_INET ? 32u : 128u), "'%s': width %u", text, width);
	for (bits = 0; bits <= width + 8; bits++) {
		pbs_addr m = *a;
		pbs_cidr net;

		pbs_addr_mask(&m, bits);
		CHECK(m.family == a->family, "'%s'/%u: mask changed the family", text, bits);
		for (i = 0; i < width; i++)
			CHECK(bit(&m, i) == (i < bits ? bit(a, i) : 0), "'%s'/%u: bit %u wrong",
			      text, bits, i);
		CHECK(memcmp(m.bytes + width / 8, a->bytes + width / 8, 16 - width / 8) == 0,
		      "'%s'/%u: mask touched bytes beyond the width", text, bits);
		net.net = m;
		net.bits = bits > width ? width : bits;
		CHECK(pbs_cidr_contains(&net, a), "'%s'/%u: not inside its own network", text,
		      bits);
	}
}

/* Socket address of A: parses back to A through pbs_addr_from_sockaddr. */
static void check_sockaddr(const pbs_addr *a, const char *text)
{
	struct sockaddr_storage ss;
	pbs_addr back;

	memset(&ss, 0, sizeof ss);
	if (a->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)(void *)&ss;
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, a->bytes, 4);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)&ss;
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, a->bytes, 16);
	}
	CHECK(pbs_addr_from_sockaddr((struct sockaddr *)&ss, &back) == 0, "'%s': sockaddr", text);
	CHECK(back.family == a->family && memcmp(back.bytes, a->bytes, sizeof a->bytes) == 0,
	      "'%s': sockaddr gives another address", text);
}

/* The lease subject for A at prefix BITS: a network (or bare address) that holds A. */
static void check_subject(const pbs_addr *a, unsigned bits, const char *text)
{
	char subject[PBS_ADDR_STRLEN];
	pbs_cidr net;

	pbs_lease_subject(a, bits, bits, subject);
	CHECK(pbs_cidr_parse(subject, &net) == 0, "'%s'/%u: subject '%s' does not parse", text,
	      bits, subject);
	CHECK(pbs_cidr_contains(&net, a), "'%s'/%u: subject '%s' does not contain it", text, bits,
	      subject);
	CHECK(net.bits == (bits < pbs_addr_width(a) ? bits : pbs_addr_width(a)),
	      "'%s'/%u: subject '%s' has %u bits", text, bits, subject, net.bits);
}

/* A parsed network: host bits clear, holds itself, "NET/BITS" parses to the same. */
static void check_cidr(const pbs_cidr *c, const char *text)
{
	char buf[PBS_ADDR_STRLEN], net[PBS_ADDR_STRLEN];
	pbs_addr masked = c->net;
	pbs_cidr back;

	check_shape(&c->net, c->bits, text);
	CHECK(c->bits <= pbs_addr_width(&c->net), "'%s': %u bits", text, c->bits);
	pbs_addr_mask(&masked, c->bits);
	CHECK(memcmp(masked.bytes, c->net.bytes, sizeof masked.bytes) == 0,
	      "'%s': host bits left set", text);
	CHECK(pbs_cidr_contains(c, &c->net), "'%s': does not contain its own address", text);
	snprintf(buf, sizeof buf, "%s/%u", pbs_addr_format(&c->net, net), c->bits);
	CHECK(pbs_cidr_parse(buf, &back) == 0, "'%s' prints as '%s', which does not parse", text,
	      buf);
	CHECK(back.bits == c->bits && back.net.family == c->net.family &&
	          memcmp(back.net.bytes, c->net.bytes, sizeof back.net.bytes) == 0,
	      "'%s' prints as '%s', which parses to another network", text, buf);
}

/* HOST:PORT splitting, with a host buffer as small as the input allows. */
static void check_hostport(const char *text, size_t len)
{
	char small[8], *host = malloc(len + 1);
	int port = 0;

	if (host == NULL)
		return;
	if (pbs_addr_split_hostport(text, host, len + 1, &port) == 0) {
		size_t hlen = strlen(host);
		CHECK(hlen > 0 && hlen <= len, "'%s': host of length %zu", text, hlen);
		CHECK(port >= 1 && port <= 65535, "'%s': port %d", text, port);
		CHECK(strstr(text, host) != NULL, "'%s': host '%s' not from the text", text, host);
		CHECK(text[0] == '[' || strchr(host, ':') == NULL,
		      "'%s': unbracketed host '%s' holds ':'", text, host);
	}
	/* The buffer bound is honoured: ASan sees any write past SMALL. */
	if (pbs_addr_split_hostport(text, small, sizeof small, &port) == 0)
		CHECK(strlen(small) < sizeof small, "'%s': host overflows", text);
	free(host);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exactly-sized copy, so ASan catches any read past the terminating NUL. */
	char *text = malloc(size + 1);
	pbs_addr a;
	pbs_cidr c;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (pbs_addr_parse(text, &a) == 0) {
		check_shape(&a, 128, text);
		check_format_round_trip(&a, text);
		check_mask(&a, text);
		check_sockaddr(&a, text);
		check_subject(&a, size > 0 ? (unsigned char)data[0] : 0, text);
		check_subject(&a, pbs_addr_width(&a), text);
	}
	if (pbs_cidr_parse(text, &c) == 0)
		check_cidr(&c, text);
	check_hostport(text, strlen(text));
	free(text);
	return 0;
}
