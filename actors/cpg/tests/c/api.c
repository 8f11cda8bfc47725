/*
 * api.c - the CPG API's contract, checked call by call against one running cohort agent.
 *
 * Built against Debian's <corosync/cpg.h>, linked with cohort's library. Prints "CHECK <name> ok" or
 * "CHECK <name> FAILED ..." per check and "CHECKS <n> failed <f>" at the end; exits non-zero when any
 * failed. The integration test compares the list of check names too, so none can go missing.
 *
 * The layout asserts below pin the sizes and offsets the library's Rust side was written for
 * (src/ffi.rs, whose unit test asserts the same numbers).
 */
#define _GNU_SOURCE
#include <corosync/cpg.h>
#include <cohort/cpg_ext.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(cpg_handle_t) == 8, "cpg_handle_t");
_Static_assert(sizeof(cs_error_t) == 4, "cs_error_t");
_Static_assert(sizeof(struct cpg_name) == 132, "cpg_name");
_Static_assert(offsetof(struct cpg_name, value) == 4, "cpg_name.value");
_Static_assert(sizeof(struct cpg_address) == 12, "cpg_address");
_Static_assert(sizeof(struct cpg_ring_id) == 16, "cpg_ring_id");
_Static_assert(offsetof(struct cpg_ring_id, seq) == 8, "cpg_ring_id.seq");
_Static_assert(sizeof(cpg_model_v1_data_t) == 40, "cpg_model_v1_data_t");
_Static_assert(offsetof(cpg_model_v1_data_t, cpg_deliver_fn) == 8, "v1.deliver");
_Static_assert(offsetof(cpg_model_v1_data_t, flags) == 32, "v1.flags");
_Static_assert(sizeof(cpg_callbacks_t) == 16, "cpg_callbacks_t");
_Static_assert(sizeof(struct cpg_iteration_description_t) == 140, "iteration description");
_Static_assert(sizeof(struct iovec) == 16, "iovec");
_Static_assert(CS_OK == 1 && CS_ERR_LIBRARY == 2 && CS_ERR_TRY_AGAIN == 6 && CS_ERR_INVALID_PARAM == 7 &&
		       CS_ERR_BAD_HANDLE == 9 && CS_ERR_NOT_EXIST == 12 && CS_ERR_NAME_TOO_LONG == 13 &&
		       CS_ERR_EXIST == 14 && CS_ERR_TOO_BIG == 26 && CS_ERR_NO_SECTIONS == 27,
	       "cs_error_t values");

static int checks, failed;
static unsigned confchgs, delivered, own_delivered;
static char last_data[256];
static unsigned my_node;

static void check(const char *name, long got, long want)
{
	checks++;
	if (got == want) {
		printf("CHECK %s ok\n", name);
	} else {
		failed++;
		printf("CHECK %s FAILED got %ld want %ld\n", name, got, want);
	}
	fflush(stdout);
}

static void deliver_cb(cpg_handle_t handle, const struct cpg_name *g, uint32_t nodeid, uint32_t pid, void *msg,
		       size_t len)
{
	(void)handle; (void)g;
	delivered++;
	if (nodeid == my_node && pid == (uint32_t)getpid()) own_delivered++;
	size_t n = len < sizeof last_data - 1 ? len : sizeof last_data - 1;
	memcpy(last_data, msg, n);
	last_data[n] = 0;
}

static void confchg_cb(cpg_handle_t handle, const struct cpg_name *g, const struct cpg_address *ml, size_t mn,
		       const struct cpg_address *ll, size_t ln, const struct cpg_address *jl, size_t jn)
{
	(void)handle; (void)g; (void)ml; (void)mn; (void)ll; (void)ln; (void)jl; (void)jn;
	confchgs++;
}

static void name(struct cpg_name *n, const char *s)
{
	n->length = (uint32_t)strlen(s);
	memcpy(n->value, s, n->length);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Dispatches everything due until cond() holds or 10 s pass; returns whether it holds. */
static int wait_for(cpg_handle_t h, int (*cond)(void))
{
	int fd;
	cpg_fd_get(h, &fd);
	double end = now_s() + 10;
	while (!cond() && now_s() < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 100) == 1) cpg_dispatch(h, CS_DISPATCH_ALL);
	}
	return cond();
}

static long sent_total;
static int all_own(void) { return own_delivered >= sent_total; }

