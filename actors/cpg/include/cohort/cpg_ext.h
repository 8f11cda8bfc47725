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

/* Multicasts the agent refused after cpg_mcast_joined had returned CS_OK (it returns as soon as the
 * message is queued; the agent answers later). */
cs_error_t cohort_cpg_send_failures_get(cpg_handle_t handle, uint64_t *count);

#ifdef __cplusplus
}
#endif

#endif /* COHORT_CPG_EXT_H */
