// SPDX-License-Identifier: GPL-2.0
/*
 * wakelat: a small request/worker latency benchmark written for schedagent.
 *
 * A dispatcher thread issues requests on an open-loop schedule (a fixed rate, so a
 * slow system cannot hide its delay by issuing fewer requests) and hands each one to
 * a pool of worker threads through a queue. Each request burns a fixed amount of
 * CPU, calibrated against the thread's own CPU clock so preemption does not change
 * the amount of work.
 *
 * Two latencies are recorded for every request:
 *   wakeup:  from the dispatcher signalling a sleeping worker to that worker running;
 *   request: from the request's scheduled arrival time to its completion.
 * The result is one JSON object on stdout, including each worker's completed count,
 * so a harness can tell when a thread made no progress.
 *
 * With -l PATH, each completed request is also appended to PATH as one line, like a
 * server's access log: "<request> <worker> <µs since its scheduled arrival> <µs from
 * the worker taking it to its completion>". The last field is what a server's access
 * log records (time spent serving), and it does not carry a backlog from one moment
 * to the next, so a watcher such as `schedagent tune --latency-log PATH` can compare
 * short windows live.
 *
 * usage: wakelat [-w workers] [-n requests] [-r rate_per_s] [-b burn_us] [-l log]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 256

struct request {
	uint64_t arrival_ns;	/* scheduled arrival */
	uint64_t posted_ns;	/* when the dispatcher queued it */
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t ready;
	struct request *queue;	/* ring of n_requests entries, never wraps */
	long head, tail;	/* head: next to take; tail: next free */
	int sleepers;
	int done;		/* dispatcher finished issuing */
} q = { .lock = PTHREAD_MUTEX_INITIALIZER, .ready = PTHREAD_COND_INITIALIZER };

static long n_requests = 2000;
static int n_workers = 4;
static double rate = 500.0;
static double burn_us = 200.0;
static double loops_per_us;

static uint64_t *wake_lat;	/* ns, one slot per request, UINT64_MAX when not a wakeup */
static uint64_t *req_lat;	/* ns, one slot per request */
static long completed[MAX_WORKERS];
static int log_fd = -1;		/* -l: the access log, opened O_APPEND */

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static volatile uint64_t sink;

static void spin(long loops)
{
	uint64_t x = sink;

	for (long i = 0; i < loops; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		__asm__ volatile("" : "+r"(x));	/* one multiply-add per loop, not folded */
	}
	sink = x;
}

/* Loops per microsecond of this thread's own CPU time. */
static double calibrate(void)
{
	long loops = 1000;

	for (;;) {
		uint64_t t0 = now_ns(CLOCK_THREAD_CPUTIME_ID);

		spin(loops);
		uint64_t dt = now_ns(CLOCK_THREAD_CPUTIME_ID) - t0;
		if (dt >= 20000000ull)	/* 20 ms of CPU is enough */
			return (double)loops / ((double)dt / 1000.0);
		loops *= 2;
	}
}

static void *worker(void *arg)
{
	long id = (long)arg;

	pthread_mutex_lock(&q.lock);
	for (;;) {
		int slept = 0;

		while (q.head == q.tail && !q.done) {
			q.sleepers++;
			pthread_cond_wait(&q.ready, &q.lock);
			q.sleepers--;
			slept = 1;
		}
		if (q.head == q.tail && q.done)
			break;
		long idx = q.head++;
		struct request r = q.queue[idx];
		pthread_mutex_unlock(&q.lock);

		uint64_t start = now_ns(CLOCK_MONOTONIC);
		wake_lat[idx] = slept ? start - r.posted_ns : UINT64_MAX;
		spin((long)(burn_us * loops_per_us));
		uint64_t end = now_ns(CLOCK_MONOTONIC);
		req_lat[idx] = end - r.arrival_ns;
		completed[id]++;
		if (log_fd >= 0)	/* one short write per line: O_APPEND keeps lines whole */
			dprintf(log_fd, "%ld %ld %.1f %.1f\n", idx, id, (double)req_lat[idx] / 1000.0,
				(double)(end - start) / 1000.0);
		pthread_mutex_lock(&q.lock);
	}
	pthread_mutex_unlock(&q.lock);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorts vals in place; prints {"count":..,"p50":..} in microseconds. */
static void print_pcts(const char *name, uint64_t *vals, long n)
{
	long m = 0;

	for (long i = 0; i < n; i++)
		if (vals[i] != UINT64_MAX)
			vals[m++] = vals[i];
	qsort(vals, m, sizeof(*vals), cmp_u64);
	printf("\"%s\": {\"count\": %ld", name, m);
	static const struct { const char *k; double p; } pct[] = {
		{ "p50", 0.50 }, { "p90", 0.90 }, { "p99", 0.99 }, { "p999", 0.999 }, { "max", 1.0 },
	};
	for (unsigned i = 0; i < sizeof(pct) / sizeof(pct[0]); i++) {
		double v = 0.0;

		if (m) {
			long at = (long)(pct[i].p * (double)(m - 1) + 0.5);
			v = (double)vals[at] / 1000.0;
		}
		printf(", \"%s\": %.1f", pct[i].k, v);
	}
	printf("}");
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-w workers 1..%d] [-n requests >0] [-r rate_per_s >0] "
		"[-b burn_us >0] [-l access_log]\n", argv0, MAX_WORKERS);
	exit(2);
}

