package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// withNotify dials the notification service.
func withNotify(ctx context.Context, f *apiFlags, fn func(context.Context, adminv1.NotificationServiceClient) error) error {
	conn, err := f.conn()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := fn(ctx, adminv1.NewNotificationServiceClient(conn)); err != nil {
		return rpcErr(err)
	}
	return nil
}

// stdinLine reads one secret line from standard input (URLs with tokens
// and signing secrets never go on the command line, where ps and shell
// history see them).
func (a *app) stdinLine(what string) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(a.stdin, 8192)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	line = strings.TrimSpace(line)
	if line == "" {
		return "", usageError{fmt.Errorf("no %s on standard input", what)}
	}
	return line, nil
}

func channelJSON(c *adminv1.NotifyChannel) map[string]any {
	return map[string]any{"id": c.GetId(), "name": c.GetName(), "kind": c.GetKind(), "to": orEmpty(c.GetTo()), "to_admins": c.GetToAdmins(),
		"url_host": c.GetUrlHost(), "rate_limit_per_hour": c.GetRateLimitPerHour(), "last_error": c.GetLastError(),
		"failing_since": tsOrNil(c.GetFailingSince()), "last_delivered_at": tsOrNil(c.GetLastDeliveredAt()), "given_up": c.GetGivenUp(),
		"created_at": tsString(c.GetCreatedAt())}
}

func ruleJSON(r *adminv1.NotifyRule) map[string]any {
	return map[string]any{"id": r.GetId(), "events": orEmpty(r.GetEvents()), "channel": r.GetChannel(), "server_id": r.GetServerId(),
		"app_id": r.GetAppId(), "min_level": r.GetMinLevel()}
}

func notificationJSON(n *adminv1.Notification) map[string]any {
	return map[string]any{"id": n.GetId(), "kind": n.GetKind(), "level": n.GetLevel(), "title": n.GetTitle(), "body": n.GetBody(),
		"link": n.GetLink(), "read_at": tsOrNil(n.GetReadAt()), "created_at": tsString(n.GetCreatedAt())}
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// tsOrNil is an optional time for JSON: null when unset.
func tsOrNil(t *timestamppb.Timestamp) any {
	if t == nil {
		return nil
	}
	return tsString(t)
}

func (a *app) notifyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "notify", Short: "Notification channels and the rules that route events to them (admin)"}
	cmd.AddCommand(a.notifyChannelCmd(), a.notifyRuleCmd(), a.notifyDeliveryCmd())
	return cmd
}

// deliveryStatuses are the outbox states (the service checks them too; the
// CLI refuses a typo before dialing).
var deliveryStatuses = []string{"pending", "delivered", "failed", "merged", "held", "digested"}

func deliveryJSON(d *adminv1.NotifyDelivery) map[string]any {
	return map[string]any{"id": d.GetId(), "channel": d.GetChannel(), "event_id": d.GetEventId(), "event_kind": d.GetEventKind(),
		"title": d.GetTitle(), "status": d.GetStatus(), "attempts": d.GetAttempts(), "last_error": d.GetLastError(),
		"next_attempt_at": tsOrNil(d.GetNextAttemptAt()), "delivered_at": tsOrNil(d.GetDeliveredAt()), "created_at": tsString(d.GetCreatedAt()),
		"delivered_to": nonNil(d.GetDeliveredTo()), "refused_to": nonNilMap(d.GetRefusedTo())}
}

