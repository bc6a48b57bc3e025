/*
 * test_addr.c — client addresses as every popbsmtp program sees them: parsing the text
 * forms the MTAs and Dovecot hand us, socket addresses, unmapping IPv4-mapped IPv6,
 * RFC 5952 output, prefix masking and CIDR matching. Each test is a table; every row
 * that fails is printed before the test fails, so one run shows all broken rows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "popbsmtp/addr.h"

#include "table.h"

/* A 300-character string of C, built once. */
static const char *long_string(char c)
{
	static char buf[301];

	memset(buf, c, 300);
	buf[300] = '\0';
	return buf;
}

struct parse_row {
	const char *text;
	int family; /* 0: must be rejected */
	const char *canonical;
};

static const struct parse_row parse_rows[] = {
    /* IPv4 */
    {"192.0.2.1", AF_INET, "192.0.2.1"},
    {"0.0.0.0", AF_INET, "0.0.0.0"},
    {"255.255.255.255", AF_INET, "255.255.255.255"},
    {"[192.0.2.1]", AF_INET, "192.0.2.1"},
    /* IPv6, printed in RFC 5952 form */
    {"2001:DB8:0:0:1:0:0:1", AF_INET6, "2001:db8::1:0:0:1"},
    {"2001:db8:0:1:1:1:1:1", AF_INET6, "2001:db8:0:1:1:1:1:1"},
    {"2001:0db8:0000:0000:0000:0000:0000:0001", AF_INET6, "2001:db8::1"},
    {"2001:db8:0:0:1:0:0:0", AF_INET6, "2001:db8:0:0:1::"},
    {"2001:0:0:1:0:0:1:1", AF_INET6, "2001::1:0:0:1:1"},
    {"1:0:0:1:0:0:0:1", AF_INET6, "1:0:0:1::1"},
    {"FE80::ABCD", AF_INET6, "fe80::abcd"},
    {"::", AF_INET6, "::"},
    {"::1", AF_INET6, "::1"},
    {"1::", AF_INET6, "1::"},
    /* the MTAs' and SMTP's wrappings */
    {"IPv6:2001:db8::1", AF_INET6, "2001:db8::1"},
    {"ipv6:2001:DB8::1", AF_INET6, "2001:db8::1"},
    {"[2001:db8::1]", AF_INET6, "2001:db8::1"},
    {"[::1]", AF_INET6, "::1"},
    /* IPv4-mapped IPv6 is the IPv4 client */
    {"::ffff:192.0.2.1", AF_INET, "192.0.2.1"},
    {"::FFFF:c000:0201", AF_INET, "192.0.2.1"},
    {"0:0:0:0:0:ffff:192.0.2.1", AF_INET, "192.0.2.1"},
    {"IPv6:::ffff:192.0.2.1", AF_INET, "192.0.2.1"},
    {"[::ffff:192.0.2.1]", AF_INET, "192.0.2.1"},
    /* so is an address under NAT64's well-known prefix 64:ff9b::/96 (RFC 6052): as
     * IPv6 its /64 lease would cover every IPv4 client behind the translator */
    {"64:ff9b::192.0.2.1", AF_INET, "192.0.2.1"},
    {"64:FF9B::c633:6409", AF_INET, "198.51.100.9"},
    {"64:ff9b:0:0:0:0:c633:6409", AF_INET, "198.51.100.9"},
    {"IPv6:64:ff9b::c633:6409", AF_INET, "198.51.100.9"},
    {"[64:ff9b::c633:6409]", AF_INET, "198.51.100.9"},
    {"64:ff9b::", AF_INET, "0.0.0.0"},
    /* ... but other IPv6 with an IPv4 tail is not: the local-use 64:ff9b:1::/48
     * (RFC 8215), network-specific prefixes, and anything beside the /96 */
    {"64:ff9b:1::c633:6409", AF_INET6, "64:ff9b:1::c633:6409"},
    {"64:ff9b::1:c633:6409", AF_INET6, "64:ff9b::1:c633:6409"},
    {"64:ff9a::c633:6409", AF_INET6, "64:ff9a::c633:6409"},
    {"2001:db8:64::c633:6409", AF_INET6, "2001:db8:64::c633:6409"},
    {"::ffff:0:c000:201", AF_INET6, "::ffff:0:c000:201"},
    /* rejected */
    {"", 0, NULL},
    {"1.2.3", 0, NULL},
    {"1.2.3.4.5", 0, NULL},
    {"01.2.3.4", 0, NULL},
    {"1.2.3.04", 0, NULL},
    {"256.1.1.1", 0, NULL},
    {"0x7f.0.0.1", 0, NULL},
    {"::1%eth0", 0, NULL},
    {"fe80::1%1", 0, NULL},
    {"[fe80::1%eth0]", 0, NULL},
    {"192.0.2.1:25", 0, NULL},
    {"[192.0.2.1]:25", 0, NULL},
    {"[2001:db8::1]:25", 0, NULL},
    {"2001:db8::1.25", 0, NULL},
    {" 192.0.2.1", 0, NULL},
    {"192.0.2.1 ", 0, NULL},
    {"192.0.2.1\n", 0, NULL},
    {"192. 0.2.1", 0, NULL},
    {"2001:db8::1::2", 0, NULL},
    {"2001:db8:::1", 0, NULL},
    {"12345::1", 0, NULL},
    {"g::1", 0, NULL},
    {"1:2:3:4:5:6:7:8:9", 0, NULL},
    {"[192.0.2.1", 0, NULL},
    {"192.0.2.1]", 0, NULL},
    {"[]", 0, NULL},
    {"[", 0, NULL},
    {"IPv6:", 0, NULL},
    {"IPv6", 0, NULL},
    {"localhost", 0, NULL},
    {"192.0.2.1/32", 0, NULL},
};

