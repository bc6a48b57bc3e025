/*
 * sha1.c — SHA-1 as FIPS 180-4 §6.1 gives it: 512-bit blocks, 80 rounds, the message padded
 * with 0x80, zeros and its length in bits (big-endian). Written for script names (sha1.h).
 */
#include "popbsmtp/sha1.h"

#include <stdint.h>
#include <string.h>

#define SHA1_BLOCK 64

static uint32_t rotl(uint32_t x, int n)
{
	return (x << n) | (x >> (32 - n));
}

/* One 64-byte block P into the state H. */
static void sha1_block(uint32_t h[5], const unsigned char *p)
{
	uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f, k, t;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
	for (; i < 80; i++)
		w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
	for (i = 0; i < 80; i++) {
		if (i < 20) {
			f = (b & c) | (~b & d);
			k = 0x5a827999;
		} else if (i < 40) {
			f = b ^ c ^ d;
			k = 0x6ed9eba1;
		} else if (i < 60) {
			f = (b & c) | (b & d) | (c & d);
			k = 0x8f1bbcdc;
		} else {
			f = b ^ c ^ d;
			k = 0xca62c1d6;
		}
		t = rotl(a, 5) + f + e + k + w[i];
		e = d;
		d = c;
		c = rotl(b, 30);
		b = a;
		a = t;
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
}

void pbs_sha1_hex(const void *data, size_t len, char out[PBS_SHA1_HEX_MAX])
{
	static const char hex[] = "0123456789abcdef";
	uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
	const unsigned char *p = data;
	unsigned char last[2 * SHA1_BLOCK];
	size_t whole = len - len % SHA1_BLOCK, tail, i;
	uint64_t bits = (uint64_t)len * 8;

	for (i = 0; i < whole; i += SHA1_BLOCK)
		sha1_block(h, p + i);
	/* The rest, 0x80, and the length in the last 8 bytes: one block, or two when the rest
	 * leaves fewer than 9 bytes free. */
	memset(last, 0, sizeof last);
	if (len > whole)
		memcpy(last, p + whole, len - whole);
	last[len - whole] = 0x80;
	tail = len - whole < SHA1_BLOCK - 8 ? SHA1_BLOCK : 2 * SHA1_BLOCK;
	for (i = 0; i < 8; i++)
		last[tail - 1 - i] = (unsigned char)(bits >> (8 * i));
	for (i = 0; i < tail; i += SHA1_BLOCK)
		sha1_block(h, last + i);
	for (i = 0; i < 20; i++) {
		unsigned char byte = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));

		out[2 * i] = hex[byte >> 4];
		out[2 * i + 1] = hex[byte & 15];
	}
	out[40] = '\0';
}