// nonNilMap makes an empty map print as {} in JSON, not null (as nonNil
// does for lists).
func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func (a *app) notifyDeliveryCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "delivery", Short: "The outbox: each message to each channel and how its delivery went"}
	var f apiFlags
	var channel, st string
	var limit int
	list := apiCommand(&cobra.Command{
		Use:   "list",
		Short: "Recent deliveries, newest first (--channel NAME, --status pending|delivered|failed)",
		Long: "Lists the latest messages of every channel, or of one with --channel, newest first.\n" +
			"--status narrows to pending (to send or retry), delivered, failed (given up after its retries, or an\n" +
			"email address refused for good by the mail server: -o json shows refused_to with its reply),\n" +
			"merged (a repeat not sent), held (over the rate limit, waiting for a digest) or digested.",
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if st != "" && !slices.Contains(deliveryStatuses, st) {
				return usageError{fmt.Errorf("--status %q: want %s", st, strings.Join(deliveryStatuses, ", "))}
			}
			if limit < 1 || limit > 200 {
				return usageError{errors.New("--limit must be 1 to 200")}
			}
			return withNotify(cmd.Context(), &f, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				res, err := c.ListDeliveries(ctx, &adminv1.ListDeliveriesRequest{Channel: channel, Status: st, Limit: int32(limit)})
				if err != nil {
					return err
				}
				if f.output == "json" {
					out := []map[string]any{}
					for _, d := range res.GetDeliveries() {
						out = append(out, deliveryJSON(d))
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tCREATED\tCHANNEL\tEVENT\tSTATUS\tATTEMPTS\tNEXT ATTEMPT\tDELIVERED\tLAST ERROR")
				for _, d := range res.GetDeliveries() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", d.GetId(), tsString(d.GetCreatedAt()), d.GetChannel(), d.GetEventKind(),
						d.GetStatus(), d.GetAttempts(), tsString(d.GetNextAttemptAt()), tsString(d.GetDeliveredAt()), dash(d.GetLastError()))
				}
				return tw.Flush()
			})
		},
	}, &f)
	list.Flags().StringVar(&channel, "channel", "", "only this channel's deliveries")
	list.Flags().StringVar(&st, "status", "", "only deliveries in this status: pending, delivered or failed (also merged, held, digested)")
	list.Flags().IntVar(&limit, "limit", 50, "at most this many (1 to 200)")
	cmd.AddCommand(list)
	return cmd
}

