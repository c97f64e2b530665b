// Package kind is the one list of event kinds: every security_events.type
// and activity_log.action the controller writes is a constant here. One
// scheme, dotted lowercase: <subject>.<what happened, past tense>, e.g.
// token.created, login.throttled, agent.connection_refused. The same act
// has the same name in both tables and from every caller (web, API, CLI).
//
// Adding a kind: add a constant and list it in All. The store refuses a
// kind missing from the list while tests run (see store.CreateSecurityEvent),
// so an emitter with a new or misspelt kind fails its tests instead of
// writing a name no filter finds.
//
// Kinds renamed by migration 000022 keep their old names in that
// migration's down file only.
package kind

import "slices"

// Accounts: people, sessions, API tokens, second factor.
const (
	UserCreated        = "user.created"
	UserInvited        = "user.invited"
	UserInviteResent   = "user.invite_resent"
	UserInviteAccepted = "user.invite_accepted"
	UserDisabled       = "user.disabled"
	UserEnabled        = "user.enabled"
	UserLoggedOut      = "user.logged_out"
	SessionRevoked     = "session.revoked"
	LoginFailedBurst   = "login.failed_burst"
	LoginThrottled     = "login.throttled"
	PasswordChanged    = "password.changed"
	PasswordResetAsked = "password.reset_requested"
	PasswordResetLimit = "password.reset_throttled"
	PasswordReset      = "password.reset"
	TwoFactorSetup     = "two_factor.setup_started"
	TwoFactorEnabled   = "two_factor.enabled"
	TwoFactorDisabled  = "two_factor.disabled"
	RecoveryCodesNew   = "two_factor.recovery_codes_regenerated"
	TwoFactorReplayed  = "two_factor.code_replayed"
	RecoveryCodeUsed   = "two_factor.recovery_code_used"
	TokenCreated       = "token.created"
	TokenRevoked       = "token.revoked"
)

// The fleet: servers, agents and their certificates.
const (
	ServerCreated           = "server.created"
	ServerEnabled           = "server.enabled"
	ServerDisabled          = "server.disabled"
	ServerRemoved           = "server.removed"
	AgentEnrolled           = "agent.enrolled"
	AgentEnrollRefused      = "agent.enroll_refused"
	AgentConnectionRefused  = "agent.connection_refused"
	CertificateIssued       = "certificate.issued"
	CertificateRevoked      = "certificate.revoked"
	CertificateRenewRefused = "certificate.renewal_refused"
	AgentHandshakeRefused   = "agent.tls_handshake_refused"
	AgentEventsSuppressed   = "agent.events_suppressed"
	ServerRootAllowed       = "server.root_allowed"
	ServerRootDenied        = "server.root_denied"
)

// Apps, credentials, webhooks and deployments.
const (
	GitCredentialCreated      = "git_credential.created"
	GitCredentialDeleted      = "git_credential.deleted"
	GitCredentialShared       = "git_credential.shared"
	GitCredentialUnshared     = "git_credential.unshared"
	GitCredentialHostTrusted  = "git_credential.host_trusted"
	AppUpdated                = "app.updated"
	WebhookOwnerNotAllowed    = "webhook.owner_not_allowed"
	AppCreated                = "app.created"
	AppEnvChanged             = "app.env_changed"
	AppWebhookSecretChanged   = "app.webhook_secret_changed"
	WebhookSignatureInvalid   = "webhook.signature_invalid"
	DeploymentQueued          = "deployment.queued"
	DeploymentRollbackQueued  = "deployment.rollback_queued"
	DeploymentCancelRequested = "deployment.cancel_requested"
	// A deployment's end is written as "deployment." + its final status.
	DeploymentSucceeded = "deployment.succeeded"
	DeploymentFailed    = "deployment.failed"
	DeploymentCanceled  = "deployment.canceled"
	DeploymentTimedOut  = "deployment.timed_out"
	// An app's delete: asked for (a delete job removes its files), then
	// done (the app is deleted; its deployments stay).
	AppDeleteRequested = "app.delete_requested"
	AppDeleted         = "app.deleted"
	// App processes and scheduled commands (issue 16): declared, changed,
	// removed, controlled (a process job is queued), a schedule's run
	// skipped (the previous run was unfinished, or nothing is deployed).
	AppProcessAdded     = "app.process_added"
	AppProcessReplaced  = "app.process_replaced"
	AppProcessRemoved   = "app.process_removed"
	AppProcessesControl = "app.processes_controlled"
	ProcessJobQueued    = "deployment.process_queued"
	AppScheduleAdded    = "app.schedule_added"
	AppScheduleReplaced = "app.schedule_replaced"
	AppScheduleRemoved  = "app.schedule_removed"
	ScheduleRunSkipped  = "deployment.schedule_skipped"
)

// Notification channels and rules (issue 17), changed by an admin.
const (
	NotifyChannelCreated = "notify_channel.created"
	NotifyChannelTested  = "notify_channel.tested"
	NotifyChannelDeleted = "notify_channel.deleted"
	NotifyChannelUpdated = "notify_channel.updated"
	NotifyRuleCreated    = "notify_rule.created"
	NotifyRuleDeleted    = "notify_rule.deleted"
)

