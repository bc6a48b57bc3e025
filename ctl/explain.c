/*
 * explain.c — popbsmtpctl explain: what the relay gate a site uses would decide for a
 * client, and why. The decision is pbs_policy_decide(), as in the gates; only the facts
 * differ by gate. The milter trusts milter.trusted. The policy gate is asked by Postfix
 * after permit_mynetworks, so there Postfix's mynetworks is the trusted list: read with
 * postconf, as far as plain networks go, and what cannot be evaluated here is said.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "ctl.h"
#include "popbsmtp/policy.h"

/* Postfix's mynetworks as postconf prints it, and what explain made of it. */
struct explain_mynetworks {
	bool known;   /* postconf answered */
	bool trusted; /* a network before the first unevaluated entry holds the client */
	char skipped[PBS_LOG_SAFE_MAX]; /* the first entry not evaluated, "" if none */
};

/* Run "postconf -h mynetworks" into BUF; false when postconf is missing or fails. */
static bool explain_postconf_mynetworks(char *buf, size_t size)
{
	FILE *p = popen("postconf -h mynetworks 2>/dev/null", "r");
	size_t len;
	int status;

	if (p == NULL)
		return false;
	len = fread(buf, 1, size - 1, p);
	buf[len] = '\0';
	status = pclose(p);
	return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0 && len < size - 1;
}

/* Match ADDR against Postfix's mynetworks in its own order, where the first matching entry
 * decides. An entry that is not a plain network (a table, a file, a host name, a "!"
 * exclusion) cannot be evaluated here: the walk stops there, and says so. */
static void explain_mynetworks(const pbs_addr *addr, struct explain_mynetworks *out)
{
	char value[8192], *save = NULL, *word;
	pbs_cidr net;

	memset(out, 0, sizeof *out);
	if (!explain_postconf_mynetworks(value, sizeof value))
		return;
	out->known = true;
	for (word = strtok_r(value, " \t\r\n,", &save); word != NULL;
	     word = strtok_r(NULL, " \t\r\n,", &save)) {
		if (pbs_cidr_parse(word, &net) != 0) {
			pbs_log_safe(word, out->skipped);
			return;
		}
		if (pbs_cidr_contains(&net, addr)) {
			out->trusted = true;
			return;
		}
	}
}

/* "--gate milter|policy" into *GATE, the other words into WORDS (at most 2). */
static int explain_args(int argc, char **argv, enum pbs_policy_gate *gate, const char **words,
                        int *n)
{
	int i;

	*n = 0;
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--gate") == 0) {
			if (i + 1 >= argc)
				return ctl_fail(CTL_USAGE, "--gate needs a value");
			i++;
			if (strcmp(argv[i], "milter") == 0)
				*gate = PBS_POLICY_GATE_MILTER;
			else if (strcmp(argv[i], "policy") == 0)
				*gate = PBS_POLICY_GATE_POLICY;
			else
				return ctl_fail(CTL_USAGE,
				                "--gate: '%s' is neither milter nor policy",
				                argv[i]);
		} else if (argv[i][0] == '-' && argv[i][1] == '-') {
			return ctl_fail(CTL_USAGE, "%s: unknown option %s", argv[0], argv[i]);
		} else if (*n == 2) {
			return ctl_fail(CTL_USAGE, "%s: too many arguments", argv[0]);
		} else {
			words[(*n)++] = argv[i];
		}
	}
	if (*n < 1)
		return ctl_fail(CTL_USAGE,
		                "usage: explain [--gate milter|policy] ADDR [RECIPIENT | DOMAIN]");
	return CTL_OK;
}