static void test_parse_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof parse_rows / sizeof parse_rows[0]; i++) {
		const struct parse_row *r = &parse_rows[i];
		char buf[PBS_ADDR_STRLEN];
		pbs_addr a;
		int rc;

		memset(&a, 0xa5, sizeof a);
		rc = pbs_addr_parse(r->text, &a);
		if (r->family == 0) {
			ROW_CHECK(rc == -1, "parse '%s': accepted, expected rejection", r->text);
			continue;
		}
		ROW_CHECK(rc == 0, "parse '%s': rejected", r->text);
		if (rc != 0)
			continue;
		ROW_CHECK(a.family == r->family, "parse '%s': family %d, expected %d", r->text,
		          a.family, r->family);
		pbs_addr_format(&a, buf);
		ROW_CHECK(strcmp(buf, r->canonical) == 0, "format '%s': got '%s', expected '%s'",
		          r->text, buf, r->canonical);
	}
	table_done("parse");
}

/* Text that is too long, in several shapes, is refused without overrunning anything. */
static void test_parse_long_and_null(void **state)
{
	char text[400];
	pbs_addr a;

	(void)state;
	assert_int_equal(pbs_addr_parse(NULL, &a), -1);
	assert_int_equal(pbs_addr_parse(long_string('1'), &a), -1);
	assert_int_equal(pbs_addr_parse(long_string(':'), &a), -1);
	snprintf(text, sizeof text, "[%s]", long_string('f'));
	assert_int_equal(pbs_addr_parse(text, &a), -1);
	snprintf(text, sizeof text, "IPv6:%s", long_string('0'));
	assert_int_equal(pbs_addr_parse(text, &a), -1);
	/* The longest valid IPv6 text still fits, bare and wrapped. */
	assert_int_equal(pbs_addr_parse("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", &a), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_int_equal(pbs_addr_parse("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]", &a), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_int_equal(pbs_addr_parse("IPv6:ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", &a),
	                 0);
	assert_int_equal(a.family, AF_INET6);
}

/* The width of each family, which masking and lease subjects rely on. */
static void test_width(void **state)
{
	pbs_addr a;

	(void)state;
	assert_int_equal(pbs_addr_parse("192.0.2.1", &a), 0);
	assert_int_equal(pbs_addr_width(&a), 32);
	assert_int_equal(pbs_addr_parse("2001:db8::1", &a), 0);
	assert_int_equal(pbs_addr_width(&a), 128);
	assert_int_equal(pbs_addr_parse("::ffff:192.0.2.1", &a), 0);
	assert_int_equal(pbs_addr_width(&a), 32);
}

static void test_from_sockaddr(void **state)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct sockaddr_un sun;
	char buf[PBS_ADDR_STRLEN];
	pbs_addr a;

	(void)state;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons(25);
	assert_int_equal(inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr), 1);
	assert_int_equal(pbs_addr_from_sockaddr((struct sockaddr *)&sin, &a), 0);
	assert_int_equal(a.family, AF_INET);
	assert_string_equal(pbs_addr_format(&a, buf), "192.0.2.1");

	memset(&sin6, 0, sizeof sin6);
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons(25);
	assert_int_equal(inet_pton(AF_INET6, "2001:DB8:0:0:1:0:0:1", &sin6.sin6_addr), 1);
	assert_int_equal(pbs_addr_from_sockaddr((struct sockaddr *)&sin6, &a), 0);
	assert_int_equal(a.family, AF_INET6);
	assert_string_equal(pbs_addr_format(&a, buf), "2001:db8::1:0:0:1");

	/* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d. */
	assert_int_equal(inet_pton(AF_INET6, "::ffff:192.0.2.1", &sin6.sin6_addr), 1);
	assert_int_equal(pbs_addr_from_sockaddr((struct sockaddr *)&sin6, &a), 0);
	assert_int_equal(a.family, AF_INET);
	assert_string_equal(pbs_addr_format(&a, buf), "192.0.2.1");

	/* A NAT64 translator's clients arrive as 64:ff9b::a.b.c.d: the IPv4 client. */
	assert_int_equal(inet_pton(AF_INET6, "64:ff9b::c633:6409", &sin6.sin6_addr), 1);
	assert_int_equal(pbs_addr_from_sockaddr((struct sockaddr *)&sin6, &a), 0);
	assert_int_equal(a.family, AF_INET);
	assert_string_equal(pbs_addr_format(&a, buf), "198.51.100.9");

	/* The zone of a link-local address is not part of the address. */
	assert_int_equal(inet_pton(AF_INET6, "fe80::1", &sin6.sin6_addr), 1);
	sin6.sin6_scope_id = 2;
	assert_int_equal(pbs_addr_from_sockaddr((struct sockaddr *)&sin6, &a), 0);
	assert_string_equal(pbs_addr_format(&a, buf), "fe80::1");

	/* Same address, same bytes, whichever way it arrived. */
	{
		pbs_addr b;
		assert_int_equal(inet_pton(AF_INET6, "::ffff:192.0.2.1", &sin6.sin6_addr), 1);
		assert_int_equal(pbs_addr_from_sockaddr((struct sockaddr *)&sin6, &a), 0);
		assert_int_equal(pbs_addr_parse("192.0.2.1", &b), 0);
		assert_memory_equal(&a, &b, sizeof a);
	}

	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	assert_int_equal(pbs_addr_from_sockaddr((struct sockaddr *)&sun, &a), -1);
	assert_int_equal(pbs_addr_from_sockaddr(NULL, &a), -1);
}

