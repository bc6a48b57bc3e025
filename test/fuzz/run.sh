#!/bin/sh
# run.sh BUILD_DIR SECONDS — run every fuzz target of BUILD_DIR (configured with CC=clang
# -DPBS_FUZZ=ON) for SECONDS each, one after the other, on a working copy of its seed
# corpus under BUILD_DIR/test/fuzz/run/ (the checked-in corpus is never written; inputs
# found by earlier runs in the same BUILD_DIR are kept and replayed). Prints one line per
# target, also into BUILD_DIR/test/fuzz/run/summary; exits 1 if any target crashed, leaked,
# hung or ran out of memory, showing the input in hex. Add such an input to
# test/fuzz/corpus/TARGET/ as a regression test: every run replays the whole corpus first.
# Environment: PBS_FUZZ_TARGETS (default: all of them), PBS_FUZZ_ARGS (more libFuzzer flags).
set -u

usage() { echo "usage: $0 BUILD_DIR SECONDS" >&2; exit 2; }
[ $# -eq 2 ] || usage
case $2 in '' | *[!0-9]*) usage ;; esac
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd) || usage
seconds=$2
bin="$build/test/fuzz"
out="$bin/run"
summary="$out/summary"
failed=0
mkdir -p "$out"
: >"$summary"
# Leaks of libconfig itself that popbsmtp cannot free (see the file).
LSAN_OPTIONS="suppressions=$here/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export LSAN_OPTIONS
# fuzz_config writes every input to a file in a directory of its own in TMPDIR: use memory
# rather than disk, and a private TMPDIR, so a target killed by a crash leaves nothing.
base=${TMPDIR:-/tmp}
[ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
TMPDIR=$(mktemp -d "$base/pbs-fuzz.XXXXXX") || exit 2
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

# The longest input worth trying: past these lengths every parser refuses at once.
max_len() {
	case $1 in
	fuzz_addr) echo 256 ;;
	fuzz_lease) echo 1024 ;;
	fuzz_rcpt) echo 640 ;;
	fuzz_request) echo 8192 ;;    # two lines over PBS_REQUEST_LINE_MAX
	fuzz_values) echo 12288 ;;    # a 10 KB user name and some
	*) echo 4096 ;;
	esac
}

for target in ${PBS_FUZZ_TARGETS:-fuzz_addr fuzz_lease fuzz_config fuzz_rcpt fuzz_request fuzz_values}; do
	if [ ! -x "$bin/$target" ]; then
		echo "run.sh: $bin/$target: not built (configure with CC=clang -DPBS_FUZZ=ON)" >&2
		exit 2
	fi
	work="$out/corpus/$target"
	artifacts="$out/artifacts/$target"
	log="$out/$target.log"
	rm -rf "$artifacts"
	mkdir -p "$work" "$artifacts"
	cp "$here/corpus/$target/"* "$work/"
	dict=
	[ -f "$here/$target.dict" ] && dict="-dict=$here/$target.dict"
	# shellcheck disable=SC2086
	"$bin/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
		-max_len="$(max_len "$target")" -print_final_stats=1 \
		-artifact_prefix="$artifacts/" $dict ${PBS_FUZZ_ARGS:-} "$work" >"$log" 2>&1
	status=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
	cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)
	echo "$target: ${runs:-?} runs in ${secs:-?} s, $cov, corpus $(find "$work" -type f | wc -l) inputs," \
		"exit $status" | tee -a "$summary"
	if [ "$status" -ne 0 ] || [ -n "$(ls "$artifacts")" ]; then
		failed=1
		echo "run.sh: $target FAILED; the end of $log:"
		grep -v '^#[0-9]' "$log" | tail -n 40 | sed 's/^/    /'
		for f in "$artifacts"/*; do
			[ -f "$f" ] || continue
			echo "    input $f ($(wc -c <"$f") bytes), hex:"
			od -An -tx1 -v "$f" | tr -d ' \n' | fold -w 64 | sed 's/^/      /'
			echo
		done
	fi
done
exit $failed
