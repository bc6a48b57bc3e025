/*
 * text.c — formatting of values read from Redis, where any writer may have put any
 * bytes or any number: a time gmtime_r cannot break down (a lease's grant time in
 * nanoseconds) used to reach strftime as a NULL struct tm and crash the gate.
 */
#include "popbsmtp/text.h"

#include <stdbool.h>
#include <string.h>
#include <time.h>

int pbs_text_utc(const char *fmt, long long t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	/* The range check comes first: time_t may be narrower than long long, and gmtime_r
	 * returns NULL for a year its int cannot hold. */
	if (t < 0 || t > PBS_TEXT_TIME_LAST || (long long)tt != t || gmtime_r(&tt, &tm) == NULL ||
	    strftime(out, len, fmt, &tm) == 0) {
		snprintf(out, len, "?");
		return -1;
	}
	return 0;
}

const char *pbs_text_time(long long t, char out[PBS_TEXT_TIME_MAX])
{
	pbs_text_utc("%Y-%m-%dT%H:%M:%SZ", t, out, PBS_TEXT_TIME_MAX);
	return out;
}

int pbs_text_utf8_len(const unsigned char *p)
{
	int len = (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : (*p & 0xf8) == 0xf0 ? 4 : 0;
	int i;

	if (len == 0 || (len == 2 && *p < 0xc2) || *p > 0xf4)
		return 0;
	for (i = 1; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	/* Overlong three- and four-byte forms, UTF-16 surrogates, beyond U+10FFFF: strict
	 * parsers (Prometheus' among them) reject them. */
	if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0) ||
	    (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
		return 0;
	return len;
}

/* S between double quotes on OUT: '"' and '\\' escaped, printable ASCII and valid UTF-8
 * as they are, and every other byte as LABEL says: a Prometheus label value has only
 * an escaped newline and U+FFFD for the rest, JSON \u00XX. */
static void text_quoted(FILE *out, const char *s, bool label)
{
	const unsigned char *p;
	int n;

	fputc('"', out);
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p >= 0x20 && *p < 0x7f)
			fputc(*p, out);
		else if (*p >= 0x80 && (n = pbs_text_utf8_len(p)) > 0) {
			fwrite(p, 1, (size_t)n, out);
			p += n - 1;
		} else if (label && *p == '\n')
			fputs("\\n", out);
		else if (label)
			fputs("\xef\xbf\xbd", out);
		else
			/* A name need not be UTF-8, JSON must be: a stray byte becomes U+00XX. */
			fprintf(out, "\\u%04x", *p);
	}
	fputc('"', out);
}

void pbs_text_json(FILE *out, const char *s)
{
	text_quoted(out, s, false);
}

void pbs_text_label(FILE *out, const char *s)
{
	text_quoted(out, s, true);
}

const char *pbs_text_row(const char *in, char *out, size_t len)
{
	size_t i;

	for (i = 0; in[i] != '\0' && i + 1 < len; i++)
		out[i] = ((unsigned char)in[i] < 0x20 || in[i] == 0x7f) ? '?' : in[i];
	out[i] = '\0';
	return out;
}