struct mask_row {
	const char *addr;
	unsigned bits;
	const char *masked;
};

static const struct mask_row mask_rows[] = {
    {"255.255.255.255", 0, "0.0.0.0"},
    {"255.255.255.255", 1, "128.0.0.0"},
    {"255.255.255.255", 7, "254.0.0.0"},
    {"255.255.255.255", 8, "255.0.0.0"},
    {"255.255.255.255", 24, "255.255.255.0"},
    {"255.255.255.255", 31, "255.255.255.254"},
    {"255.255.255.255", 32, "255.255.255.255"},
    {"255.255.255.255", 33, "255.255.255.255"},
    {"192.0.2.77", 24, "192.0.2.0"},
    {"192.0.2.77", 25, "192.0.2.0"},
    {"192.0.2.200", 25, "192.0.2.128"},
    {"10.200.3.4", 12, "10.192.0.0"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0, "::"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1, "8000::"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 7, "fe00::"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 8, "ff00::"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 24, "ffff:ff00::"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 31, "ffff:fffe::"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 32, "ffff:ffff::"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 48, "ffff:ffff:ffff::"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 64, "ffff:ffff:ffff:ffff::"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 127, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 128, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 200, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
    {"2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::"},
    {"2001:db8:1:2ff:3:4:5:6", 56, "2001:db8:1:200::"},
    {"2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::"},
    /* An unmapped client is masked as IPv4: 24 bits, not 24 of 128. */
    {"::ffff:192.0.2.77", 24, "192.0.2.0"},
    /* A NAT64 client too: a lease's /64 would have been 64:ff9b::, every IPv4 client. */
    {"64:ff9b::c633:6409", 64, "198.51.100.9"},
    {"64:ff9b::c633:6409", 24, "198.51.100.0"},
};

static void test_mask_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof mask_rows / sizeof mask_rows[0]; i++) {
		const struct mask_row *r = &mask_rows[i];
		char buf[PBS_ADDR_STRLEN];
		pbs_addr a;

		assert_int_equal(pbs_addr_parse(r->addr, &a), 0);
		pbs_addr_mask(&a, r->bits);
		pbs_addr_format(&a, buf);
		ROW_CHECK(strcmp(buf, r->masked) == 0, "mask %s/%u: got '%s', expected '%s'",
		          r->addr, r->bits, buf, r->masked);
	}
	table_done("mask");
}

