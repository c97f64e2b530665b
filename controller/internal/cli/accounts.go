package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// withAccounts dials the account service.
func withAccounts(ctx context.Context, f *apiFlags, fn func(context.Context, adminv1.AccountServiceClient) error) error {
	conn, err := f.conn()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := fn(ctx, adminv1.NewAccountServiceClient(conn)); err != nil {
		return rpcErr(err)
	}
	return nil
}

func tsString(t *timestamppb.Timestamp) string {
	if t == nil {
		return "-"
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

func userJSON(u *adminv1.User) map[string]any {
	return map[string]any{"id": u.GetId(), "email": u.GetEmail(), "role": u.GetRole(), "status": u.GetStatus(),
		"two_factor_enabled": u.GetTwoFactorEnabled(), "last_login_at": tsString(u.GetLastLoginAt()), "created_at": tsString(u.GetCreatedAt())}
}

func (a *app) userCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "List, invite, disable and enable people (admin)"}

	var listF apiFlags
	list := apiCommand(&cobra.Command{
		Use: "list", Short: "List users", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAccounts(cmd.Context(), &listF, func(ctx context.Context, c adminv1.AccountServiceClient) error {
				res, err := c.ListUsers(ctx, &adminv1.ListUsersRequest{})
				if err != nil {
					return err
				}
				if listF.output == "json" {
					out := []map[string]any{}
					for _, u := range res.GetUsers() {
						out = append(out, userJSON(u))
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tEMAIL\tROLE\tSTATUS\t2FA")
				for _, u := range res.GetUsers() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", u.GetId(), u.GetEmail(), u.GetRole(), u.GetStatus(), u.GetTwoFactorEnabled())
				}
				return tw.Flush()
			})
		},
	}, &listF)

	var invF apiFlags
	var role string
	invite := apiCommand(&cobra.Command{
		Use: "invite EMAIL", Short: "Invite someone: they get a single-use link by mail to set their password", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAccounts(cmd.Context(), &invF, func(ctx context.Context, c adminv1.AccountServiceClient) error {
				res, err := c.InviteUser(ctx, &adminv1.InviteUserRequest{Email: args[0], Role: role})
				if err != nil {
					return err
				}
				if invF.output == "json" {
					j := userJSON(res.GetUser())
					j["mailed"] = res.GetMailed()
					if res.GetInviteUrl() != "" {
						j["invite_url"] = res.GetInviteUrl()
					}
					return a.printJSON(j)
				}
				fmt.Fprintf(a.stdout, "invited %s as %s (%s)\n", res.GetUser().GetEmail(), res.GetUser().GetRole(), res.GetUser().GetId())
				if u := res.GetInviteUrl(); u != "" {
					fmt.Fprintf(a.stdout, "no mail server is configured, so nothing was mailed: hand this single-use link to %s (shown once):\n%s\n", res.GetUser().GetEmail(), u)
				} else {
					fmt.Fprintf(a.stdout, "the invitation was mailed to %s\n", res.GetUser().GetEmail())
				}
				return nil
			})
		},
	}, &invF)
	invite.Flags().StringVar(&role, "role", "viewer", "admin, operator or viewer")

	setStatus := func(use, short string, call func(context.Context, adminv1.AccountServiceClient, string) (*adminv1.User, error)) *cobra.Command {
		var f apiFlags
		return apiCommand(&cobra.Command{
			Use: use + " USER", Short: short, Args: exactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return withAccounts(cmd.Context(), &f, func(ctx context.Context, c adminv1.AccountServiceClient) error {
					u, err := call(ctx, c, args[0])
					if err != nil {
						return err
					}
					if f.output == "json" {
						return a.printJSON(userJSON(u))
					}
					fmt.Fprintf(a.stdout, "%s is %s\n", u.GetEmail(), u.GetStatus())
					return nil
				})
			},
		}, &f)
	}
	disable := setStatus("disable", "Disable a user (id or email): their sessions and tokens stop at once",
		func(ctx context.Context, c adminv1.AccountServiceClient, ref string) (*adminv1.User, error) {
			r, err := c.DisableUser(ctx, &adminv1.DisableUserRequest{User: ref})
			return r.GetUser(), err
		})
	enable := setStatus("enable", "Enable a disabled user (id or email)",
		func(ctx context.Context, c adminv1.AccountServiceClient, ref string) (*adminv1.User, error) {
			r, err := c.EnableUser(ctx, &adminv1.EnableUserRequest{User: ref})
			return r.GetUser(), err
		})
	cmd.AddCommand(list, invite, disable, enable)
	return cmd
}

