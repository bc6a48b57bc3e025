/*
 * listen.h — a listening socket from the milter's notation: "unix:/path" (also "local:"
 * and a bare "/path"), "inet:PORT@HOST", "inet6:PORT@HOST", "inet:PORT" (every IPv4
 * interface, as libmilter does). For daemons that do not go through libmilter.
 */
#ifndef POPBSMTP_LISTEN_H
#define POPBSMTP_LISTEN_H

#include <stdbool.h>
#include <sys/types.h>

/* An open listening socket and, for a unix one, what its node was when made. */
struct pbs_listener {
	int fd;
	char path[108]; /* "" for inet */
	dev_t dev;
	ino_t ino;
};

/* The path of a "unix:", "local:" or "/..." socket spec, or NULL for inet sockets. */
const char *pbs_listen_unix_path(const char *spec);

/* True when SPEC is in one of the notations above (no I/O; a host name is not looked up). */
bool pbs_listen_valid(const char *spec);

/* Bind and listen on SPEC with BACKLOG, close-on-exec and non-blocking. A stale unix
 * socket (a socket node nobody serves: check that first) is replaced; any other file at
 * the path is refused. 0 or -1 (logged). */
int pbs_listen_open(const char *spec, int backlog, struct pbs_listener *l);

/* Close L and remove its unix socket if the path still names the node it made. */
void pbs_listen_close(struct pbs_listener *l);

#endif
