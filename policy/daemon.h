/*
 * daemon.h — popbsmtp-policy --listen: the policy protocol served on a socket of its own
 * to many clients (every smtpd of a Postfix, or Exim's readsocket), in the foreground.
 */
#ifndef POPBSMTP_POLICY_DAEMON_H
#define POPBSMTP_POLICY_DAEMON_H

/* Serve on LISTEN (NULL: policy.listen) with the configuration at CONFIG_PATH until
 * SIGTERM, SIGINT or SIGHUP; SIGUSR1 reloads the file. Returns the exit status. */
int pbs_daemon_run(const char *config_path, const char *listen);

#endif
