// SPDX-License-Identifier: GPL-2.0
/*
 * jobset: a batch job set written for schedagent.
 *
 * Starts many short CPU jobs and a few long ones at the same instant, each a child
 * process that burns a fixed amount of its own CPU time, and waits for all of them.
 * Prints one JSON object: makespan, mean completion time, the CPU each job really
 * used, and the lower bound max(total CPU work / CPUs, longest job) that no
 * scheduler can beat.
 *
 * usage: jobset [-s short_jobs] [-S short_ms] [-l long_jobs] [-L long_ms]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_JOBS 1024

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static volatile uint64_t sink;

/* Burn ms milliseconds of this process's own CPU time. */
static void burn(double ms)
{
	uint64_t until = now_ns(CLOCK_PROCESS_CPUTIME_ID) + (uint64_t)(ms * 1e6);
	uint64_t x = sink;

	while (now_ns(CLOCK_PROCESS_CPUTIME_ID) < until)
		for (int i = 0; i < 2000; i++)
			x = x * 6364136223846793005ull + 1442695040888963407ull;
	sink = x;
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-s short_jobs] [-S short_ms] [-l long_jobs] [-L long_ms] "
		"(1..%d jobs in all, durations > 0)\n", argv0, MAX_JOBS);
	exit(2);
}

int main(int argc, char **argv)
{
	int n_short = 40, n_long = 1, opt;
	double short_ms = 20.0, long_ms = 400.0;

	while ((opt = getopt(argc, argv, "s:S:l:L:")) != -1) {
		switch (opt) {
		case 's': n_short = atoi(optarg); break;
		case 'S': short_ms = atof(optarg); break;
		case 'l': n_long = atoi(optarg); break;
		case 'L': long_ms = atof(optarg); break;
		default: usage(argv[0]);
		}
	}
	int n = n_short + n_long;
	if (n_short < 0 || n_long < 0 || n < 1 || n > MAX_JOBS || short_ms <= 0 || long_ms <= 0)
		usage(argv[0]);

	static pid_t pids[MAX_JOBS];
	static double done_s[MAX_JOBS], cpu_s[MAX_JOBS];
	uint64_t start = now_ns(CLOCK_MONOTONIC);

	/* long jobs first, so they are not simply favoured by creation order */
	for (int i = 0; i < n; i++) {
		double ms = i < n_long ? long_ms : short_ms;
		pid_t pid = fork();

		if (pid < 0) {
			perror("jobset: fork");
			for (int j = 0; j < i; j++)
				kill(pids[j], SIGKILL);
			return 1;
		}
		if (pid == 0) {
			burn(ms);
			_exit(0);
		}
		pids[i] = pid;
	}
	int finished = 0, failed = 0;
	while (finished + failed < n) {
		int status;
		struct rusage ru;
		pid_t pid = wait4(-1, &status, 0, &ru);

		if (pid < 0) {
			if (errno == EINTR)
				continue;
			perror("jobset: wait4");
			return 1;
		}
		double t = (double)(now_ns(CLOCK_MONOTONIC) - start) / 1e9;
		for (int i = 0; i < n; i++) {
			if (pids[i] != pid)
				continue;
			done_s[i] = t;
			cpu_s[i] = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
				   (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
		}
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
			finished++;
		else
			failed++;
	}

	double makespan = 0, sum_done = 0, total_cpu = 0, longest = 0, short_sum = 0;
	for (int i = 0; i < n; i++) {
		makespan = done_s[i] > makespan ? done_s[i] : makespan;
		sum_done += done_s[i];
		total_cpu += cpu_s[i];
		longest = cpu_s[i] > longest ? cpu_s[i] : longest;
		if (i >= n_long)
			short_sum += done_s[i];
	}
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	double bound = total_cpu / (double)cpus > longest ? total_cpu / (double)cpus : longest;
	printf("{\"jobs\": %d, \"finished\": %d, \"failed\": %d, \"short_jobs\": %d, "
	       "\"long_jobs\": %d, \"short_ms\": %.1f, \"long_ms\": %.1f, \"cpus\": %ld, "
	       "\"makespan_s\": %.4f, \"mean_completion_s\": %.4f, "
	       "\"mean_short_completion_s\": %.4f, \"total_cpu_s\": %.4f, "
	       "\"longest_job_cpu_s\": %.4f, \"lower_bound_s\": %.4f}\n",
	       n, finished, failed, n_short, n_long, short_ms, long_ms, cpus, makespan,
	       sum_done / n, n_short ? short_sum / n_short : 0.0, total_cpu, longest, bound);
	return failed ? 1 : 0;
}