int main(int argc, char **argv)
{
	int opt;

	while ((opt = getopt(argc, argv, "w:n:r:b:l:")) != -1) {
		switch (opt) {
		case 'w': n_workers = atoi(optarg); break;
		case 'n': n_requests = atol(optarg); break;
		case 'r': rate = atof(optarg); break;
		case 'b': burn_us = atof(optarg); break;
		case 'l':
			log_fd = open(optarg, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
			if (log_fd < 0) {
				fprintf(stderr, "wakelat: cannot open %s: %s\n", optarg, strerror(errno));
				return 2;
			}
			break;
		default: usage(argv[0]);
		}
	}
	if (n_workers < 1 || n_workers > MAX_WORKERS || n_requests < 1 || rate <= 0 || burn_us <= 0)
		usage(argv[0]);

	loops_per_us = calibrate();
	q.queue = calloc(n_requests, sizeof(*q.queue));
	wake_lat = calloc(n_requests, sizeof(*wake_lat));
	req_lat = calloc(n_requests, sizeof(*req_lat));
	if (!q.queue || !wake_lat || !req_lat) {
		perror("wakelat: calloc");
		return 1;
	}
	pthread_t tids[MAX_WORKERS];
	for (long i = 0; i < n_workers; i++) {
		int err = pthread_create(&tids[i], NULL, worker, (void *)i);
		if (err) {
			fprintf(stderr, "wakelat: pthread_create: %s\n", strerror(err));
			return 1;
		}
	}

	uint64_t start = now_ns(CLOCK_MONOTONIC);
	uint64_t period = (uint64_t)(1e9 / rate);
	for (long i = 0; i < n_requests; i++) {
		uint64_t at = start + (uint64_t)i * period;
		struct timespec ts = { (time_t)(at / 1000000000ull), (long)(at % 1000000000ull) };

		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
		pthread_mutex_lock(&q.lock);
		q.queue[q.tail].arrival_ns = at;
		q.queue[q.tail].posted_ns = now_ns(CLOCK_MONOTONIC);
		q.tail++;
		if (q.sleepers)
			pthread_cond_signal(&q.ready);
		pthread_mutex_unlock(&q.lock);
	}
	pthread_mutex_lock(&q.lock);
	q.done = 1;
	pthread_cond_broadcast(&q.ready);
	pthread_mutex_unlock(&q.lock);
	for (int i = 0; i < n_workers; i++)
		pthread_join(tids[i], NULL);
	double elapsed = (double)(now_ns(CLOCK_MONOTONIC) - start) / 1e9;

	long total = 0;
	printf("{\"workers\": %d, \"requests\": %ld, \"rate\": %.1f, \"burn_us\": %.1f, "
	       "\"loops_per_us\": %.2f, \"elapsed_s\": %.4f, ", n_workers, n_requests, rate,
	       burn_us, loops_per_us, elapsed);
	printf("\"per_worker\": [");
	for (int i = 0; i < n_workers; i++) {
		printf("%s%ld", i ? ", " : "", completed[i]);
		total += completed[i];
	}
	printf("], \"completed\": %ld, \"requests_per_s\": %.1f, ", total, (double)total / elapsed);
	print_pcts("wakeup_us", wake_lat, n_requests);
	printf(", ");
	print_pcts("request_us", req_lat, n_requests);
	printf("}\n");
	return total == n_requests ? 0 : 1;
}
