/*
 * test_sha1.c — lib/sha1.c against FIPS 180 examples and digests of another implementation
 * at every padding boundary (55, 56, 63, 64, 65, 119, 120, 128 bytes): a name Redis does
 * not know only costs a round trip (EVAL follows NOSCRIPT), but a wrong one costs it
 * every time. integration.store compares the scripts' names with Redis' SCRIPT LOAD.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "popbsmtp/sha1.h"

static void check(const void *data, size_t len, const char *want)
{
	char out[PBS_SHA1_HEX_MAX];

	memset(out, 'x', sizeof out);
	pbs_sha1_hex(data, len, out);
	assert_string_equal(out, want);
}

static void test_fips_examples(void **state)
{
	static const char two_blocks[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	char *million = malloc(1000000);

	(void)state;
	check(NULL, 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
	check("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
	check(two_blocks, strlen(two_blocks), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
	assert_non_null(million);
	memset(million, 'a', 1000000);
	check(million, 1000000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
	free(million);
}

static void test_padding_boundaries(void **state)
{
	static const struct {
		size_t len;
		const char *sha;
	} rows[] = {
	    {55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
	    {56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
	    {63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
	    {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
	    {65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
	    {119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"},
	    {120, "f34c1488385346a55709ba056ddd08280dd4c6d6"},
	    {128, "ad5b3fdbcb526778c2839d2f151ea753995e26a0"},
	};
	char a[128];
	size_t i;

	(void)state;
	memset(a, 'a', sizeof a);
	for (i = 0; i < sizeof rows / sizeof rows[0]; i++)
		check(a, rows[i].len, rows[i].sha);
}

/* Every byte value, so that no sign extension of a char slips into a word. */
static void test_every_byte(void **state)
{
	unsigned char bytes[768];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof bytes; i++)
		bytes[i] = (unsigned char)i;
	check((const char *)bytes, sizeof bytes, "ac2a264c8ec1f4232a40854e8239bc3a697ab1d2");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fips_examples),
	    cmocka_unit_test(test_padding_boundaries),
	    cmocka_unit_test(test_every_byte),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
