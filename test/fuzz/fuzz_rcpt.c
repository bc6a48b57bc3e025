/*
 * fuzz_rcpt.c — libFuzzer target for the local-or-relay classification of a recipient
 * (pbs_policy_is_relay in lib/policy.c) with milter.local_domains set. The client chooses
 * the RCPT address, and through it what the MTA resolves ({rcpt_addr}), so both are
 * hostile. Input: one byte choosing the mailer, then RCPT, a NUL, and {rcpt_addr}. The
 * promise checked, stated independently of the code: a recipient the MTA routes out is
 * called local only when both addresses are one plain "local@domain" with no routing
 * character, in the same listed domain. A broken promise abort()s.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "popbsmtp/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *domain_words[] = {"example.org", "Mail.Example.NET"};
static const char *const mailers[] = {"relay", "esmtp", "smtp", NULL, "local"};

/* The domain after the only '@' of ADDR (angle brackets allowed) and its length, or NULL
 * when ADDR has a routing character, no '@' or several, or a trailing dot. */
static const char *sole_domain(const char *addr, size_t *len)
{
	const char *at = strchr(addr, '@');

	if (at == NULL || strchr(at + 1, '@') != NULL || strpbrk(addr, "%!\"\\:,;[]()/^ ") != NULL)
		return NULL;
	*len = strcspn(at + 1, ">");
	if (*len == 0 || at[*len] == '.')
		return NULL;
	return at + 1;
}

static bool listed(const char *domain, size_t len)
{
	size_t i;

	for (i = 0; i < sizeof domain_words / sizeof domain_words[0]; i++)
		if (strlen(domain_words[i]) == len && strncasecmp(domain_words[i], domain, len) == 0)
			return true;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pbs_milter_config cfg;
	const char *mailer, *d1, *d2;
	char *rcpt, *resolved;
	size_t l1 = 0, l2 = 0;
	bool relay;

	if (size < 1)
		return 0;
	memset(&cfg, 0, sizeof cfg);
	cfg.local_domains.items = domain_words;
	cfg.local_domains.count = 2;
	mailer = mailers[data[0] % (sizeof mailers / sizeof mailers[0])];
	/* RCPT up to the first NUL, {rcpt_addr} after it (empty when there is none). */
	rcpt = calloc(1, size);
	if (rcpt == NULL)
		return 0;
	memcpy(rcpt, data + 1, size - 1);
	resolved = rcpt + strlen(rcpt) + (strlen(rcpt) < size - 1 ? 1 : 0);
	relay = pbs_policy_is_relay(PBS_MTA_SENDMAIL, mailer, rcpt, resolved, &cfg);
	if (mailer != NULL && strcmp(mailer, "local") == 0 && relay) {
		fprintf(stderr, "fuzz_rcpt: the local mailer counted as relay\n");
		abort();
	}
	if (mailer == NULL || strcmp(mailer, "local") != 0) {
		d1 = sole_domain(rcpt, &l1);
		d2 = sole_domain(resolved, &l2);
		if (!relay && !(d1 != NULL && d2 != NULL && l1 == l2 &&
				strncasecmp(d1, d2, l1) == 0 && listed(d2, l2))) {
			fprintf(stderr, "fuzz_rcpt: rcpt '%s' resolved '%s' counted local\n", rcpt,
				resolved);
			abort();
		}
	}
	free(rcpt);
	return 0;
}
