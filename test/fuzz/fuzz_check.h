/*
 * fuzz_check.h — the promise check every fuzz target uses: CHECK(cond, fmt, ...) prints
 * "<FUZZ_NAME>: cond: message" and abort()s when COND is false, so libFuzzer keeps the
 * input as a crash. Define FUZZ_NAME (the target's name, a string) before including it.
 */
#ifndef POPBSMTP_FUZZ_CHECK_H
#define POPBSMTP_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s: %s: ", FUZZ_NAME, #cond);                             \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#endif
