#!/bin/sh
# The demo, run inside the sched_ext testbed by `make demo`.
# Python runs under CPU emulation here, so each command takes a few seconds to start.
set -u
# Each stage says how long the one before it took, and the end prints them all, so a slow
# stage on a fresh machine (a compile, a boot) shows where the time went.
t0=$(date +%s); last=$t0; prev=""; times=""
lap() {
    now=$(date +%s)
    [ -n "$prev" ] && times="$times$(printf '  %-4s %5d s' "$prev" $((now - last)))
"
    last=$now
}
step() {
    lap
    prev=${1%%.*}
    printf '\n== %s ==   (%d s into the demo)\n' "$*" $((last - t0))
}
summary() {
    lap
    printf '\n== stage times (guest wall clock, under emulation) ==\n%s  total %d s\n' \
        "$times" $((last - t0))
}
cleanup() { kill "$hogs" "$client" 2>/dev/null; }
hogs=""; client=""
trap cleanup EXIT
mkdir -p out

step "1. what this machine can do"
schedagent doctor

step "2. the policy repository and the benchmark workloads"
schedagent policies list
schedagent bench list

step "3. the mixed workload: a request server that needs ~1.2 CPUs, beside 4 CPU hogs on 2 CPUs"
wakelat=$(python3 -c 'from schedagent.bench import workload as w; print(w.build(w.resolve("mixed")))')
stress-ng --cpu 4 --timeout 1800s -q &
hogs=$!
rm -f out/wakelat-access.log
"$wakelat" -w 4 -n 10000000 -r 400 -b 3000 -l out/wakelat-access.log >/dev/null &
client=$!
echo "client pid $client (wakelat), hogs pid $hogs (stress-ng); under EEVDF the hogs get a fair"
echo "share, so the client falls behind. The client logs each request's latency to"
echo "out/wakelat-access.log, as a server's access log would. Now tune for the client, with"
echo "the offline planner, judging each window on the p99 of the latencies logged in it:"

step "4. schedagent tune $client: profile, SLO, EEVDF's knobs and policies through the gates, live A/B vs EEVDF, the least intrusive winner kept"
schedagent tune "$client" --latency-log out/wakelat-access.log --observe-s 3 --window-s 2 \
    --rounds 4 --budget-s 900

step "4b. the same machine through MCP, as a coding agent sees it (a real MCP client session)"
python3 scripts/mcp-demo.py "$client"
kill "$client" "$hogs" 2>/dev/null
client=""; hogs=""

step "5. the same question asked by the benchmark: the client's own p99, target beside what an administrator would try (nice, SCHED_FIFO)"
schedagent bench run mixed --policy target --arm nice:-10 --arm fifo:1 --runs 4 --quick --md out/demo-mixed.md \
    --plot out/demo-mixed.png --out-dir out/bench
echo "plot: $(pwd)/out/demo-mixed.png   table: $(pwd)/out/demo-mixed.md"

step "6. a faulty scheduler: the kernel ejects it, the guard reports why, EEVDF is back"
schedagent policies load tests/vm/fixtures/error.bpf.c --set error_after=100 --duration 30
echo "(exit code $?: non-zero because the kernel ejected the scheduler)"

step "7. status and the recorded events"
schedagent status
echo "sched_ext state: $(cat /sys/kernel/sched_ext/state)"
summary
