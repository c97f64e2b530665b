// Package alert is threshold alerting on server metrics: rules such as
// "disk above 90% for 5 minutes" on one server, on the servers with a
// label, or on every server, evaluated as metrics batches arrive.
//
// # Rules
//
// A rule names a metric (cpu, memory, swap, disk and inodes in percent, load
// as load1 per core, net_rx and net_tx in bytes per second, or offline), a
// threshold Above, a duration For and a lower mark ResolveBelow
// (hysteresis: by default 5 points below a percent threshold, 10% below
// any other). It fires for a (server, mount) once every sample for For was
// above the threshold, and resolves once a sample falls below the lower
// mark. A spike shorter than For fires nothing. disk and inodes are
// evaluated per mount (one mount with Mount, else every mount the agent
// reports). offline has no threshold: it fires once the server has been
// offline (fleet's liveness marked it so) for For since its last heartbeat,
// and resolves once it is not offline.
//
// # Evaluation (Engine)
//
// The rules, and what evaluation needs of each server (name, labels, CPU
// count), are cached in memory and reloaded when a rule changes (a trigger
// on alert_rules NOTIFYs every controller) and every RefreshEvery.
// Engine.ObserveMetrics runs after the batch's ack was queued, in memory
// only: per (rule, server, mount) it keeps when the condition began
// (pending) and whether it fires. Only transitions touch PostgreSQL, in a
// background worker: firing inserts or reopens an alert_states row only
// when it is not already firing, resolving updates it only when it fires,
// each in one transaction with the alert.firing or alert.resolved event
// (notify.Publish, dedupe key "alert:<rule>:<server>:<mount>", so the
// resolved event closes the firing one). Two controllers evaluating the
// same server therefore fire and resolve once, and a controller restart
// reloads the firing states: it neither fires again nor forgets. Pending
// conditions live in memory only (writing every begun spike would cost a
// write per spike); after a restart a condition's duration counts from the
// first sample the new process sees.
//
// # Service
//
// Service is the API for the CLI (through gRPC) and the web UI: AddAs and
// RemoveAs need the admin scope, ListAs and GetAs the read scope; changes
// are written to the activity log. Bad input wraps ErrInvalid.
package alert
