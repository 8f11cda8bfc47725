/*
 * cohort/cpg_ext.h - what cohort tells a CPG program beyond corosync's cpg.h.
 *
 * Include it after <corosync/cpg.h> and link with -lcohort_cpg. A program that does not include it
 * is an ordinary CPG program; one that does registers one more callback, run by cpg_dispatch in the
 * same order as the CPG callbacks (between the deliveries and confchgs it was reported between).
 */
#ifndef COHORT_CPG_EXT_H
#define COHORT_CPG_EXT_H

#include <corosync/cpg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
	/* Stop changing shared state. reason: "no_quorum", "fencing", "state_transfer", or
	 * "stateful_merge_wait": a member came back with its old state (a stateful merge) and is refused
	 * until it is fenced. cpg_mcast_joined answers CS_ERR_TRY_AGAIN until COHORT_CPG_UNBLOCKED. */
	COHORT_CPG_BLOCKED = 1,
	/* No block remains. */
	COHORT_CPG_UNBLOCKED = 2,
	/* nodes[0..node_count) failed and are fenced: their recovery (their locks, their journal) may
	 * proceed now, not before. */
	COHORT_CPG_RECOVERED = 3,
	/* This node was removed from the primary view: its state is stale. Do not act on it; finalize
	 * and start again (the agent starts a new incarnation). */
	COHORT_CPG_REMOVED_SELF = 4,
	/* The node's watchdog fired: stop acting on shared state now. reason says why. */
	COHORT_CPG_SELF_FENCED = 5,
	/* The group's state was transferred at this join; reason is the group name, nodes[0] the
	 * provider. */
	COHORT_CPG_STATE_APPLIED = 6,
} cohort_cpg_event_t;

typedef void (*cohort_cpg_event_fn_t)(
	cpg_handle_t handle,
	cohort_cpg_event_t event,
	const char *reason,      /* NUL-terminated, "" when the event has none */
	const uint32_t *nodes,   /* node ids, for COHORT_CPG_RECOVERED and _STATE_APPLIED */
	size_t node_count);

/* Registers (or, with NULL, removes) the event callback of a handle. */
cs_error_t cohort_cpg_event_callback_set(cpg_handle_t handle, cohort_cpg_event_fn_t fn);

/* State transfer at join. cohort transfers a group's state to every joiner, at the joiner's point of
 * the delivery stream (before any later delivery), from one member that was already there. Register
 * both functions before cpg_join to take part:
 * - provide: a member joins a group this process is in; set *state to the group's state as of now
 *   (a buffer valid until the function returns; the library copies it) and return its length.
 * - apply: this process joined; replace the group's state with this one. It runs before any
 *   delivery that follows the join.
 * Without them the library answers with an empty state itself, and applications keep their own
 * state exchange as on corosync. Both NULL unregisters; one NULL is CS_ERR_INVALID_PARAM. */
typedef size_t (*cohort_cpg_state_provide_fn_t)(
	cpg_handle_t handle,
	const struct cpg_name *group,
	uint32_t joiner_nodeid,
	const void **state);
typedef void (*cohort_cpg_state_apply_fn_t)(
	cpg_handle_t handle,
	const struct cpg_name *group,
	uint32_t provider_nodeid,
	const void *state,
	size_t state_len);
cs_error_t cohort_cpg_state_callbacks_set(cpg_handle_t handle, cohort_cpg_state_provide_fn_t provide,
					  cohort_cpg_state_apply_fn_t apply);

/* Multicasts the agent refused after cpg_mcast_joined had returned CS_OK (it returns as soon as the
 * message is queued; the agent answers later). */
cs_error_t cohort_cpg_send_failures_get(cpg_handle_t handle, uint64_t *count);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_CPG_EXT_H */
