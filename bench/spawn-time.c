/*
 * spawn-time.c — wall time of whole commands (fork, exec, everything they run, wait), for
 * bench/run's hook benchmark. Several commands are timed side by side: one run of each in
 * turn (A B C A B C ...), so a noisy neighbour slows all of them alike, and the ratios of
 * their medians hold even when the absolute times do not.
 *
 *   spawn-time [-n RUNS] [-w WARMUP] [-q] -- LABEL CMD [ARGS...] [-- LABEL CMD [ARGS...]]...
 *
 * Every command runs RUNS times (after WARMUP untimed runs each) with this program's
 * environment, stdin from /dev/null and stdout to /dev/null; its stderr is kept. A command
 * that exits non-zero is counted as a failure and still timed. Output: one line per command
 * "LABEL: median ... us", then "RESULT label=LABEL runs=N failures=N p10_us= p50_us=
 * p90_us= mean_us= ratio=" per command, the ratio being its median over the first command's.
 * Exit 0, 1 on a usage error, 2 when a command could not be started or failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "samples.h"

extern char **environ;

struct command {
	const char *label;
	char **argv;
	uint64_t *ns; /* one per timed run */
	long failures;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Run CMD once; its duration in *ns. 0 when it exited 0, 1 when it failed, -1 when it
 * could not be started. */
static int run_once(const struct command *cmd, const posix_spawn_file_actions_t *fa,
                    uint64_t *ns)
{
	uint64_t t0 = now_ns();
	pid_t pid;
	int status, rc;

	rc = posix_spawn(&pid, cmd->argv[0], fa, NULL, cmd->argv, environ);
	if (rc != 0) {
		fprintf(stderr, "spawn-time: cannot run %s: %s\n", cmd->argv[0], strerror(rc));
		return -1;
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	*ns = now_ns() - t0;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static int usage(void)
{
	fprintf(stderr, "usage: spawn-time [-n RUNS] [-w WARMUP] [-q] -- LABEL CMD [ARGS...]"
	                " [-- LABEL CMD [ARGS...]]...\n");
	return 1;
}

int main(int argc, char **argv)
{
	long runs = 200, warmup = 10, r;
	int opt, quiet = 0, ncmd = 0, i, status = 0;
	struct command *cmds;
	posix_spawn_file_actions_t fa;
	double base = 0;

	while ((opt = getopt(argc, argv, "+n:w:q")) != -1) {
		switch (opt) {
		case 'n':
			runs = strtol(optarg, NULL, 10);
			break;
		case 'w':
			warmup = strtol(optarg, NULL, 10);
			break;
		case 'q':
			quiet = 1;
			break;
		default:
			return usage();
		}
	}
	if (runs < 1 || warmup < 0 || optind >= argc || strcmp(argv[optind - 1], "--") != 0)
		return usage();
	if ((cmds = calloc((size_t)argc, sizeof *cmds)) == NULL)
		return 2;
	/* Split the rest at "--": LABEL CMD ARGS... per group, argv NUL-terminated in place. */
	for (i = optind; i < argc;) {
		int start = i;

		while (i < argc && strcmp(argv[i], "--") != 0)
			i++;
		if (i - start < 2)
			return usage();
		cmds[ncmd].label = argv[start];
		cmds[ncmd].argv = argv + start + 1;
		if ((cmds[ncmd].ns = calloc((size_t)runs, sizeof(uint64_t))) == NULL)
			return 2;
		ncmd++;
		if (i < argc)
			argv[i++] = NULL;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	for (r = -warmup; r < runs; r++) {
		for (i = 0; i < ncmd; i++) {
			uint64_t ns;
			int rc = run_once(&cmds[i], &fa, &ns);

			if (rc < 0)
				return 2;
			if (r < 0)
				continue;
			cmds[i].ns[r] = ns;
			cmds[i].failures += rc;
		}
	}
	for (i = 0; i < ncmd; i++) {
		struct command *c = &cmds[i];
		double sum = 0, p10, p50, p90;
		long k;

		pbs_samples_sort(c->ns, (size_t)runs);
		for (k = 0; k < runs; k++)
			sum += (double)c->ns[k] / 1000.0;
		p10 = pbs_samples_pct_us(c->ns, (size_t)runs, 10);
		p50 = pbs_samples_pct_us(c->ns, (size_t)runs, 50);
		p90 = pbs_samples_pct_us(c->ns, (size_t)runs, 90);
		if (i == 0)
			base = p50;
		if (!quiet)
			printf("%s: median %.1f us, p10 %.1f, p90 %.1f, mean %.1f (%ld runs, %ld "
			       "failed)\n",
			       c->label, p50, p10, p90, sum / (double)runs, runs, c->failures);
		printf("RESULT label=%s runs=%ld failures=%ld p10_us=%.1f p50_us=%.1f p90_us=%.1f "
		       "mean_us=%.1f ratio=%.4f\n",
		       c->label, runs, c->failures, p10, p50, p90, sum / (double)runs,
		       base > 0 ? p50 / base : 0);
		if (c->failures > 0)
			status = 2;
	}
	return status;
}