int main(void)
{
	cpg_callbacks_t cb = { .cpg_deliver_fn = deliver_cb, .cpg_confchg_fn = confchg_cb };
	cpg_handle_t h, h2;
	struct cpg_name g, other;
	name(&g, "api-group");
	name(&other, "api-other");

	/* No agent behind the socket: CS_ERR_LIBRARY. */
	char *real = getenv("COHORT_CLIENT_SOCKET");
	char *saved = real ? strdup(real) : NULL;
	setenv("COHORT_CLIENT_SOCKET", "/nonexistent/cohort.sock", 1);
	check("initialize_without_agent_is_library", cpg_initialize(&h, &cb), CS_ERR_LIBRARY);
	if (saved) setenv("COHORT_CLIENT_SOCKET", saved, 1); else unsetenv("COHORT_CLIENT_SOCKET");

	check("initialize_null_handle_is_invalid_param", cpg_initialize(NULL, &cb), CS_ERR_INVALID_PARAM);
	check("initialize", cpg_initialize(&h, &cb), CS_OK);
	check("bad_handle_join", cpg_join(h + 1000, &g), CS_ERR_BAD_HANDLE);
	check("bad_handle_dispatch", cpg_dispatch(h + 1000, CS_DISPATCH_ALL), CS_ERR_BAD_HANDLE);
	check("local_get", cpg_local_get(h, &my_node), CS_OK);
	check("local_get_is_a_node_id", my_node >= 1, 1);

	void *ctx = NULL;
	check("context_set", cpg_context_set(h, &checks), CS_OK);
	check("context_get", cpg_context_get(h, &ctx), CS_OK);
	check("context_round_trips", ctx == (void *)&checks, 1);

	uint32_t max = 0;
	check("max_atomic_msgsize_get", cpg_max_atomic_msgsize_get(h, &max), CS_OK);
	check("max_atomic_msgsize_is_1_MiB_less_header", (long)max, 1024 * 1024 - 5);

	check("dispatch_bad_mode_is_invalid_param", cpg_dispatch(h, 99), CS_ERR_INVALID_PARAM);
	check("dispatch_all_with_nothing_due_is_ok", cpg_dispatch(h, CS_DISPATCH_ALL), CS_OK);
	check("dispatch_one_nonblocking_with_nothing_due_is_ok", cpg_dispatch(h, CS_DISPATCH_ONE_NONBLOCKING), CS_OK);

	struct iovec iov = { .iov_base = "x", .iov_len = 1 };
	check("mcast_before_join_is_not_exist", cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1), CS_ERR_NOT_EXIST);
	check("leave_unjoined_is_not_exist", cpg_leave(h, &g), CS_ERR_NOT_EXIST);
	check("join_null_name_is_invalid_param", cpg_join(h, NULL), CS_ERR_INVALID_PARAM);
	struct cpg_name empty = { .length = 0 };
	check("join_empty_name_is_invalid_param", cpg_join(h, &empty), CS_ERR_INVALID_PARAM);
	struct cpg_name longer = { .length = 200 };
	check("join_long_name_is_name_too_long", cpg_join(h, &longer), CS_ERR_NAME_TOO_LONG);

	/* The descriptor polls readable once the join's confchg is due, not before. */
	int fd = -1;
	check("fd_get", cpg_fd_get(h, &fd), CS_OK);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	check("fd_not_readable_before_join", poll(&p, 1, 0), 0);
	check("join", cpg_join(h, &g), CS_OK);
	check("second_join_same_group_is_exist", cpg_join(h, &g), CS_ERR_EXIST);
	check("second_join_other_group_is_exist", cpg_join(h, &other), CS_ERR_EXIST);
	check("fd_readable_when_confchg_due", poll(&p, 1, 10000), 1);
	check("dispatch_one_runs_the_confchg", cpg_dispatch(h, CS_DISPATCH_ONE), CS_OK);
	check("one_confchg_seen", (long)confchgs, 1);

	struct cpg_address ml[CPG_MEMBERS_MAX];
	int n = CPG_MEMBERS_MAX;
	check("membership_get", cpg_membership_get(h, &g, ml, &n), CS_OK);
	check("membership_is_self", n == 1 && ml[0].nodeid == my_node && ml[0].pid == (uint32_t)getpid(), 1);
	n = CPG_MEMBERS_MAX;
	check("membership_get_other_is_not_exist", cpg_membership_get(h, &other, ml, &n), CS_ERR_NOT_EXIST);

	/* A second handle of this process may not own the same group on this node (cohort: one local owner). */
	check("second_handle_initialize", cpg_initialize(&h2, &cb), CS_OK);
	check("second_handle_same_group_is_exist", cpg_join(h2, &g), CS_ERR_EXIST);
	check("second_handle_finalize", cpg_finalize(h2), CS_OK);
	check("finalize_twice_is_bad_handle", cpg_finalize(h2), CS_ERR_BAD_HANDLE);

	check("mcast_unordered_is_invalid_param", cpg_mcast_joined(h, CPG_TYPE_UNORDERED, &iov, 1), CS_ERR_INVALID_PARAM);
	static char big[2 * 1024 * 1024];
	struct iovec bigv = { .iov_base = big, .iov_len = sizeof big };
	check("mcast_too_big_is_too_big", cpg_mcast_joined(h, CPG_TYPE_AGREED, &bigv, 1), CS_ERR_TOO_BIG);

	/* Flow control: multicasting without dispatching fills the window; TRY_AGAIN says so, and
	 * cpg_flow_control_state_get agrees at that moment. Every message accepted is delivered. */
	long sent = 0;
	cs_error_t e = CS_OK;
	cpg_flow_control_state_t fc = CPG_FLOW_CONTROL_DISABLED;
	char msg[64];
	while (sent < 100000) {
		snprintf(msg, sizeof msg, "flow-%ld", sent);
		struct iovec v = { .iov_base = msg, .iov_len = strlen(msg) };
		e = cpg_mcast_joined(h, sent % 2 ? CPG_TYPE_SAFE : CPG_TYPE_AGREED, &v, 1);
		if (e != CS_OK) break;
		sent++;
	}
	if (e == CS_ERR_TRY_AGAIN) cpg_flow_control_state_get(h, &fc);
	check("flow_control_try_again", e, CS_ERR_TRY_AGAIN);
	check("flow_control_state_enabled_at_try_again", fc, CPG_FLOW_CONTROL_ENABLED);
	sent_total = sent;
	check("every_accepted_message_is_delivered", wait_for(h, all_own), 1);
	check("delivered_count_is_sent_count", (long)delivered, sent);
	cpg_flow_control_state_get(h, &fc);
	check("flow_control_state_disabled_after", fc, CPG_FLOW_CONTROL_DISABLED);

	/* Zero-copy calls: an ordinary buffer, sent with one copy. */
	void *buf = NULL;
	check("zcb_alloc", cpg_zcb_alloc(h, 32, &buf), CS_OK);
	strcpy(buf, "zero-copy");
	check("zcb_mcast_joined", cpg_zcb_mcast_joined(h, CPG_TYPE_SAFE, buf, strlen(buf)), CS_OK);
	sent_total++;
	check("zcb_message_delivered", wait_for(h, all_own) && !strcmp(last_data, "zero-copy"), 1);
	check("zcb_free", cpg_zcb_free(h, buf), CS_OK);
	check("zcb_free_twice_is_invalid_param", cpg_zcb_free(h, buf), CS_ERR_INVALID_PARAM);

	/* Iteration: the group, and this process in it. */
	cpg_iteration_handle_t it;
	struct cpg_iteration_description_t d;
	check("iteration_initialize_one_group", cpg_iteration_initialize(h, CPG_ITERATION_ONE_GROUP, &g, &it), CS_OK);
	check("iteration_next", cpg_iteration_next(it, &d), CS_OK);
	check("iteration_entry_is_self", d.nodeid == my_node && d.pid == (uint32_t)getpid() &&
						  d.group.length == g.length && !memcmp(d.group.value, g.value, g.length), 1);
	check("iteration_end_is_no_sections", cpg_iteration_next(it, &d), CS_ERR_NO_SECTIONS);
	check("iteration_finalize", cpg_iteration_finalize(it), CS_OK);
	check("iteration_name_only", cpg_iteration_initialize(h, CPG_ITERATION_NAME_ONLY, NULL, &it), CS_OK);
	int found = 0;
	while (cpg_iteration_next(it, &d) == CS_OK)
		if (d.group.length == g.length && !memcmp(d.group.value, g.value, g.length)) found = 1;
	cpg_iteration_finalize(it);
	check("iteration_name_only_lists_the_group", found, 1);

	/* Leave: this process's own confchg follows, then mcast is NOT_EXIST. */
	check("leave", cpg_leave(h, &g), CS_OK);
	check("leave_twice_is_not_exist", cpg_leave(h, &g), CS_ERR_NOT_EXIST);
	check("mcast_after_leave_is_not_exist", cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1), CS_ERR_NOT_EXIST);
	check("dispatch_blocking_one_for_own_leave", cpg_dispatch(h, CS_DISPATCH_ONE), CS_OK);
	check("leave_confchg_seen", (long)confchgs, 2);
	check("rejoin_after_leave", cpg_join(h, &other), CS_OK);
	check("finalize", cpg_finalize(h), CS_OK);
	check("after_finalize_is_bad_handle", cpg_dispatch(h, CS_DISPATCH_ALL), CS_ERR_BAD_HANDLE);

	printf("CHECKS %d failed %d\n", checks, failed);
	return failed != 0;
}
