/*
 * text.h — how popbsmtp writes values it did not produce itself (whatever Redis holds:
 * lease values, usage hashes, counter fields) as text for people and other programs:
 * times in UTC for any number, JSON strings and Prometheus label values for any bytes.
 * Every reader of Redis formats through these, so no value can make a formatter crash,
 * print invalid output or forge a line.
 */
#ifndef POPBSMTP_TEXT_H
#define POPBSMTP_TEXT_H

#include <stddef.h>
#include <stdio.h>

/* The last second popbsmtp formats as a time: 9999-12-31T23:59:59Z. Every year has four
 * digits up to here, and gmtime_r handles it wherever time_t has 64 bits. */
#define PBS_TEXT_TIME_LAST 253402300799LL

/* Room for "YYYY-MM-DDTHH:MM:SSZ" and its NUL. */
#define PBS_TEXT_TIME_MAX 32

/* Unix time T (0..PBS_TEXT_TIME_LAST) formatted in UTC with strftime FMT into OUT (LEN
 * bytes). Returns 0, or -1 with OUT set to "?" when T is outside that range or the result
 * does not fit: a time from Redis can be any number. */
int pbs_text_utc(const char *fmt, long long t, char *out, size_t len);

/* T as "YYYY-MM-DDTHH:MM:SSZ", or "?" when it is not a time popbsmtp formats. Returns OUT. */
const char *pbs_text_time(long long t, char out[PBS_TEXT_TIME_MAX]);

/* The length of the valid UTF-8 sequence (2..4 bytes, no overlong form, no surrogate,
 * nothing past U+10FFFF) that starts at P, or 0 if none does. P is NUL-terminated. */
int pbs_text_utf8_len(const unsigned char *p);

/* S as a JSON string literal on OUT: any bytes in, valid JSON out (a byte that is not
 * part of valid UTF-8 becomes \u00XX). */
void pbs_text_json(FILE *out, const char *s);

/* S as a Prometheus label value between double quotes on OUT, as the text exposition
 * format requires: '\\', '"' and newline escaped, and since the whole file is rejected
 * for one invalid UTF-8 byte, every byte that is not valid UTF-8 and every other control
 * byte written as U+FFFD. */
void pbs_text_label(FILE *out, const char *s);

/* IN for a one-line text row into OUT (LEN bytes, cut to fit): control bytes as '?'. */
const char *pbs_text_row(const char *in, char *out, size_t len);

#endif
