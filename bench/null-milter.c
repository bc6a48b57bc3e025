/*
 * null-milter.c — the benchmark baseline: a libmilter milter that registers the callbacks
 * popbsmtp-milter registers (connect, envfrom, envrcpt, abort, close) and lets everything
 * through. Registering the same set matters: libmilter derives the SMFIP_NO* flags from the
 * NULL callbacks, so the MTA sends the same stages to both and only the work differs.
 *
 *   null-milter SOCKET     (unix:/path or inet:PORT@127.0.0.1; runs in the foreground)
 *
 * A stale unix socket is removed; the socket is created world-connectable so an MTA running
 * as its own user (postfix, smmsp) can reach this harmless baseline. SIGTERM/SIGINT stop it.
 */
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>

#include <libmilter/mfapi.h>

/* Connection opened: nothing to remember. */
static sfsistat null_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *hostaddr)
{
	(void)ctx;
	(void)hostname;
	(void)hostaddr;
	return SMFIS_CONTINUE;
}

/* MAIL FROM: let it through. */
static sfsistat null_envfrom(SMFICTX *ctx, char **argv)
{
	(void)ctx;
	(void)argv;
	return SMFIS_CONTINUE;
}

/* RCPT TO: CONTINUE, never ACCEPT (that would end filtering for the whole message). */
static sfsistat null_envrcpt(SMFICTX *ctx, char **argv)
{
	(void)ctx;
	(void)argv;
	return SMFIS_CONTINUE;
}

/* Message aborted: no per-message state to drop. */
static sfsistat null_abort(SMFICTX *ctx)
{
	(void)ctx;
	return SMFIS_CONTINUE;
}

/* Connection closed: no per-connection state to free. */
static sfsistat null_close(SMFICTX *ctx)
{
	(void)ctx;
	return SMFIS_CONTINUE;
}

static struct smfiDesc null_desc = {
    .xxfi_name = "null-milter",
    .xxfi_version = SMFI_VERSION,
    .xxfi_flags = SMFIF_NONE,
    .xxfi_connect = null_connect,
    .xxfi_envfrom = null_envfrom,
    .xxfi_envrcpt = null_envrcpt,
    .xxfi_abort = null_abort,
    .xxfi_close = null_close,
};

int main(int argc, char **argv)
{
	mode_t old_mask;
	int rc;

	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: null-milter SOCKET   (unix:/path or inet:PORT@HOST)\n");
		return 1;
	}
	if (smfi_setconn(argv[1]) == MI_FAILURE) {
		fprintf(stderr, "null-milter: bad socket \"%s\"\n", argv[1]);
		return 1;
	}
	if (smfi_register(null_desc) == MI_FAILURE) {
		fprintf(stderr, "null-milter: smfi_register failed\n");
		return 1;
	}
	old_mask = umask(0);
	rc = smfi_opensocket(true);
	umask(old_mask);
	if (rc == MI_FAILURE) {
		fprintf(stderr, "null-milter: cannot listen on %s\n", argv[1]);
		return 1;
	}
	if (smfi_main() == MI_FAILURE) {
		fprintf(stderr, "null-milter: smfi_main failed\n");
		return 1;
	}
	return 0;
}
