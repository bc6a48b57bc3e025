/*
 * addr.h — client addresses: parse text and socket addresses, unmap IPv4-mapped IPv6
 * and NAT64's 64:ff9b::/96, mask to a prefix, print canonical text (dotted quad,
 * RFC 5952), match CIDR lists.
 * Every program uses these so hook, milter and ctl always agree on what an address is.
 */
#ifndef POPBSMTP_ADDR_H
#define POPBSMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Room for the longest canonical address with "/128" appended, plus NUL. */
#define PBS_ADDR_STRLEN 56

typedef struct pbs_addr {
	int family;              /* AF_INET or AF_INET6 */
	unsigned char bytes[16]; /* network order; IPv4 uses the first 4 */
} pbs_addr;

typedef struct pbs_cidr {
	pbs_addr net;  /* host bits cleared */
	unsigned bits; /* prefix length */
} pbs_cidr;

typedef struct pbs_cidr_list {
	pbs_cidr *items;
	size_t count;
} pbs_cidr_list;

/* Parse IPv4 or IPv6 text, also "[...]" and the MTAs' "IPv6:" form; unmaps IPv4-mapped
 * and NAT64 well-known-prefix (64:ff9b::/96) addresses to IPv4.
 * Returns 0, or -1 for anything else (zone ids, ports, garbage). */
int pbs_addr_parse(const char *text, pbs_addr *out);

/* Take the address of an AF_INET/AF_INET6 socket address (unmapping); -1 for other families. */
int pbs_addr_from_sockaddr(const struct sockaddr *sa, pbs_addr *out);

/* Number of bits in A's family: 32 or 128. */
unsigned pbs_addr_width(const pbs_addr *a);

/* Clear every bit of A after the first BITS (BITS >= width leaves A unchanged). */
void pbs_addr_mask(pbs_addr *a, unsigned bits);

/* Canonical text of A into BUF (PBS_ADDR_STRLEN bytes). Returns BUF. */
const char *pbs_addr_format(const pbs_addr *a, char buf[PBS_ADDR_STRLEN]);

/* Parse "ADDR" or "ADDR/BITS"; host bits are cleared. Returns 0 or -1. */
int pbs_cidr_parse(const char *text, pbs_cidr *out);

/* True when A lies inside network C. */
bool pbs_cidr_contains(const pbs_cidr *c, const pbs_addr *a);

/* True when A lies inside any network of LIST. */
bool pbs_cidr_list_contains(const pbs_cidr_list *list, const pbs_addr *a);

/* Split "host:port" or "[v6addr]:port" into HOST (HOSTLEN bytes) and *PORT (1..65535).
 * Returns 0 or -1. Used for Redis Sentinel nodes. */
int pbs_addr_split_hostport(const char *text, char *host, size_t hostlen, int *port);

#endif