struct cidr_row {
	const char *text;
	const char *net; /* NULL: must be rejected */
	unsigned bits;
	int family;
};

static const struct cidr_row cidr_rows[] = {
    {"10.0.0.0/8", "10.0.0.0", 8, AF_INET},
    {"10.1.2.3/8", "10.0.0.0", 8, AF_INET}, /* host bits set: cleared */
    {"192.0.2.7", "192.0.2.7", 32, AF_INET},
    {"192.0.2.7/32", "192.0.2.7", 32, AF_INET},
    {"0.0.0.0/0", "0.0.0.0", 0, AF_INET},
    {"192.0.2.255/0", "0.0.0.0", 0, AF_INET},
    {"2001:db8::/32", "2001:db8::", 32, AF_INET6},
    {"2001:DB8:1:2:3::/64", "2001:db8:1:2::", 64, AF_INET6},
    {"2001:db8::1", "2001:db8::1", 128, AF_INET6},
    {"::1/128", "::1", 128, AF_INET6},
    {"::/0", "::", 0, AF_INET6},
    {"::ffff:10.0.0.0/104", "10.0.0.0", 8, AF_INET},
    {"::ffff:10.1.2.3/120", "10.1.2.0", 24, AF_INET},
    {"::ffff:10.0.0.0/128", "10.0.0.0", 32, AF_INET},
    {"::ffff:192.0.2.1", "192.0.2.1", 32, AF_INET},
    {"::ffff:10.0.0.0/95", NULL, 0, 0},
    /* NAT64's well-known prefix likewise: "64:ff9b::/96" is every IPv4 address */
    {"64:ff9b::198.51.100.0/120", "198.51.100.0", 24, AF_INET},
    {"64:ff9b::/96", "0.0.0.0", 0, AF_INET},
    /* ... but a wider network is IPv6, so that a lease subject such as "64:ff9b::/64",
     * of an IPv6 client outside the /96, reads back as itself */
    {"64:ff9b::/64", "64:ff9b::", 64, AF_INET6},
    {"64:ff9b::/95", "64:ff9b::", 95, AF_INET6},
    {"64:ff9b::c633:6409/95", "64:ff9b::", 95, AF_INET6},
    {"::ffff:0:0/64", NULL, 0, 0},
    {"64:ff9b:1::/48", "64:ff9b:1::", 48, AF_INET6},
    {"::ffff:10.0.0.0/129", NULL, 0, 0},
    {"10.0.0.0/33", NULL, 0, 0},
    {"2001:db8::/129", NULL, 0, 0},
    {"10.0.0.0/-1", NULL, 0, 0},
    {"10.0.0.0/", NULL, 0, 0},
    {"10.0.0.0/abc", NULL, 0, 0},
    {"10.0.0.0/8abc", NULL, 0, 0},
    {"10.0.0.0/0032", NULL, 0, 0},
    {"2001:db8::/00064", NULL, 0, 0},
    {"10.0.0.0/+8", NULL, 0, 0},
    {"10.0.0.0/ 8", NULL, 0, 0},
    {"10.0.0.0/8 ", NULL, 0, 0},
    {"10.0.0.0 /8", NULL, 0, 0},
    {"10.0.0.0/8/8", NULL, 0, 0},
    {"10.0.0.0/0x8", NULL, 0, 0},
    {"10.0.0.0/4294967304", NULL, 0, 0},
    {"10.0.0/8", NULL, 0, 0},
    {"/8", NULL, 0, 0},
    {"", NULL, 0, 0},
    {"IPv6:2001:db8::/32", NULL, 0, 0},
    {"fe80::%eth0/64", NULL, 0, 0},
    {"example.org/24", NULL, 0, 0},
};

