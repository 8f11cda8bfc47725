/*
 * member.c - a CPG group member driven line by line on stdin, for the test suite.
 *
 * Built against Debian's <corosync/cpg.h>, linked with cohort's library. Prints one line per event:
 *   READY node=N pid=P
 *   TOTEM ring=N.S members=1,2,3
 *   CONFCHG group=G members=N/P,... left=N/P:R,... joined=N/P:R,...
 *   DELIVER group=G from=N/P data=TEXT
 *   EVENT kind=K reason=R nodes=1,2        (cohort's extension callback)
 *   RC cmd=CMD rc=RC [extra]               (the answer to each stdin command)
 *   DISPATCH_END rc=RC                      (the dispatch loop ended: connection lost)
 * Commands: join G | leave G | send agreed|safe TEXT | burst agreed|safe COUNT PREFIX | members G |
 *           flow | quit
 * With argv[2] "state", the member keeps a state (the number of messages delivered to it) and takes
 * part in cohort's state transfer (cpg_ext.h): it provides "delivered=N" to joiners, and prints
 *   APPLY from=N state=TEXT
 * when it joins and receives a state. The command "count" prints RC cmd=count rc=1 delivered=N.
 * argv[1] is the dispatch mode: all (poll + CS_DISPATCH_ALL), one (poll + CS_DISPATCH_ONE),
 * nonblocking (poll + CS_DISPATCH_ONE_NONBLOCKING until nothing is due), blocking (a second thread
 * in CS_DISPATCH_BLOCKING; the main thread only reads commands, so the handle is used from two
 * threads at once).
 */
#define _GNU_SOURCE
#include <corosync/cpg.h>
#include <cohort/cpg_ext.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static cpg_handle_t h;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void out(const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&out_lock);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

static void list(char *buf, size_t room, const struct cpg_address *l, size_t n, int reasons)
{
	size_t used = 0;
	buf[0] = 0;
	for (size_t i = 0; i < n && used < room; i++) {
		if (reasons)
			used += snprintf(buf + used, room - used, "%s%u/%u:%u", i ? "," : "", l[i].nodeid,
					 l[i].pid, l[i].reason);
		else
			used += snprintf(buf + used, room - used, "%s%u/%u", i ? "," : "", l[i].nodeid, l[i].pid);
	}
}

static long delivered;
static char state_buf[64];

static size_t provide_cb(cpg_handle_t handle, const struct cpg_name *g, uint32_t joiner, const void **state)
{
	(void)handle; (void)g;
	snprintf(state_buf, sizeof state_buf, "delivered=%ld", delivered);
	out("PROVIDE to=%u state=%s\n", joiner, state_buf);
	*state = state_buf;
	return strlen(state_buf);
}

static void apply_cb(cpg_handle_t handle, const struct cpg_name *g, uint32_t provider, const void *state,
		     size_t len)
{
	(void)handle; (void)g;
	char text[64];
	snprintf(text, sizeof text, "%.*s", (int)len, (const char *)state);
	sscanf(text, "delivered=%ld", &delivered);
	out("APPLY from=%u state=%s\n", provider, text);
}

static void deliver_cb(cpg_handle_t handle, const struct cpg_name *g, uint32_t nodeid, uint32_t pid,
		       void *msg, size_t len)
{
	(void)handle;
	delivered++;
	out("DELIVER group=%.*s from=%u/%u data=%.*s\n", (int)g->length, g->value, nodeid, pid, (int)len,
	    (const char *)msg);
}

static void confchg_cb(cpg_handle_t handle, const struct cpg_name *g, const struct cpg_address *ml,
		       size_t mn, const struct cpg_address *ll, size_t ln, const struct cpg_address *jl,
		       size_t jn)
{
	char m[2048], l[2048], j[2048];
	(void)handle;
	list(m, sizeof m, ml, mn, 0);
	list(l, sizeof l, ll, ln, 1);
	list(j, sizeof j, jl, jn, 1);
	out("CONFCHG group=%.*s members=%s left=%s joined=%s\n", (int)g->length, g->value, m, l, j);
}

