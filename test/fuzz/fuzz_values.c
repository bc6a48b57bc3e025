/*
 * fuzz_values.c — libFuzzer target for everything popbsmtp reads back from Redis and
 * formats: anyone with Redis access can write any bytes under a lease key or into the
 * usage and counter hashes (issue 18 §3: a lease granted in nanoseconds crashed the
 * gates and popbsmtpctl in strftime). The input is taken three ways at once:
 *   - a lease value: pbs_lease_decode, then the trace header and the time of what decoded;
 *   - a usage or counter hash entry, FIELD NUL VALUE (the whole input as both when it holds
 *     no NUL): every parser of usagekey.h, and the time of every number they accept;
 *   - the first 8 bytes as a time: pbs_text_time and pbs_text_utc.
 * Every field and value also goes through each formatter of lib/text.c and pbs_log_safe.
 * The promises checked (abort()ed when broken, so libFuzzer keeps the input): a decoded
 * lease has a time that formats; a time formats as a 20-byte date or as "?"; the trace
 * header is one line of printable ASCII; a Prometheus label value is valid UTF-8 with no
 * raw newline and every quote escaped; a JSON string and a text row hold no control byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "popbsmtp/lease.h"
#include "popbsmtp/log.h"
#include "popbsmtp/text.h"
#include "popbsmtp/usage.h"
#include "popbsmtp/usagekey.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NAME "fuzz_values"
#include "fuzz_check.h"

/* T formats as "YYYY-MM-DDTHH:MM:SSZ" when it is in range, else as "?". */
static void check_time(long long t)
{
	char out[PBS_TEXT_TIME_MAX], key[16];
	bool in_range = t >= 0 && t <= PBS_TEXT_TIME_LAST;

	pbs_text_time(t, out);
	CHECK(in_range ? strlen(out) == 20 && out[4] == '-' && out[19] == 'Z'
	               : strcmp(out, "?") == 0,
	      "time %lld formatted as '%s'", t, out);
	CHECK((pbs_text_utc("%Y%m%dT%H%M", t, key, sizeof key) == 0) == in_range,
	      "time %lld: pbs_text_utc disagrees with the range", t);
}

/* What FN writes for S, as a NUL-terminated string (free it). */
static char *written(void (*fn)(FILE *, const char *), const char *s, size_t *len)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, len);

	CHECK(f != NULL, "open_memstream failed");
	fn(f, s);
	fclose(f);
	return buf;
}

/* Strict UTF-8, decoded here on its own (an oracle, not the code under test): no
 * overlong forms, no surrogates, nothing past U+10FFFF. */
static bool valid_utf8(const unsigned char *p, size_t len)
{
	size_t i = 0, n, k;
	unsigned long cp;

	while (i < len) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		n = p[i] >= 0xf0 ? 4 : p[i] >= 0xe0 ? 3 : p[i] >= 0xc0 ? 2 : 0;
		if (n == 0 || p[i] >= 0xf8 || i + n > len)
			return false;
		cp = p[i] & (0x7f >> n);
		for (k = 1; k < n; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n;
	}
	return true;
}

/* S through every formatter of values read from Redis. */
static void check_formatters(const char *s)
{
	char row[PBS_USER_MAX + 1], safe[PBS_LOG_SAFE_MAX];
	size_t len, i;
	char *out;

	out = written(pbs_text_label, s, &len);
	CHECK(valid_utf8((const unsigned char *)out, len), "label of '%s' is not UTF-8", s);
	CHECK(memchr(out, '\n', len) == NULL, "label holds a raw newline");
	for (i = 1; i + 1 < len; i++)
		CHECK(out[i] != '"' || out[i - 1] == '\\', "label holds an unescaped quote");
	free(out);
	out = written(pbs_text_json, s, &len);
	CHECK(valid_utf8((const unsigned char *)out, len), "JSON of '%s' is not UTF-8", s);
	for (i = 0; i < len; i++)
		CHECK((unsigned char)out[i] >= 0x20 && out[i] != 0x7f, "JSON holds a control byte");
	free(out);
	pbs_text_row(s, row, sizeof row);
	for (i = 0; row[i] != '\0'; i++)
		CHECK((unsigned char)row[i] >= 0x20 && row[i] != 0x7f, "row holds a control byte");
	pbs_log_safe(s, safe);
	CHECK(strlen(safe) < PBS_LOG_SAFE_MAX, "pbs_log_safe overran");
}

/* VALUE as a lease: what decodes has a time in range and makes a one-line trace header. */
static void check_lease(const char *value, size_t size)
{
	char trace[PBS_USAGE_TRACE_MAX];
	pbs_lease lease;
	size_t i;

	if (pbs_lease_decode(value, size, &lease) != 0)
		return;
	CHECK(lease.granted >= 0 && lease.granted <= PBS_LEASE_GRANTED_MAX,
	      "decoded a grant time of %lld", lease.granted);
	check_time(lease.granted);
	pbs_usage_trace_value(&lease, "2001:db8:1:2::/64", trace);
	CHECK(strstr(trace, " granted=?") == NULL, "trace header of a decoded lease: '%s'", trace);
	for (i = 0; trace[i] != '\0'; i++)
		CHECK(trace[i] >= 0x20 && trace[i] < 0x7f, "trace header byte 0x%02x",
		      (unsigned char)trace[i]);
	check_formatters(lease.user);
}

/* FIELD and VALUE as an entry of a usage day or a counter hash. */
static void check_hash_entry(const char *field, const char *value)
{
	struct pbs_usagekey_parts parts;
	char client[PBS_ADDR_STRLEN];
	const char *user;
	long long n;

	if (pbs_usagekey_parse_user_field(field, &user) != 0)
		check_formatters(user);
	if (pbs_usagekey_parse_count(value, &n) == 0) {
		CHECK(n >= 0, "count %lld from '%s'", n, value);
		check_time(n);
		CHECK(pbs_usagekey_sum(n, n) >= n, "sum of %lld went down", n);
	}
	if (pbs_usagekey_parse_last(value, &n, client, sizeof client) == 0) {
		CHECK(n >= 0, "last time %lld from '%s'", n, value);
		CHECK(memchr(client, '\0', sizeof client) != NULL, "client not terminated");
		check_time(n);
		check_formatters(client);
	}
	if (pbs_usagekey_parse_field(field, &parts) == 0) {
		check_formatters(parts.host);
		check_formatters(parts.gate);
	}
	check_formatters(field);
	check_formatters(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Exactly-sized copies: ASan catches a read one byte past the value. */
	char *value = malloc(size ? size : 1), *text = malloc(size + 1);
	const char *nul;
	long long t;

	if (value == NULL || text == NULL) {
		free(value);
		free(text);
		return 0;
	}
	memcpy(value, data, size);
	check_lease(value, size);
	memcpy(text, data, size);
	text[size] = '\0';
	nul = memchr(text, '\0', size);
	check_hash_entry(text, nul != NULL ? nul + 1 : text);
	if (size >= sizeof t) {
		memcpy(&t, data, sizeof t);
		check_time(t);
	}
	free(value);
	free(text);
	return 0;
}