static void test_cidr_parse_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof cidr_rows / sizeof cidr_rows[0]; i++) {
		const struct cidr_row *r = &cidr_rows[i];
		char buf[PBS_ADDR_STRLEN];
		pbs_cidr c;
		int rc = pbs_cidr_parse(r->text, &c);

		if (r->net == NULL) {
			ROW_CHECK(rc == -1, "cidr '%s': accepted, expected rejection", r->text);
			continue;
		}
		ROW_CHECK(rc == 0, "cidr '%s': rejected", r->text);
		if (rc != 0)
			continue;
		pbs_addr_format(&c.net, buf);
		ROW_CHECK(strcmp(buf, r->net) == 0 && c.bits == r->bits &&
		              c.net.family == r->family,
		          "cidr '%s': got %s/%u (family %d), expected %s/%u (family %d)", r->text,
		          buf, c.bits, c.net.family, r->net, r->bits, r->family);
	}
	{
		pbs_cidr c;
		assert_int_equal(pbs_cidr_parse(long_string('1'), &c), -1);
	}
	table_done("cidr_parse");
}

struct contains_row {
	const char *cidr;
	const char *addr;
	bool inside;
};

static const struct contains_row contains_rows[] = {
    {"10.0.0.0/8", "10.0.0.0", true},
    {"10.0.0.0/8", "10.255.255.255", true},
    {"10.0.0.0/8", "11.0.0.0", false},
    {"10.0.0.0/8", "9.255.255.255", false},
    {"192.0.2.0/31", "192.0.2.1", true},
    {"192.0.2.0/31", "192.0.2.2", false},
    {"192.0.2.7/32", "192.0.2.7", true},
    {"192.0.2.7/32", "192.0.2.6", false},
    {"0.0.0.0/0", "203.0.113.9", true},
    {"2001:db8::/32", "2001:db8:ffff::1", true},
    {"2001:db8::/32", "2001:db9::", false},
    {"2001:db8:1:2::/64", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
    {"2001:db8:1:2::/64", "2001:db8:1:3::", false},
    {"::1/128", "::1", true},
    {"::1/128", "::2", false},
    {"::/0", "2001:db8::1", true},
    /* ::ffff:10.0.0.0/104 is 10.0.0.0/8, whichever way the client is written */
    {"::ffff:10.0.0.0/104", "10.9.9.9", true},
    {"::ffff:10.0.0.0/104", "::ffff:10.9.9.9", true},
    {"::ffff:10.0.0.0/104", "11.0.0.1", false},
    {"10.0.0.0/8", "::ffff:10.1.1.1", true},
    /* a family mismatch never matches */
    {"0.0.0.0/0", "::1", false},
    {"0.0.0.0/0", "2001:db8::1", false},
    {"0.0.0.0/0", "::", false},
    {"::/0", "192.0.2.1", false},
    {"::/0", "0.0.0.0", false},
    {"::/0", "::ffff:192.0.2.1", false},
    {"127.0.0.0/8", "::1", false},
    {"::1/128", "127.0.0.1", false},
    {"::/96", "0.0.0.1", false},
};

static void test_cidr_contains_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof contains_rows / sizeof contains_rows[0]; i++) {
		const struct contains_row *r = &contains_rows[i];
		pbs_cidr c;
		pbs_addr a;

		assert_int_equal(pbs_cidr_parse(r->cidr, &c), 0);
		assert_int_equal(pbs_addr_parse(r->addr, &a), 0);
		ROW_CHECK(pbs_cidr_contains(&c, &a) == r->inside, "%s contains %s: expected %s",
		          r->cidr, r->addr, r->inside ? "yes" : "no");
	}
	table_done("cidr_contains");
}