static void totem_cb(cpg_handle_t handle, struct cpg_ring_id ring, uint32_t n, const uint32_t *ml)
{
	char m[1024];
	size_t used = 0;
	(void)handle;
	m[0] = 0;
	for (uint32_t i = 0; i < n && used < sizeof m; i++)
		used += snprintf(m + used, sizeof m - used, "%s%u", i ? "," : "", ml[i]);
	out("TOTEM ring=%u.%llu members=%s\n", ring.nodeid, (unsigned long long)ring.seq, m);
}

static void event_cb(cpg_handle_t handle, cohort_cpg_event_t ev, const char *reason, const uint32_t *nodes,
		     size_t n)
{
	char m[1024];
	size_t used = 0;
	(void)handle;
	m[0] = 0;
	for (size_t i = 0; i < n && used < sizeof m; i++)
		used += snprintf(m + used, sizeof m - used, "%s%u", i ? "," : "", nodes[i]);
	out("EVENT kind=%d reason=%s nodes=%s\n", (int)ev, reason, m);
}

static int mode_flag = CS_DISPATCH_ALL;

static void *blocking_loop(void *arg)
{
	(void)arg;
	cs_error_t e = cpg_dispatch(h, CS_DISPATCH_BLOCKING);
	out("DISPATCH_END rc=%d\n", e);
	return NULL;
}

static int dispatch_due(void)
{
	cs_error_t e;
	if (mode_flag == CS_DISPATCH_ONE_NONBLOCKING) {
		/* one at a time until the descriptor says nothing is due */
		int fd;
		cpg_fd_get(h, &fd);
		do {
			e = cpg_dispatch(h, CS_DISPATCH_ONE_NONBLOCKING);
			if (e != CS_OK) break;
			struct pollfd p = { .fd = fd, .events = POLLIN };
			if (poll(&p, 1, 0) != 1) break;
		} while (1);
	} else {
		e = cpg_dispatch(h, mode_flag);
	}
	if (e != CS_OK) {
		out("DISPATCH_END rc=%d\n", e);
		return -1;
	}
	return 0;
}

static void set_name(struct cpg_name *n, const char *s)
{
	n->length = (uint32_t)strlen(s);
	memcpy(n->value, s, n->length);
}

static cs_error_t send_one(cpg_guarantee_t g, const char *text, int fd)
{
	struct iovec iov[2];
	size_t half = strlen(text) / 2;
	/* two iovecs, so gathering is exercised */
	iov[0].iov_base = (void *)text;
	iov[0].iov_len = half;
	iov[1].iov_base = (void *)(text + half);
	iov[1].iov_len = strlen(text) - half;
	for (;;) {
		cs_error_t e = cpg_mcast_joined(h, g, iov, 2);
		if (e != CS_ERR_TRY_AGAIN) return e;
		if (mode_flag == CS_DISPATCH_BLOCKING) {
			usleep(1000);
		} else {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			poll(&p, 1, 10);
			if (dispatch_due() < 0) return CS_ERR_LIBRARY;
		}
	}
}

