/*
 * lease.c — key names and the value format of a lease. Version 1 value:
 *   "1|<granted unix seconds>|<service>|<user>"
 * The user comes last so it needs no escaping: everything after the third '|' is the
 * user. Service names are restricted to [a-z0-9-] so they can never contain '|'.
 * And the revocation records "<prefix>revoked:<subject>" and "<prefix>revoked-user:<user>",
 * whose version 1 value "1|<revoked unix milliseconds>" says when the last revoke was.
 */
#include "popbsmtp/lease.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *pbs_lease_subject(const pbs_addr *client, unsigned ipv4_bits, unsigned ipv6_bits,
			      char out[PBS_ADDR_STRLEN])
{
	unsigned bits = client->family == AF_INET ? ipv4_bits : ipv6_bits;
	pbs_addr net = *client;
	size_t len;

	pbs_addr_mask(&net, bits);
	pbs_addr_format(&net, out);
	if (bits < pbs_addr_width(&net)) {
		len = strlen(out);
		snprintf(out + len, PBS_ADDR_STRLEN - len, "/%u", bits);
	}
	return out;
}

int pbs_lease_key(const char *prefix, const char *subject, char out[PBS_KEY_MAX])
{
	/* Refused, not truncated: a cut key would name another lease. */
	int n = snprintf(out, PBS_KEY_MAX, "%slease:%s", prefix, subject);

	return (n < 0 || n >= PBS_KEY_MAX) ? -1 : 0;
}

/* "<prefix><kind><name>" into OUT; refused, not truncated. Returns 0 or -1. */
static int lease_key_of(const char *prefix, const char *kind, const char *name,
			char out[PBS_KEY_MAX])
{
	int n = snprintf(out, PBS_KEY_MAX, "%s%s%s", prefix, kind, name);

	return (n < 0 || n >= PBS_KEY_MAX) ? -1 : 0;
}

int pbs_lease_revoked_key(const char *prefix, const char *subject, char out[PBS_KEY_MAX])
{
	return lease_key_of(prefix, "revoked:", subject, out);
}

int pbs_lease_revoked_user_key(const char *prefix, const char *user, char out[PBS_KEY_MAX])
{
	return lease_key_of(prefix, "revoked-user:", user, out);
}

size_t pbs_lease_revocation_encode(long long revoked_ms, char out[PBS_REVOCATION_MAX])
{
	return (size_t)snprintf(out, PBS_REVOCATION_MAX, "%d|%lld", PBS_LEASE_VERSION, revoked_ms);
}

int pbs_lease_revocation_ttl(int lease_ttl)
{
	return lease_ttl > 43200 ? 2 * lease_ttl : 86400;
}

const char *pbs_lease_user_problem(const char *user)
{
	size_t len;
	const unsigned char *p;

	if (user == NULL || user[0] == '\0')
		return "empty user name";
	len = strlen(user);
	if (len > PBS_USER_MAX)
		return "user name longer than 256 bytes";
	for (p = (const unsigned char *)user; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			return "user name holds control characters";
	return NULL;
}

const char *pbs_lease_service_problem(const char *service)
{
	const char *p;

	if (strlen(service) > PBS_SERVICE_MAX)
		return "service name longer than 32 bytes";
	for (p = service; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
			return "service name may hold only a-z, 0-9 and '-'";
	return NULL;
}

const char *pbs_lease_make(pbs_lease *lease, const char *user, const char *service,
			   long long granted)
{
	const char *problem = pbs_lease_user_problem(user);

	if (problem == NULL)
		problem = pbs_lease_service_problem(service);
	if (problem != NULL)
		return problem;
	strcpy(lease->user, user);
	strcpy(lease->service, service);
	lease->granted = granted;
	return NULL;
}

size_t pbs_lease_encode(const pbs_lease *lease, char out[PBS_LEASE_VALUE_MAX])
{
	int n = snprintf(out, PBS_LEASE_VALUE_MAX, "%d|%lld|%s|%s", PBS_LEASE_VERSION,
			 lease->granted, lease->service, lease->user);
	return (size_t)n;
}

/* Parse the decimal field at *P up to '|', advancing past it. Returns 0 or -1. */
static int lease_number(const char **p, const char *end, long long *value)
{
	char digits[24];
	const char *bar = memchr(*p, '|', (size_t)(end - *p));
	size_t len = bar ? (size_t)(bar - *p) : 0;
	char *stop;

	if (bar == NULL || len == 0 || len >= sizeof digits || **p < '0' || **p > '9')
		return -1;
	memcpy(digits, *p, len);
	digits[len] = '\0';
	errno = 0;
	*value = strtoll(digits, &stop, 10);
	if (errno != 0 || *stop != '\0')
		return -1;
	*p = bar + 1;
	return 0;
}

int pbs_lease_revocation_decode(const char *value, size_t len, long long *revoked_ms)
{
	char copy[PBS_REVOCATION_MAX + 1];
	const char *p = copy;
	long long version;

	/* Parsed as "<version>|<ms>|", the form lease_number() reads. */
	if (len + 1 >= sizeof copy || memchr(value, '\0', len) != NULL)
		return -1;
	memcpy(copy, value, len);
	copy[len] = '|';
	if (lease_number(&p, copy + len + 1, &version) != 0 || version != PBS_LEASE_VERSION ||
	    lease_number(&p, copy + len + 1, revoked_ms) != 0 || p != copy + len + 1)
		return -1;
	return 0;
}

int pbs_lease_decode(const char *value, size_t len, pbs_lease *lease)
{
	const char *p = value, *end = value + len, *bar;
	long long version;
	char user[PBS_USER_MAX + 1], service[PBS_SERVICE_MAX + 1];
	size_t n;

	/* A NUL anywhere would cut a field short when it is later used as a C string. */
	if (memchr(value, '\0', len) != NULL)
		return -1;
	if (lease_number(&p, end, &version) != 0 || version != PBS_LEASE_VERSION)
		return -1;
	/* Digits only, so never negative; a time no one can show is no grant time. */
	if (lease_number(&p, end, &lease->granted) != 0 || lease->granted > PBS_LEASE_GRANTED_MAX)
		return -1;
	bar = memchr(p, '|', (size_t)(end - p));
	if (bar == NULL || (size_t)(bar - p) > PBS_SERVICE_MAX)
		return -1;
	memcpy(service, p, (size_t)(bar - p));
	service[bar - p] = '\0';
	n = (size_t)(end - bar - 1);
	if (n > PBS_USER_MAX)
		return -1;
	memcpy(user, bar + 1, n);
	user[n] = '\0';
	return pbs_lease_make(lease, user, service, lease->granted) == NULL ? 0 : -1;
}