// Backups (issue 18): destinations, the keyring, backups and the tasks
// acting on them. A backup's or task's end is written as "backup." or
// "backup_task." + its final status.
const (
	BackupDestinationCreated = "backup_destination.created"
	BackupDestinationTested  = "backup_destination.tested"
	BackupDestinationRemoved = "backup_destination.removed"
	BackupKeyCreated         = "backup_key.created"
	BackupQueued             = "backup.queued"
	BackupCancelRequested    = "backup.cancel_requested"
	BackupSucceeded          = "backup.succeeded"
	BackupFailed             = "backup.failed"
	BackupCanceled           = "backup.canceled"
	BackupTimedOut           = "backup.timed_out"
	BackupVerifyQueued       = "backup.verify_queued"
	BackupRestoreQueued      = "backup.restore_queued"
	BackupDownloaded         = "backup.downloaded"
	BackupDeleteRequested    = "backup.delete_requested"
	BackupDeleted            = "backup.deleted"
	BackupTaskSucceeded      = "backup_task.succeeded"
	BackupTaskFailed         = "backup_task.failed"
	BackupTaskCanceled       = "backup_task.canceled"
	BackupTaskTimedOut       = "backup_task.timed_out"
)

// Backup schedules (issue 18 §3): changes by a person or token, a tick
// skipped because the previous run was unfinished, a run the agent made
// from its held schedule while no controller was reachable, and a delete
// queued by retention.
const (
	BackupScheduleAdded      = "backup_schedule.added"
	BackupScheduleEnabled    = "backup_schedule.enabled"
	BackupScheduleDisabled   = "backup_schedule.disabled"
	BackupScheduleRemoved    = "backup_schedule.removed"
	BackupScheduleRunSkipped = "backup_schedule.run_skipped"
	BackupHeldRunReported    = "backup.held_run_reported"
	BackupRetentionDelete    = "backup.retention_delete_queued"
	// BackupCleanupQueued: the controller queued the cleanup of what an
	// unsucceeded backup may have left at its destination (or a retry).
	BackupCleanupQueued = "backup.cleanup_queued"
	// BackupForgotten: an admin removed the record of a stored backup
	// whose object could not be deleted (berth backup delete --forget);
	// the object stays at the destination.
	BackupForgotten = "backup.forgotten"
)

// Threshold alert rules (issue 17 §3), changed by an admin.
const (
	AlertRuleCreated  = "alert_rule.created"
	AlertRuleReplaced = "alert_rule.replaced"
	AlertRuleDeleted  = "alert_rule.deleted"
)

// Domains and certificates (issue 19): a host routed to an app, removed,
// a certificate attempt asked for, an app's routing changed, a DNS-01
// provider's credentials stored; issued, failed (by the controller's ACME
// loop), a site nginx refused.
const (
	DomainAdded          = "domain.added"
	DomainRemoved        = "domain.removed"
	DomainRenewRequested = "domain.renew_requested"
	AppRoutingChanged    = "app.routing_changed"
	DNSProviderCreated   = "dns_provider.created"
	DomainCertIssued     = "domain.certificate_issued"
	DomainCertFailed     = "domain.certificate_failed"
	DomainSiteFailed     = "domain.site_failed"
)

// All is every kind above. Keep it in the order of the constants.
var All = []string{
	UserCreated, UserInvited, UserInviteResent, UserInviteAccepted, UserDisabled, UserEnabled, UserLoggedOut,
	SessionRevoked, LoginFailedBurst, LoginThrottled, PasswordChanged, PasswordResetAsked, PasswordResetLimit, PasswordReset,
	TwoFactorSetup, TwoFactorEnabled, TwoFactorDisabled, RecoveryCodesNew, TwoFactorReplayed, RecoveryCodeUsed,
	TokenCreated, TokenRevoked,

	ServerCreated, ServerEnabled, ServerDisabled, ServerRemoved, AgentEnrolled, AgentEnrollRefused,
	AgentConnectionRefused, CertificateIssued, CertificateRevoked, CertificateRenewRefused, AgentHandshakeRefused,
	AgentEventsSuppressed, ServerRootAllowed, ServerRootDenied,

	GitCredentialCreated, GitCredentialDeleted, GitCredentialShared, GitCredentialUnshared, GitCredentialHostTrusted,
	AppUpdated, WebhookOwnerNotAllowed, AppCreated, AppEnvChanged, AppWebhookSecretChanged,
	WebhookSignatureInvalid, DeploymentQueued, DeploymentRollbackQueued, DeploymentCancelRequested,
	DeploymentSucceeded, DeploymentFailed, DeploymentCanceled, DeploymentTimedOut, AppDeleteRequested, AppDeleted,
	AppProcessAdded, AppProcessReplaced, AppProcessRemoved, AppProcessesControl, ProcessJobQueued,
	AppScheduleAdded, AppScheduleReplaced, AppScheduleRemoved, ScheduleRunSkipped,

	NotifyChannelCreated, NotifyChannelTested, NotifyChannelDeleted, NotifyChannelUpdated, NotifyRuleCreated, NotifyRuleDeleted,

	BackupDestinationCreated, BackupDestinationTested, BackupDestinationRemoved, BackupKeyCreated, BackupQueued,
	BackupCancelRequested, BackupSucceeded, BackupFailed, BackupCanceled, BackupTimedOut, BackupVerifyQueued,
	BackupRestoreQueued, BackupDownloaded, BackupDeleteRequested, BackupDeleted,
	BackupTaskSucceeded, BackupTaskFailed, BackupTaskCanceled, BackupTaskTimedOut,

	BackupScheduleAdded, BackupScheduleEnabled, BackupScheduleDisabled, BackupScheduleRemoved,
	BackupScheduleRunSkipped, BackupHeldRunReported, BackupRetentionDelete, BackupCleanupQueued, BackupForgotten,

	AlertRuleCreated, AlertRuleReplaced, AlertRuleDeleted,

	DomainAdded, DomainRemoved, DomainRenewRequested, AppRoutingChanged, DNSProviderCreated,
	DomainCertIssued, DomainCertFailed, DomainSiteFailed,
}

// Known reports whether k is in the list.
func Known(k string) bool { return slices.Contains(All, k) }
