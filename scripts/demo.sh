#!/bin/sh
# The demo, run inside the sched_ext testbed by `make demo`.
set -eu
echo "== schedagent doctor (inside the testbed) =="
schedagent doctor
echo
echo "== load a minimal scheduler for 3 s under CPU load, with the guard on =="
stress-ng --cpu 2 --timeout 20s -q &
load=$!
schedagent policies load tests/vm/fixtures/minimal.bpf.c --duration 3
kill "$load" 2>/dev/null || true
echo
echo "== status afterwards =="
schedagent status
