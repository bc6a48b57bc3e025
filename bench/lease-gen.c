/*
 * lease-gen.c — many leases in Redis's wire protocol, for "redis-cli --pipe" (bench/run's
 * scale benchmark). Each lease is written exactly as lib/store.c's pbs_store_grant writes
 * one (docs/lease-schema.md), one command and nothing else:
 *
 *   SET <prefix>lease:<addr> "1|<granted>|<service>|<user>" EX <ttl>
 *
 * Addresses are IPv4, counted up from BASE (default 10.0.0.0) — the subject of an address
 * at the default lease.ipv4_prefix of 32 is the address itself. Lease i belongs to user
 * "user<i / PER_USER>" (with -d, "user<i / PER_USER>@DOMAIN", the way most sites name
 * their users), so every user holds PER_USER consecutive addresses (the last maybe fewer).
 *
 *   lease-gen -n COUNT [-u PER_USER] [-d DOMAIN] [-t TTL] [-p PREFIX] [-a BASE] [-s SERVICE]
 *
 * Output goes to stdout; exit 0, or 1 on a usage error, 2 on a write error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* One command in RESP: *N then $len/arg pairs. */
static void resp(FILE *out, int argc, const char *const *argv)
{
	int i;

	fprintf(out, "*%d\r\n", argc);
	for (i = 0; i < argc; i++)
		fprintf(out, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
}

/* A whole decimal number in [min, max] from S, or -1 after a message. */
static int parse_num(const char *s, long long min, long long max, long long *out)
{
	char *end;

	errno = 0;
	*out = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || *out < min || *out > max) {
		fprintf(stderr, "lease-gen: bad number '%s'\n", s);
		return -1;
	}
	return 0;
}

static int usage(void)
{
	fprintf(stderr, "usage: lease-gen -n COUNT [-u PER_USER] [-d DOMAIN] [-t TTL] [-p PREFIX]"
	                " [-a BASE] [-s SERVICE]\n");
	return 1;
}

int main(int argc, char **argv)
{
	long long count = -1, per_user = 1, ttl = 1800, i;
	const char *prefix = "popbsmtp:", *base_text = "10.0.0.0", *service = "imap", *domain = NULL;
	int opt;
	struct in_addr base;
	char ttls[24], granted[24];

	while ((opt = getopt(argc, argv, "n:u:d:t:p:a:s:")) != -1) {
		switch (opt) {
		case 'n':
			if (parse_num(optarg, 1, 100000000, &count) != 0)
				return 1;
			break;
		case 'u':
			if (parse_num(optarg, 1, 100000000, &per_user) != 0)
				return 1;
			break;
		case 'd':
			domain = optarg;
			break;
		case 't':
			if (parse_num(optarg, 1, 100000000, &ttl) != 0)
				return 1;
			break;
		case 'p':
			prefix = optarg;
			break;
		case 'a':
			base_text = optarg;
			break;
		case 's':
			service = optarg;
			break;
		default:
			return usage();
		}
	}
	if (count < 0 || optind != argc)
		return usage();
	if (inet_pton(AF_INET, base_text, &base) != 1) {
		fprintf(stderr, "lease-gen: -a %s is not an IPv4 address\n", base_text);
		return 1;
	}
	if ((unsigned long long)count > 0xffffffffULL - ntohl(base.s_addr)) {
		fprintf(stderr, "lease-gen: %lld addresses from %s run past 255.255.255.255\n",
		        count, base_text);
		return 1;
	}
	snprintf(ttls, sizeof ttls, "%lld", ttl);
	snprintf(granted, sizeof granted, "%lld", (long long)time(NULL));
	for (i = 0; i < count; i++) {
		struct in_addr a = {htonl(ntohl(base.s_addr) + (uint32_t)i)};
		char addr[INET_ADDRSTRLEN], user[300], key[512], value[512];

		inet_ntop(AF_INET, &a, addr, sizeof addr);
		snprintf(user, sizeof user, "user%lld%s%s", i / per_user, domain ? "@" : "",
		         domain ? domain : "");
		snprintf(key, sizeof key, "%slease:%s", prefix, addr);
		snprintf(value, sizeof value, "1|%s|%s|%s", granted, service, user);
		resp(stdout, 5, (const char *const[]){"SET", key, value, "EX", ttls});
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "lease-gen: write error: %s\n", strerror(errno));
		return 2;
	}
	return 0;
}
