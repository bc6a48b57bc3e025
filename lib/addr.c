/*
 * addr.c — parsing, unmapping, masking and printing client addresses, and CIDR matching.
 * inet_pton/inet_ntop do the text work: glibc's inet_ntop already writes RFC 5952 form
 * (lower case, longest zero run compressed, a single zero group left alone).
 */
#include "popbsmtp/addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const unsigned char v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
/* RFC 6052's well-known NAT64 prefix 64:ff9b::/96. */
static const unsigned char nat64_prefix[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 client; store it as such.
 * So is an address under the well-known NAT64 prefix (64:ff9b::a.b.c.d): a translator
 * shows every IPv4 client it serves there, so masked as IPv6 (a /64) one lease would
 * cover all of them. Network-specific prefixes cannot be told from real IPv6: those go
 * in lease.never (docs/lease-schema.md). */
static void addr_unmap(pbs_addr *a)
{
	if (a->family == AF_INET6 && (memcmp(a->bytes, v4mapped_prefix, 12) == 0 ||
				      memcmp(a->bytes, nat64_prefix, 12) == 0)) {
		memmove(a->bytes, a->bytes + 12, 4);
		memset(a->bytes + 4, 0, 12);
		a->family = AF_INET;
	}
}

/* pbs_addr_parse() without the unmapping. */
static int addr_parse_text(const char *text, pbs_addr *out)
{
	char buf[INET6_ADDRSTRLEN + 2];
	size_t len;

	if (text == NULL)
		return -1;
	/* Postfix and Sendmail macros write IPv6 as "IPv6:2001:db8::1". */
	if (strncasecmp(text, "IPv6:", 5) == 0)
		text += 5;
	len = strlen(text);
	if (len >= 2 && text[0] == '[' && text[len - 1] == ']') {
		text++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof buf)
		return -1;
	memcpy(buf, text, len);
	buf[len] = '\0';
	memset(out, 0, sizeof *out);
	if (inet_pton(AF_INET, buf, out->bytes) == 1) {
		out->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, out->bytes) == 1) {
		out->family = AF_INET6;
		return 0;
	}
	return -1;
}

int pbs_addr_parse(const char *text, pbs_addr *out)
{
	if (addr_parse_text(text, out) != 0)
		return -1;
	addr_unmap(out);
	return 0;
}

int pbs_addr_from_sockaddr(const struct sockaddr *sa, pbs_addr *out)
{
	if (sa == NULL)
		return -1;
	memset(out, 0, sizeof *out);
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
		out->family = AF_INET;
		memcpy(out->bytes, &sin->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
		out->family = AF_INET6;
		memcpy(out->bytes, &sin6->sin6_addr, 16);
		addr_unmap(out);
		return 0;
	}
	return -1;
}

unsigned pbs_addr_width(const pbs_addr *a)
{
	return a->family == AF_INET ? 32 : 128;
}

void pbs_addr_mask(pbs_addr *a, unsigned bits)
{
	unsigned width = pbs_addr_width(a);
	unsigned i;

	if (bits >= width)
		return;
	for (i = bits / 8; i < width / 8; i++) {
		unsigned keep = (i == bits / 8) ? bits % 8 : 0;
		a->bytes[i] &= (unsigned char)(0xff00u >> keep);
	}
}

const char *pbs_addr_format(const pbs_addr *a, char buf[PBS_ADDR_STRLEN])
{
	if (inet_ntop(a->family, a->bytes, buf, PBS_ADDR_STRLEN) == NULL)
		strcpy(buf, "?");
	return buf;
}

int pbs_cidr_parse(const char *text, pbs_cidr *out)
{
	char addr[INET6_ADDRSTRLEN + 2];
	const char *slash = strchr(text, '/');
	size_t len = slash ? (size_t)(slash - text) : strlen(text);
	unsigned long bits;
	char *end;

	if (len == 0 || len >= sizeof addr)
		return -1;
	memcpy(addr, text, len);
	addr[len] = '\0';
	if (strncasecmp(addr, "IPv6:", 5) == 0 || addr_parse_text(addr, &out->net) != 0)
		return -1;
	bits = pbs_addr_width(&out->net);
	if (slash != NULL) {
		if (slash[1] < '0' || slash[1] > '9')
			return -1;
		bits = strtoul(slash + 1, &end, 10);
		if (*end != '\0' || end - slash > 4)
			return -1;
	}
	/* A network wider than NAT64's /96 (a lease subject "64:ff9b::/64" of an IPv6
	 * client outside the /96) stays IPv6: only its addresses outside the /96 can be in
	 * it, as the ones inside are IPv4 clients. */
	if (bits >= 96 || memcmp(out->net.bytes, nat64_prefix, 12) != 0)
		addr_unmap(&out->net);
	if (slash == NULL) {
		bits = pbs_addr_width(&out->net);
	} else {
		/* "::ffff:10.0.0.0/104" (or "64:ff9b::10.0.0.0/104") was unmapped to
		 * 10.0.0.0: shift the length with it. */
		if (out->net.family == AF_INET && strchr(addr, ':') != NULL) {
			if (bits < 96)
				return -1;
			bits -= 96;
		}
		if (bits > pbs_addr_width(&out->net))
			return -1;
	}
	out->bits = (unsigned)bits;
	pbs_addr_mask(&out->net, out->bits);
	return 0;
}

bool pbs_cidr_contains(const pbs_cidr *c, const pbs_addr *a)
{
	pbs_addr masked = *a;

	if (a->family != c->net.family)
		return false;
	pbs_addr_mask(&masked, c->bits);
	return memcmp(masked.bytes, c->net.bytes, sizeof masked.bytes) == 0;
}

bool pbs_cidr_list_contains(const pbs_cidr_list *list, const pbs_addr *a)
{
	size_t i;

	for (i = 0; i < list->count; i++)
		if (pbs_cidr_contains(&list->items[i], a))
			return true;
	return false;
}

int pbs_addr_split_hostport(const char *text, char *host, size_t hostlen, int *port)
{
	const char *colon = strrchr(text, ':'), *start = text, *end = colon;
	unsigned long v;
	char *stop;

	if (colon == NULL || colon[1] == '\0')
		return -1;
	if (text[0] == '[') {
		/* "[2001:db8::1]:26379" */
		if (colon == text || colon[-1] != ']')
			return -1;
		start = text + 1;
		end = colon - 1;
	} else if (memchr(text, ':', (size_t)(colon - text)) != NULL) {
		return -1; /* a bare IPv6 address needs brackets */
	}
	if (end <= start || (size_t)(end - start) >= hostlen)
		return -1;
	v = strtoul(colon + 1, &stop, 10);
	if (*stop != '\0' || colon[1] < '0' || colon[1] > '9' || v < 1 || v > 65535)
		return -1;
	memcpy(host, start, (size_t)(end - start));
	host[end - start] = '\0';
	*port = (int)v;
	return 0;
}