func (a *app) notifyChannelCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "channel", Short: "Add, list, test and remove notification channels"}

	var addF apiFlags
	var kind, url string
	var to []string
	var urlStdin, secretStdin bool
	var rateLimit int
	add := apiCommand(&cobra.Command{
		Use:   "add NAME",
		Short: "Add an email, Slack, Discord or webhook channel",
		Long: "  --kind email --to ADDR[,ADDR]\n" +
			"  --kind slack|discord --url-stdin     (the incoming-webhook URL carries a token: read from standard input)\n" +
			"  --kind webhook --url URL [--secret-stdin]\n" +
			"A webhook channel signs per Standard Webhooks; without --secret-stdin a whsec_ secret is generated and shown once.\n" +
			"--rate-limit N sends at most N messages an hour (1 to 10000, default 20); the rest go out as one digest.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &adminv1.AddChannelRequest{Name: args[0], Kind: kind}
			if cmd.Flags().Changed("rate-limit") {
				// Refused before dialing, as --limit is (the service
				// checks it again); a typed 0 would mean "the default"
				// on the wire, so it is refused here too.
				if rateLimit < 1 || rateLimit > 10000 {
					return usageError{errors.New("--rate-limit must be 1 to 10000 messages per hour")}
				}
				req.RateLimitPerHour = int32(rateLimit)
			}
			switch kind {
			case "email":
				if len(to) == 0 {
					return usageError{errors.New("--kind email needs --to ADDR[,ADDR]")}
				}
				if url != "" || urlStdin || secretStdin {
					return usageError{errors.New("--kind email takes --to only")}
				}
				req.To = to
			case "slack", "discord":
				if !urlStdin || url != "" {
					return usageError{fmt.Errorf("--kind %s needs --url-stdin (its URL carries a token and never goes on the command line)", kind)}
				}
				if len(to) > 0 || secretStdin {
					return usageError{fmt.Errorf("--kind %s takes --url-stdin only", kind)}
				}
				u, err := a.stdinLine("URL")
				if err != nil {
					return err
				}
				req.Url = u
			case "webhook":
				if len(to) > 0 || urlStdin {
					return usageError{errors.New("--kind webhook takes --url URL [--secret-stdin]")}
				}
				if url == "" {
					return usageError{errors.New("--kind webhook needs --url URL")}
				}
				req.Url = url
				if secretStdin {
					s, err := a.stdinLine("secret")
					if err != nil {
						return err
					}
					req.Secret = s
				}
			case "":
				return usageError{errors.New("--kind is required: email, slack, discord or webhook")}
			default:
				return usageError{fmt.Errorf("--kind %q: want email, slack, discord or webhook", kind)}
			}
			return withNotify(cmd.Context(), &addF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				res, err := c.AddChannel(ctx, req)
				if err != nil {
					return err
				}
				if addF.output == "json" {
					j := channelJSON(res.GetChannel())
					if s := res.GetWebhookSecret(); s != "" {
						j["webhook_secret"] = s
					}
					return a.printJSON(j)
				}
				fmt.Fprintf(a.stdout, "added %s channel %s (%s)\n", res.GetChannel().GetKind(), res.GetChannel().GetName(), res.GetChannel().GetId())
				if s := res.GetWebhookSecret(); s != "" {
					fmt.Fprintf(a.stdout, "signing secret (shown once; configure the receiver with it):\n%s\n", s)
				}
				return nil
			})
		},
	}, &addF)
	add.Flags().StringVar(&kind, "kind", "", "email, slack, discord or webhook")
	add.Flags().StringSliceVar(&to, "to", nil, "email addresses (comma-separated)")
	add.Flags().StringVar(&url, "url", "", "webhook URL")
	add.Flags().BoolVar(&urlStdin, "url-stdin", false, "read a Slack or Discord URL from standard input")
	add.Flags().BoolVar(&secretStdin, "secret-stdin", false, "read the webhook's whsec_ signing secret from standard input")
	add.Flags().IntVar(&rateLimit, "rate-limit", 20, "at most this many messages an hour (1 to 10000); the rest are held back for a digest")

	var listF apiFlags
	list := apiCommand(&cobra.Command{
		Use: "list", Short: "List channels with their last delivery and failure", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNotify(cmd.Context(), &listF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				res, err := c.ListChannels(ctx, &adminv1.ListChannelsRequest{})
				if err != nil {
					return err
				}
				if listF.output == "json" {
					out := []map[string]any{}
					for _, ch := range res.GetChannels() {
						out = append(out, channelJSON(ch))
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tKIND\tTARGET\tLAST DELIVERED\tFAILING SINCE\tGIVEN UP\tLAST ERROR")
				for _, ch := range res.GetChannels() {
					target := ch.GetUrlHost()
					switch {
					case ch.GetToAdmins():
						target = "every admin"
					case len(ch.GetTo()) > 0:
						target = strings.Join(ch.GetTo(), ",")
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", ch.GetName(), ch.GetKind(), target, tsString(ch.GetLastDeliveredAt()),
						tsString(ch.GetFailingSince()), ch.GetGivenUp(), dash(ch.GetLastError()))
				}
				return tw.Flush()
			})
		},
	}, &listF)

	var testF apiFlags
	test := apiCommand(&cobra.Command{
		Use: "test NAME", Short: "Send a test message to a channel now", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNotify(cmd.Context(), &testF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				res, err := c.TestChannel(ctx, &adminv1.TestChannelRequest{Name: args[0]})
				if err != nil {
					return err
				}
				if testF.output == "json" {
					return a.printJSON(channelJSON(res.GetChannel()))
				}
				fmt.Fprintf(a.stdout, "test message delivered to %s\n", args[0])
				return nil
			})
		},
	}, &testF)

	var rmF apiFlags
	remove := apiCommand(&cobra.Command{
		Use: "remove NAME", Short: "Remove a channel, its rules and its pending messages", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNotify(cmd.Context(), &rmF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				if _, err := c.RemoveChannel(ctx, &adminv1.RemoveChannelRequest{Name: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "removed channel %s\n", args[0])
				return nil
			})
		},
	}, &rmF)

	var updF apiFlags
	var updRate int
	update := apiCommand(&cobra.Command{
		Use:   "update NAME --rate-limit N",
		Short: "Change a channel's rate limit (the install's admins-inbox and admins-email too)",
		Long: "--rate-limit N: at most N messages an hour (1 to 10000); the rest are held back and sent as one digest.\n" +
			"The change holds from the next message on. A channel's URL, secret and addresses are not changed in place:\n" +
			"remove and add it.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("rate-limit") {
				return usageError{errors.New("nothing to change: give --rate-limit N")}
			}
			if updRate < 1 || updRate > 10000 {
				return usageError{errors.New("--rate-limit must be 1 to 10000 messages per hour")}
			}
			rate := int32(updRate)
			return withNotify(cmd.Context(), &updF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				res, err := c.UpdateChannel(ctx, &adminv1.UpdateChannelRequest{Name: args[0], RateLimitPerHour: &rate})
				if err != nil {
					return err
				}
				if updF.output == "json" {
					return a.printJSON(channelJSON(res.GetChannel()))
				}
				fmt.Fprintf(a.stdout, "channel %s: at most %d messages an hour\n", res.GetChannel().GetName(), res.GetChannel().GetRateLimitPerHour())
				return nil
			})
		},
	}, &updF)
	update.Flags().IntVar(&updRate, "rate-limit", 0, "at most this many messages an hour (1 to 10000); the rest are held back for a digest")

	cmd.AddCommand(add, list, test, remove, update)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) notifyRuleCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rule", Short: "Add, list and remove the rules that send events to channels"}

	var addF apiFlags
	var events []string
	var channel, server, appName, minLevel string
	add := apiCommand(&cobra.Command{
		Use:   "add",
		Short: "Send events matching patterns (deployment.failed, deployment.*, *) to a channel",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(events) == 0 {
				return usageError{errors.New("--events PATTERN[,PATTERN] is required")}
			}
			if channel == "" {
				return usageError{errors.New("--channel NAME is required")}
			}
			return withNotify(cmd.Context(), &addF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				res, err := c.AddRule(ctx, &adminv1.AddRuleRequest{Events: events, Channel: channel, Server: server, App: appName, MinLevel: minLevel})
				if err != nil {
					return err
				}
				if addF.output == "json" {
					return a.printJSON(ruleJSON(res.GetRule()))
				}
				fmt.Fprintf(a.stdout, "added rule %s: %s -> %s\n", res.GetRule().GetId(), strings.Join(res.GetRule().GetEvents(), ","), res.GetRule().GetChannel())
				return nil
			})
		},
	}, &addF)
	add.Flags().StringSliceVar(&events, "events", nil, "event kind patterns (comma-separated)")
	add.Flags().StringVar(&channel, "channel", "", "the channel's name")
	add.Flags().StringVar(&server, "server", "", "only events about this server")
	add.Flags().StringVar(&appName, "app", "", "only events about this app")
	add.Flags().StringVar(&minLevel, "min-level", "", "info (default), warning or critical")

	var listF apiFlags
	list := apiCommand(&cobra.Command{
		Use: "list", Short: "List rules", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNotify(cmd.Context(), &listF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				res, err := c.ListRules(ctx, &adminv1.ListRulesRequest{})
				if err != nil {
					return err
				}
				if listF.output == "json" {
					out := []map[string]any{}
					for _, r := range res.GetRules() {
						out = append(out, ruleJSON(r))
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tEVENTS\tCHANNEL\tSERVER\tAPP\tMIN LEVEL")
				for _, r := range res.GetRules() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.GetId(), strings.Join(r.GetEvents(), ","), r.GetChannel(),
						dash(r.GetServerId()), dash(r.GetAppId()), r.GetMinLevel())
				}
				return tw.Flush()
			})
		},
	}, &listF)

	var rmF apiFlags
	remove := apiCommand(&cobra.Command{
		Use: "remove ID", Short: "Remove a rule", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNotify(cmd.Context(), &rmF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				if _, err := c.RemoveRule(ctx, &adminv1.RemoveRuleRequest{Id: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "removed rule %s\n", args[0])
				return nil
			})
		},
	}, &rmF)

	cmd.AddCommand(add, list, remove)
	return cmd
}