int ctl_cmd_explain(struct ctl *c, int argc, char **argv)
{
	const struct pbs_milter_config *m = &c->cfg->milter;
	struct pbs_policy_facts f = {false,
	                             false,
	                             true,
	                             false,
	                             PBS_LEASE_UNKNOWN,
	                             (enum pbs_on_store_error)m->on_store_error,
	                             pbs_config_limits_on(&c->cfg->limits),
	                             PBS_SENDER_ANY,
	                             NULL,
	                             NULL};
	enum pbs_policy_gate gate = PBS_POLICY_GATE_MILTER;
	struct explain_mynetworks mynet = {false, false, ""};
	const char *words[2], *reason, *reply;
	char subject[PBS_ADDR_STRLEN], rcpt[512];
	struct ctl_lease l;
	enum pbs_verdict v;
	pbs_addr addr;
	int n, rc;

	if ((rc = explain_args(argc, argv, &gate, words, &n)) != CTL_OK)
		return rc;
	if ((rc = ctl_subject(c, words[0], &addr, subject)) != CTL_OK)
		return rc;
	if (gate == PBS_POLICY_GATE_POLICY) {
		explain_mynetworks(&addr, &mynet);
		f.trusted = mynet.trusted;
	} else {
		f.trusted = pbs_cidr_list_contains(&m->trusted, &addr);
	}
	f.never_lease = pbs_cidr_list_contains(&c->cfg->lease.never, &addr);
	/* Without the MTA's routing, take the recipient to be routed as written, out: only
	 * local_domains can then make it local. */
	if (n > 1 &&
	    (size_t)snprintf(rcpt, sizeof rcpt, "%s%s", strchr(words[1], '@') ? "" : "postmaster@",
	                     words[1]) < sizeof rcpt)
		f.relay = pbs_policy_is_relay(PBS_MTA_UNKNOWN, "smtp", rcpt, rcpt, m);
	v = pbs_policy_decide(&f, &reason);
	if (v == PBS_VERDICT_NEED_LEASE) {
		rc = ctl_fetch(c, subject, &l);
		/* A value that is no lease is no lease, as the gates take it. */
		f.lease = rc == CTL_OK		     ? PBS_LEASE_LIVE
			  : rc == CTL_NO || l.invalid ? PBS_LEASE_NONE
						      : PBS_LEASE_STORE_ERROR;
		/* With limits on, the gates refuse the lease of a suspended user too. */
		if (f.lease == PBS_LEASE_LIVE && f.counted &&
		    (rc = ctl_suspended(c, l.lease.user)) != CTL_NO)
			f.lease = rc == CTL_OK ? PBS_LEASE_SUSPENDED : PBS_LEASE_STORE_ERROR;
		v = pbs_policy_decide(&f, &reason);
	}
	reply = pbs_policy_reply(gate, v, reason);
	printf("client %s (lease subject %s)%s%s%s: ", words[0], subject, n > 1 ? " to " : "",
	       n > 1 ? words[1] : "", gate == PBS_POLICY_GATE_POLICY ? ", policy gate" : "");
	if (reply == NULL)
		printf("relay allowed");
	else
		printf("relay %s (%s)", v == PBS_VERDICT_TEMPFAIL ? "deferred" : "refused", reply);
	printf(" — %s", pbs_policy_reason_text(reason));
	if (gate == PBS_POLICY_GATE_POLICY && f.trusted)
		printf(" (Postfix's mynetworks)");
	if (f.lease == PBS_LEASE_LIVE || f.lease == PBS_LEASE_SUSPENDED)
		printf(" of %s, %lld s left", l.lease.user, l.ttl);
	if (v != PBS_VERDICT_ALLOW)
		printf("; SMTP AUTH sessions may still relay");
	printf("\n");
	/* What the answer could not take into account, in the words an administrator looks
	 * for. */
	if (gate == PBS_POLICY_GATE_POLICY && !mynet.known)
		printf("note: postconf did not answer: Postfix's mynetworks is unknown here and "
		       "taken not to hold the client\n");
	else if (gate == PBS_POLICY_GATE_POLICY && !f.trusted && mynet.skipped[0] != '\0')
		printf("note: Postfix's mynetworks entry '%s' cannot be evaluated here; the answer "
		       "takes it and the entries after it not to hold the client\n",
		       mynet.skipped);
	if (f.lease == PBS_LEASE_LIVE && f.counted)
		printf("note: relay by lease is counted (limits.*): a recipient over a limit is "
		       "deferred; explain counts nothing\n");
	if (f.lease == PBS_LEASE_LIVE && c->cfg->lease.sender != PBS_SENDER_ANY)
		printf("note: lease.sender = %s: MAIL FROM must agree with %s\n",
		       c->cfg->lease.sender == PBS_SENDER_ADDRESS ? "address" : "domain",
		       l.lease.user);
	if (gate == PBS_POLICY_GATE_POLICY && n > 1)
		printf(
		    "note: Postfix decides which domains are its own (mydestination, "
		    "relay_domains, virtual domains); explain knows only milter.local_domains\n");
	if (f.lease == PBS_LEASE_STORE_ERROR)
		return CTL_STORE;
	return v == PBS_VERDICT_ALLOW ? CTL_OK : CTL_NO;
}
