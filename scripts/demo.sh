#!/bin/sh
# The demo, run inside the sched_ext testbed by `make demo`.
# Python runs under CPU emulation here, so each command takes a few seconds to start.
set -u
step() { printf '\n== %s ==\n' "$*"; }

step "1. what this machine can do"
schedagent doctor

step "2. the policy repository"
schedagent policies list

step "3. every gate: static check, clang, the kernel's BPF verifier (no attach)"
schedagent policies verify latency --set slice_ns=2000000

step "4. canary: the latency policy on one process only (partial mode), 5 s, under CPU load"
stress-ng --cpu 2 --timeout 120s -q &
hogs=$!
sleep 300 &
target=$!
schedagent policies load latency --pid "$target" --duration 5

step "5. a faulty scheduler: the kernel ejects it, the guard reports why, EEVDF is back"
schedagent policies load tests/vm/fixtures/error.bpf.c --set error_after=100 --duration 30
echo "(exit code $?: non-zero because the kernel ejected the scheduler)"

step "6. status and the recorded events"
schedagent status
kill "$hogs" "$target" 2>/dev/null
cat /sys/kernel/sched_ext/state
