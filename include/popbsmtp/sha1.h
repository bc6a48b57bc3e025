/*
 * sha1.h — SHA-1 (FIPS 180-4) as text, for one purpose: the name Redis gives a Lua script
 * (EVALSHA), so that a gate sends a script's few kilobytes once per connection and not
 * with every relay recipient. Nothing here needs a secure hash: Redis chose SHA-1.
 */
#ifndef POPBSMTP_SHA1_H
#define POPBSMTP_SHA1_H

#include <stddef.h>

/* Room for 40 lower-case hex digits and a NUL. */
#define PBS_SHA1_HEX_MAX 41

/* The SHA-1 of LEN bytes at DATA (NULL when LEN is 0) as lower-case hex, into OUT. */
void pbs_sha1_hex(const void *data, size_t len, char out[PBS_SHA1_HEX_MAX]);

#endif
