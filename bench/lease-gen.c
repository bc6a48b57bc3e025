/*
 * lease-gen.c — many leases in Redis's wire protocol, for "redis-cli --pipe" (bench/run's
 * scale benchmark). Each lease is written the way lib/store.c's pbs_store_grant writes one
 * (docs/lease-schema.md):
 *
 *   SET    <prefix>lease:<addr>  "1|<granted>|<service>|<user>"  EX <ttl>
 *   SADD   <prefix>user:<user>   <addr>
 *   EXPIRE <prefix>user:<user>   <ttl>
 *
 * (store.c sends the EXPIRE twice, with NX then GT, inside MULTI/EXEC; the stored result is
 * the same.) Addresses are IPv4, counted up from BASE (default 10.0.0.0) — the subject of an
 * address at the default lease.ipv4_prefix of 32 is the address itself. Lease i belongs to
 * user "user<i / PER_USER>" (with -d, "user<i / PER_USER>@DOMAIN", the way most sites name
 * their users), so every user holds PER_USER consecutive addresses (the last maybe fewer).
 *
 *   lease-gen -n COUNT [-u PER_USER] [-d DOMAIN] [-t TTL] [-p PREFIX] [-a BASE]
 *             [-s SERVICE] [-i | -l] [-H]
 *
 * -i writes only the index commands (SADD, EXPIRE), -l only the leases (SET); by default
 * both. -H writes the index as a hash instead of a set (HSET <prefix>user:<user> <addr> "",
 * then the same EXPIRE): not what popbsmtp stores today, but a proposed format whose memory
 * bench/run measures beside the real one. Output goes to stdout; exit 0, or 1 on a usage
 * error, 2 on a write error.
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
	                " [-a BASE] [-s SERVICE] [-i | -l] [-H]\n");
	return 1;
}

int main(int argc, char **argv)
{
	long long count = -1, per_user = 1, ttl = 1800, i;
	const char *prefix = "popbsmtp:", *base_text = "10.0.0.0", *service = "imap", *domain = NULL;
	int opt, leases = 1, index = 1, hash = 0;
	struct in_addr base;
	char ttls[24], granted[24];

	while ((opt = getopt(argc, argv, "n:u:d:t:p:a:s:ilH")) != -1) {
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
		case 'i':
			leases = 0;
			break;
		case 'l':
			index = 0;
			break;
		case 'H':
			hash = 1;
			break;
		default:
			return usage();
		}
	}
	if (count < 0 || optind != argc || (!leases && !index))
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
		char addr[INET_ADDRSTRLEN], user[300], key[512], ukey[512], value[512];

		inet_ntop(AF_INET, &a, addr, sizeof addr);
		snprintf(user, sizeof user, "user%lld%s%s", i / per_user, domain ? "@" : "",
		         domain ? domain : "");
		snprintf(key, sizeof key, "%slease:%s", prefix, addr);
		snprintf(ukey, sizeof ukey, "%suser:%s", prefix, user);
		snprintf(value, sizeof value, "1|%s|%s|%s", granted, service, user);
		if (leases)
			resp(stdout, 5, (const char *const[]){"SET", key, value, "EX", ttls});
		if (index) {
			if (hash)
				resp(stdout, 4, (const char *const[]){"HSET", ukey, addr, ""});
			else
				resp(stdout, 3, (const char *const[]){"SADD", ukey, addr});
			resp(stdout, 3, (const char *const[]){"EXPIRE", ukey, ttls});
		}
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "lease-gen: write error: %s\n", strerror(errno));
		return 2;
	}
	return 0;
}