// tokenAPICmds manage the caller's own tokens through the API (token
// create on the controller host goes straight to the database).
func (a *app) tokenAPICmds() []*cobra.Command {
	var listF apiFlags
	list := apiCommand(&cobra.Command{
		Use: "list", Short: "List your API tokens (never their values)", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAccounts(cmd.Context(), &listF, func(ctx context.Context, c adminv1.AccountServiceClient) error {
				res, err := c.ListTokens(ctx, &adminv1.ListTokensRequest{})
				if err != nil {
					return err
				}
				if listF.output == "json" {
					out := []map[string]any{}
					for _, t := range res.GetTokens() {
						out = append(out, map[string]any{"id": t.GetId(), "name": t.GetName(), "scopes": t.GetScopes(),
							"expires_at": tsString(t.GetExpiresAt()), "last_used_at": tsString(t.GetLastUsedAt()), "revoked_at": tsString(t.GetRevokedAt())})
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tSCOPES\tEXPIRES\tREVOKED")
				for _, t := range res.GetTokens() {
					fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\n", t.GetId(), t.GetName(), t.GetScopes(), tsString(t.GetExpiresAt()), tsString(t.GetRevokedAt()))
				}
				return tw.Flush()
			})
		},
	}, &listF)

	var newF apiFlags
	var scopes []string
	var expires time.Duration
	issue := apiCommand(&cobra.Command{
		Use: "issue NAME", Short: "Make a new API token for yourself through the API and print it once", Args: exactArgs(1),
		Long: "Make a new API token for yourself through the API and print it once.\n\n" +
			"Managing tokens through the API needs a token with the admin scope (in the web UI, any signed-in person\n" +
			"manages their own). The new token gets at most the calling token's scopes and expiry, and is revoked\n" +
			"with it.",
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAccounts(cmd.Context(), &newF, func(ctx context.Context, c adminv1.AccountServiceClient) error {
				req := &adminv1.CreateTokenRequest{Name: args[0], Scopes: scopes}
				if expires > 0 {
					req.ExpiresIn = durationpb.New(expires)
				}
				res, err := c.CreateToken(ctx, req)
				if err != nil {
					return err
				}
				if newF.output == "json" {
					return a.printJSON(map[string]any{"id": res.GetInfo().GetId(), "name": res.GetInfo().GetName(), "token": res.GetToken(),
						"scopes": res.GetInfo().GetScopes(), "expires_at": tsString(res.GetInfo().GetExpiresAt())})
				}
				fmt.Fprintln(a.stdout, res.GetToken())
				return nil
			})
		},
	}, &newF)
	issue.Flags().StringSliceVar(&scopes, "scope", []string{"read"}, "read, write, deploy or admin (repeatable)")
	issue.Flags().DurationVar(&expires, "expires", 720*time.Hour, "lifetime; 0 for none (never later than the calling token's expiry)")

	var revF apiFlags
	revoke := apiCommand(&cobra.Command{
		Use: "revoke ID", Short: "Revoke an API token and the tokens made from it", Args: exactArgs(1),
		Long: "Revoke an API token and every token made through it. Needs a token with the admin scope; another\n" +
			"user's token needs the admin scope as well.",
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAccounts(cmd.Context(), &revF, func(ctx context.Context, c adminv1.AccountServiceClient) error {
				if _, err := c.RevokeToken(ctx, &adminv1.RevokeTokenRequest{Id: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "token %s revoked\n", args[0])
				return nil
			})
		},
	}, &revF)
	return []*cobra.Command{list, issue, revoke}
}

func (a *app) activityCmd() *cobra.Command {
	var f apiFlags
	var action, subject string
	var limit uint32
	cmd := apiCommand(&cobra.Command{
		Use: "activity", Short: "Show the activity log, newest first", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAccounts(cmd.Context(), &f, func(ctx context.Context, c adminv1.AccountServiceClient) error {
				res, err := c.ListActivity(ctx, &adminv1.ListActivityRequest{Action: action, SubjectType: subject, Limit: limit})
				if err != nil {
					return err
				}
				if f.output == "json" {
					out := []map[string]any{}
					for _, e := range res.GetEntries() {
						out = append(out, map[string]any{"id": e.GetId(), "created_at": tsString(e.GetCreatedAt()), "actor_type": e.GetActorType(),
							"actor": e.GetActor(), "action": e.GetAction(), "subject_type": e.GetSubjectType(), "subject_id": e.GetSubjectId(),
							"subject_name": e.GetSubjectName(), "changes": e.GetChanges().AsMap(), "ip_address": e.GetIpAddress()})
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "WHEN\tWHO\tACTION\tSUBJECT\tFROM")
				for _, e := range res.GetEntries() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\n", tsString(e.GetCreatedAt()), e.GetActor(), e.GetAction(), e.GetSubjectType(), e.GetSubjectName(), e.GetIpAddress())
				}
				return tw.Flush()
			})
		},
	}, &f)
	cmd.Flags().StringVar(&action, "action", "", "only this action, e.g. server.created")
	cmd.Flags().StringVar(&subject, "subject-type", "", "only this subject type, e.g. server")
	cmd.Flags().Uint32Var(&limit, "limit", 50, "at most this many (1-200)")
	return cmd
}

func (a *app) securityCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "security", Short: "Security events (admin)"}
	var f apiFlags
	var typ, severity string
	var limit uint32
	events := apiCommand(&cobra.Command{
		Use: "events", Short: "Show security events, newest first", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAccounts(cmd.Context(), &f, func(ctx context.Context, c adminv1.AccountServiceClient) error {
				res, err := c.ListSecurityEvents(ctx, &adminv1.ListSecurityEventsRequest{Type: typ, Severity: severity, Limit: limit})
				if err != nil {
					return err
				}
				if f.output == "json" {
					out := []map[string]any{}
					for _, e := range res.GetEvents() {
						out = append(out, map[string]any{"id": e.GetId(), "created_at": tsString(e.GetCreatedAt()), "type": e.GetType(),
							"severity": e.GetSeverity(), "actor": e.GetActor(), "ip_address": e.GetIpAddress(), "details": e.GetDetails().AsMap()})
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "WHEN\tTYPE\tSEVERITY\tWHO\tIP")
				for _, e := range res.GetEvents() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", tsString(e.GetCreatedAt()), e.GetType(), e.GetSeverity(), e.GetActor(), e.GetIpAddress())
				}
				return tw.Flush()
			})
		},
	}, &f)
	events.Flags().StringVar(&typ, "type", "", "only this event type, e.g. login.throttled")
	events.Flags().StringVar(&severity, "severity", "", "info, warning or critical")
	events.Flags().Uint32Var(&limit, "limit", 50, "at most this many (1-200)")
	cmd.AddCommand(events)
	return cmd
}