static void test_cidr_list_contains(void **state)
{
	pbs_cidr items[3];
	pbs_cidr_list list = {items, 0};
	pbs_cidr_list none = {NULL, 0};
	pbs_addr a;

	(void)state;
	assert_int_equal(pbs_cidr_parse("127.0.0.0/8", &items[0]), 0);
	assert_int_equal(pbs_cidr_parse("::1/128", &items[1]), 0);
	assert_int_equal(pbs_cidr_parse("2001:db8::/32", &items[2]), 0);

	assert_int_equal(pbs_addr_parse("127.0.0.1", &a), 0);
	assert_false(pbs_cidr_list_contains(&none, &a));
	assert_false(pbs_cidr_list_contains(&list, &a)); /* count 0: nothing matches */

	list.count = 3;
	assert_true(pbs_cidr_list_contains(&list, &a));
	assert_int_equal(pbs_addr_parse("::1", &a), 0);
	assert_true(pbs_cidr_list_contains(&list, &a));
	assert_int_equal(pbs_addr_parse("2001:db8:5::9", &a), 0);
	assert_true(pbs_cidr_list_contains(&list, &a)); /* the last item counts too */
	assert_int_equal(pbs_addr_parse("::ffff:127.0.0.2", &a), 0);
	assert_true(pbs_cidr_list_contains(&list, &a));
	assert_int_equal(pbs_addr_parse("128.0.0.1", &a), 0);
	assert_false(pbs_cidr_list_contains(&list, &a));
	assert_int_equal(pbs_addr_parse("::2", &a), 0);
	assert_false(pbs_cidr_list_contains(&list, &a));

	/* Only the first COUNT items are consulted. */
	list.count = 2;
	assert_int_equal(pbs_addr_parse("2001:db8:5::9", &a), 0);
	assert_false(pbs_cidr_list_contains(&list, &a));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_table),
	    cmocka_unit_test(test_parse_long_and_null),
	    cmocka_unit_test(test_width),
	    cmocka_unit_test(test_from_sockaddr),
	    cmocka_unit_test(test_mask_table),
	    cmocka_unit_test(test_cidr_parse_table),
	    cmocka_unit_test(test_cidr_contains_table),
	    cmocka_unit_test(test_cidr_list_contains),
	};

	return cmocka_run_group_tests_name("addr", tests, NULL, NULL);
}
