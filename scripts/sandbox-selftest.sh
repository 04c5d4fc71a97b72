#!/bin/sh
# One boot that checks the testbed returns the guest command's exit code and output.
set -u
out=$(.venv/bin/schedagent sandbox run -- sh -c 'cat /sys/kernel/sched_ext/state; exit 3')
rc=$?
if [ "$rc" != 3 ] || [ "$out" != disabled ]; then
    echo "sandbox selftest FAILED: expected exit 3 and output 'disabled', got $rc and '$out'" >&2
    exit 1
fi
echo "sandbox selftest: exit code and clean output came back from the guest"