func (a *app) notificationsCmd() *cobra.Command {
	var f apiFlags
	var unread bool
	var markRead string
	cmd := apiCommand(&cobra.Command{
		Use:   "notifications",
		Short: "Your notifications, newest first (--unread, --mark-read ID|all)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if markRead != "" && unread {
				return usageError{errors.New("--mark-read and --unread do not go together")}
			}
			return withNotify(cmd.Context(), &f, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				if markRead != "" {
					req := &adminv1.MarkNotificationsReadRequest{Id: markRead}
					if markRead == "all" {
						req = &adminv1.MarkNotificationsReadRequest{All: true}
					}
					res, err := c.MarkNotificationsRead(ctx, req)
					if err != nil {
						return err
					}
					if f.output == "json" {
						return a.printJSON(map[string]any{"marked": res.GetMarked()})
					}
					fmt.Fprintf(a.stdout, "marked %d read\n", res.GetMarked())
					return nil
				}
				res, err := c.ListNotifications(ctx, &adminv1.ListNotificationsRequest{UnreadOnly: unread})
				if err != nil {
					return err
				}
				if f.output == "json" {
					out := []map[string]any{}
					for _, n := range res.GetNotifications() {
						out = append(out, notificationJSON(n))
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tWHEN\tLEVEL\tKIND\tTITLE\tREAD")
				for _, n := range res.GetNotifications() {
					read := "no"
					if n.GetReadAt() != nil {
						read = "yes"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.GetId(), tsString(n.GetCreatedAt()), n.GetLevel(), n.GetKind(), n.GetTitle(), read)
				}
				return tw.Flush()
			})
		},
	}, &f)
	cmd.Flags().BoolVar(&unread, "unread", false, "only unread notifications")
	cmd.Flags().StringVar(&markRead, "mark-read", "", "mark a notification read by ID, or all")
	return cmd
}
