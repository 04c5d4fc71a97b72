#!/bin/sh
# Run the VM tests in the testbed, and fail unless every collected test passed.
#
# The journal (tests/conftest.py) records what was collected, each test's start, and each
# outcome (setup and teardown errors included). Under TCG emulation the guest kernel
# itself occasionally dies (an "Oops: int3" while the kernel patches its own code, seen
# in boot and in sched_ext enable): the sandbox then exits 4. The test that was running
# is recorded as failed (it is not retried), and the guest boots again, at most three
# times, for the tests that had not started. A hang (the sandbox's timeout, exit 7) is
# not a crash: it is not retried, and this script exits 7 with its own message.
# Test failures are never retried.
#
# Exit: 0 all collected tests passed; 1 a test failed, errored, was skipped, or fewer
# tests finished than were collected (pytest's 5, "nothing collected", included);
# 7 the guest hung; other codes are the sandbox's own.
set -u
mkdir -p out
journal=out/vm-journal.txt
: > "$journal"
rc=4
for attempt in 1 2 3; do
    SCHEDAGENT_REQUIRE_VM=1 SCHEDAGENT_VM_JOURNAL="$journal" .venv/bin/schedagent sandbox run \
        --timeout-s 3600 -- \
        python -m pytest -m vm tests/vm -v -rA -p no:cacheprovider --durations=15
    rc=$?
    # a test that started and has no outcome was running when the guest died or hung
    for nodeid in $(awk '$1 == "started" { s[$2] = 1 }
                         $1 ~ /^(passed|failed|skipped|error)$/ { delete s[$2] }
                         END { for (n in s) print n }' "$journal"); do
        echo "failed $nodeid" >> "$journal"
        echo "run-vm-tests: $nodeid was running when the guest stopped (exit $rc);" \
             "recorded as failed, not retried" >&2
    done
    if [ "$rc" = 7 ]; then
        echo "run-vm-tests: the guest hung past the sandbox timeout (3600 s); not retried." \
             "See the console log above." >&2
        break
    fi
    [ "$rc" = 4 ] || break
    echo "run-vm-tests: the guest died before the tests finished (attempt $attempt);" \
         "booting again for the tests that had not started. See the console log above." >&2
done
collected=$(awk '$1 == "collected" { print $2; exit }' "$journal")
collected=${collected:-0}
passed=$(grep -c '^passed ' "$journal")
finished=$(grep -c -E '^(passed|failed|skipped) ' "$journal")
bad=$(grep -E '^(failed|skipped|error) ' "$journal")
echo "run-vm-tests: $collected collected, $passed passed, $finished finished" \
     "(journal $journal)"
[ -n "$bad" ] && printf 'run-vm-tests: not passed:\n%s\n' "$bad" >&2
[ "$rc" = 7 ] && exit 7
if [ "$collected" = 0 ]; then
    echo "run-vm-tests: no VM test was collected; that is a failure, not a pass" >&2
    exit 1
fi
if [ "$finished" -lt "$collected" ]; then
    echo "run-vm-tests: only $finished of $collected collected tests finished" >&2
    exit 1
fi
case "$rc" in
    0|1|4|5) ;;
    *) exit "$rc" ;;  # the sandbox's own failure (no testbed, bad image, ...)
esac
if [ -n "$bad" ] || [ "$passed" != "$collected" ]; then
    exit 1
fi
exit 0