static void command(char *line, int fd)
{
	char a[256], b[256], c[256];
	struct cpg_name n;
	line[strcspn(line, "\n")] = 0;
	if (sscanf(line, "join %255s", a) == 1) {
		set_name(&n, a);
		out("RC cmd=join rc=%d\n", cpg_join(h, &n));
	} else if (sscanf(line, "leave %255s", a) == 1) {
		set_name(&n, a);
		out("RC cmd=leave rc=%d\n", cpg_leave(h, &n));
	} else if (sscanf(line, "send %255s %255s", a, b) == 2) {
		cpg_guarantee_t g = strcmp(a, "safe") ? CPG_TYPE_AGREED : CPG_TYPE_SAFE;
		out("RC cmd=send rc=%d\n", send_one(g, b, fd));
	} else if (sscanf(line, "burst %255s %255s %255s", a, b, c) == 3) {
		cpg_guarantee_t g = strcmp(a, "safe") ? CPG_TYPE_AGREED : CPG_TYPE_SAFE;
		long count = atol(b);
		cs_error_t e = CS_OK;
		char text[300];
		for (long i = 0; i < count && e == CS_OK; i++) {
			snprintf(text, sizeof text, "%s-%ld", c, i);
			e = send_one(g, text, fd);
		}
		out("RC cmd=burst rc=%d\n", e);
	} else if (sscanf(line, "members %255s", a) == 1) {
		struct cpg_address ml[CPG_MEMBERS_MAX];
		int count = CPG_MEMBERS_MAX;
		char m[2048];
		set_name(&n, a);
		cs_error_t e = cpg_membership_get(h, &n, ml, &count);
		list(m, sizeof m, ml, e == CS_OK ? (size_t)count : 0, 0);
		out("RC cmd=members rc=%d members=%s\n", e, m);
	} else if (!strcmp(line, "count")) {
		out("RC cmd=count rc=1 delivered=%ld\n", delivered);
	} else if (!strcmp(line, "flow")) {
		cpg_flow_control_state_t s;
		cs_error_t e = cpg_flow_control_state_get(h, &s);
		out("RC cmd=flow rc=%d state=%d\n", e, (int)s);
	} else if (!strcmp(line, "quit")) {
		out("RC cmd=quit rc=%d\n", cpg_finalize(h));
		exit(0);
	} else {
		out("RC cmd=unknown rc=0\n");
	}
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "all";
	if (!strcmp(mode, "one")) mode_flag = CS_DISPATCH_ONE;
	else if (!strcmp(mode, "nonblocking")) mode_flag = CS_DISPATCH_ONE_NONBLOCKING;
	else if (!strcmp(mode, "blocking")) mode_flag = CS_DISPATCH_BLOCKING;
	cpg_model_v1_data_t md = {
		.model = CPG_MODEL_V1,
		.cpg_deliver_fn = deliver_cb,
		.cpg_confchg_fn = confchg_cb,
		.cpg_totem_confchg_fn = totem_cb,
		.flags = CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
	};
	/* unbuffered: poll() on fd 0 must see every line that fgets has not consumed */
	setvbuf(stdin, NULL, _IONBF, 0);
	cs_error_t e = cpg_model_initialize(&h, CPG_MODEL_V1, (cpg_model_data_t *)&md, NULL);
	if (e != CS_OK) {
		out("INIT_FAILED rc=%d\n", e);
		return 1;
	}
	cohort_cpg_event_callback_set(h, event_cb);
	if (argc > 2 && !strcmp(argv[2], "state")) cohort_cpg_state_callbacks_set(h, provide_cb, apply_cb);
	unsigned int node = 0;
	cpg_local_get(h, &node);
	int fd = -1;
	cpg_fd_get(h, &fd);
	out("READY node=%u pid=%d\n", node, (int)getpid());
	pthread_t t;
	if (mode_flag == CS_DISPATCH_BLOCKING) pthread_create(&t, NULL, blocking_loop, NULL);
	char line[1024];
	int lost = 0;
	for (;;) {
		struct pollfd p[2] = { { .fd = 0, .events = POLLIN }, { .fd = fd, .events = POLLIN } };
		int np = (mode_flag == CS_DISPATCH_BLOCKING || lost) ? 1 : 2;
		if (poll(p, np, -1) < 0 && errno != EINTR) return 1;
		if (np == 2 && (p[1].revents & POLLIN))
			if (dispatch_due() < 0) lost = 1;
		if (p[0].revents & (POLLIN | POLLHUP)) {
			if (!fgets(line, sizeof line, stdin)) break;
			command(line, fd);
		}
	}
	cpg_finalize(h);
	return 0;
}
