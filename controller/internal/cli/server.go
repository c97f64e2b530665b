package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

func (a *app) serverCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "server", Short: "Add, list, inspect, disable and remove managed servers"}

	var addF apiFlags
	var labels []string
	var ttl time.Duration
	add := apiCommand(&cobra.Command{
		Use:   "add NAME",
		Short: "Add a server and print its one-time join token and install command",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lm := map[string]string{}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return usageError{fmt.Errorf("--label wants key=value, got %q", l)}
				}
				lm[k] = v
			}
			c, done, err := addF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.AddServer(cmd.Context(), &adminv1.AddServerRequest{Name: args[0], Labels: lm, TokenTtl: durationpb.New(ttl)})
			if err != nil {
				return rpcErr(err)
			}
			return a.printJoin(addF.output, "added", res.GetServer(), res.GetToken(), res.GetTokenExpiresAt().AsTime(), res.GetCaPin(), res.GetEnrollCommand(), res.GetInstallCommand(), res.GetWarnings())
		},
	}, &addF)
	add.Flags().StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	add.Flags().DurationVar(&ttl, "token-ttl", time.Hour, "how long the join token is valid")

	var listF apiFlags
	var statusFilter string
	list := apiCommand(&cobra.Command{
		Use:   "list",
		Short: "List servers",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := listF.dial()
			if err != nil {
				return err
			}
			defer done()
			var all []*adminv1.Server
			before := ""
			for {
				res, err := c.ListServers(cmd.Context(), &adminv1.ListServersRequest{Status: statusFilter, Before: before, Limit: 500})
				if err != nil {
					return rpcErr(err)
				}
				all = append(all, res.GetServers()...)
				if before = res.GetNextBefore(); before == "" {
					break
				}
			}
			if listF.output == "json" {
				out := make([]map[string]any, 0, len(all))
				for _, s := range all {
					out = append(out, serverJSON(s))
				}
				return a.printJSON(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tLAST SEEN\tHOSTNAME")
			for _, s := range all {
				seen := "never"
				if s.GetLastSeenAt() != nil {
					seen = time.Since(s.GetLastSeenAt().AsTime()).Round(time.Second).String() + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.GetId(), s.GetName(), s.GetStatus(), seen, s.GetHostname())
			}
			return tw.Flush()
		},
	}, &listF)
	list.Flags().StringVar(&statusFilter, "status", "", "only servers in this status (pending, online, offline, disabled)")

	var showF apiFlags
	show := apiCommand(&cobra.Command{
		Use:   "show NAME",
		Short: "Show one server",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := showF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.GetServer(cmd.Context(), &adminv1.GetServerRequest{Server: args[0]})
			if err != nil {
				return rpcErr(err)
			}
			if showF.output == "json" {
				m := serverJSON(res.GetServer())
				certs := make([]map[string]any, 0, len(res.GetCertificates()))
				for _, c := range res.GetCertificates() {
					cm := map[string]any{"serial": c.GetSerial(), "issued_for": c.GetIssuedFor(), "not_after": c.GetNotAfter().AsTime(), "revoked": c.GetRevoked()}
					if c.GetRevoked() {
						cm["revoked_at"], cm["revoke_reason"] = c.GetRevokedAt().AsTime(), c.GetRevokeReason()
					}
					certs = append(certs, cm)
				}
				m["certificates"] = certs
				return a.printJSON(m)
			}
			s := res.GetServer()
			fmt.Fprintf(a.stdout, "id:       %s\nname:     %s\nstatus:   %s\nhostname: %s\nagent:    %s\nroot:     %s\nfacts:    %s\n", s.GetId(), s.GetName(), s.GetStatus(), s.GetHostname(), s.GetAgentVersion(), rootWord(s.GetAllowRoot()), s.GetFactsJson())
			if len(res.GetCertificates()) > 0 {
				fmt.Fprintln(a.stdout, "certificates:")
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "  SERIAL\tISSUED FOR\tNOT AFTER\tREVOKED")
				for _, c := range res.GetCertificates() {
					revoked := "no"
					if c.GetRevoked() {
						revoked = "yes (" + c.GetRevokeReason() + ")"
					}
					fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.GetSerial(), c.GetIssuedFor(), c.GetNotAfter().AsTime().UTC().Format(time.RFC3339), revoked)
				}
				return tw.Flush()
			}
			return nil
		},
	}, &showF)

	var rmF apiFlags
	remove := apiCommand(&cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a server: revoke its certificates and cut its agent off",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := rmF.dial()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.RemoveServer(cmd.Context(), &adminv1.RemoveServerRequest{Server: args[0]}); err != nil {
				return rpcErr(err)
			}
			fmt.Fprintf(a.stdout, "server %s removed\n", args[0])
			return nil
		},
	}, &rmF)

	var disF apiFlags
	disable := apiCommand(&cobra.Command{
		Use:   "disable NAME",
		Short: "Disable a server: keep its record, revoke its certificates and cut its agent off",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := disF.dial()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.DisableServer(cmd.Context(), &adminv1.DisableServerRequest{Server: args[0]}); err != nil {
				return rpcErr(err)
			}
			fmt.Fprintf(a.stdout, "server %s disabled\n", args[0])
			return nil
		},
	}, &disF)

	var enF apiFlags
	var enTTL time.Duration
	enable := apiCommand(&cobra.Command{
		Use:   "enable NAME",
		Short: "Re-enable a disabled server and print a new join token (its agent enrolls again)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := enF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.EnableServer(cmd.Context(), &adminv1.EnableServerRequest{Server: args[0], TokenTtl: durationpb.New(enTTL)})
			if err != nil {
				return rpcErr(err)
			}
			return a.printJoin(enF.output, "enabled", res.GetServer(), res.GetToken(), res.GetTokenExpiresAt().AsTime(), res.GetCaPin(), res.GetEnrollCommand(), res.GetInstallCommand(), res.GetWarnings())
		},
	}, &enF)
	enable.Flags().DurationVar(&enTTL, "token-ttl", time.Hour, "how long the join token is valid")

	var revF apiFlags
	revokeCert := apiCommand(&cobra.Command{
		Use:   "revoke-cert SERIAL",
		Short: "Revoke one agent certificate by serial (see server show) and cut the stream using it (admin)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := revF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.RevokeCertificate(cmd.Context(), &adminv1.RevokeCertificateRequest{Serial: args[0]})
			if err != nil {
				return rpcErr(err)
			}
			if revF.output == "json" {
				return a.printJSON(map[string]any{"serial": args[0], "server_id": res.GetServerId(), "revoked": true})
			}
			fmt.Fprintf(a.stdout, "certificate %s of server %s revoked\n", args[0], res.GetServerId())
			return nil
		},
	}, &revF)

	cmd.AddCommand(add, list, show, remove, disable, enable, revokeCert)
	cmd.AddCommand(a.serverRootCmds()...)
	return cmd
}

func serverJSON(s *adminv1.Server) map[string]any {
	m := map[string]any{
		"id": s.GetId(), "name": s.GetName(), "status": s.GetStatus(), "labels": s.GetLabels(),
		"hostname": s.GetHostname(), "agent_version": s.GetAgentVersion(), "last_seen_at": nil,
		"created_at": s.GetCreatedAt().AsTime(), "ip_address": s.GetIpAddress(), "allow_root": s.GetAllowRoot(),
	}
	if s.GetLastSeenAt() != nil {
		m["last_seen_at"] = s.GetLastSeenAt().AsTime()
	}
	var facts any = map[string]any{}
	_ = jsonUnmarshal(s.GetFactsJson(), &facts)
	m["facts"] = facts
	return m
}

func (a *app) metricsCmd() *cobra.Command {
	var f apiFlags
	var since, step time.Duration
	cmd := apiCommand(&cobra.Command{
		Use:   "metrics NAME",
		Short: "Show a server's metrics, downsampled",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := f.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.GetMetrics(cmd.Context(), &adminv1.GetMetricsRequest{Server: args[0], Since: durationpb.New(since), Step: durationpb.New(step)})
			if err != nil {
				return rpcErr(err)
			}
			if f.output == "json" {
				out := make([]map[string]any, 0, len(res.GetPoints()))
				for _, p := range res.GetPoints() {
					out = append(out, map[string]any{
						"t": p.GetT().AsTime(), "cpu_percent": p.GetCpuPercent(), "load1": p.GetLoad1(), "load5": p.GetLoad5(), "load15": p.GetLoad15(),
						"mem_used": p.GetMemUsed(), "mem_total": p.GetMemTotal(), "swap_used": p.GetSwapUsed(), "swap_total": p.GetSwapTotal(),
						"disk_used": p.GetDiskUsed(), "disk_total": p.GetDiskTotal(), "disk_read_bps": p.GetDiskReadBps(), "disk_write_bps": p.GetDiskWriteBps(),
						"net_rx_bps": p.GetNetRxBps(), "net_tx_bps": p.GetNetTxBps(),
						// Raw, unrounded; null when no sample in the bucket measured it.
						"disk_avail": p.GetDiskAvail(), "disk_percent": optPercent(p.GetDiskPercent(), p.GetHasDiskPercent()),
						"inodes_total": p.GetInodesTotal(), "inodes_free": p.GetInodesFree(),
						"inodes_percent": optPercent(p.GetInodesPercent(), p.GetHasInodesPercent()),
					})
				}
				return a.printJSON(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tCPU%\tLOAD1\tMEM USED\tDISK USE%\tINODE USE%\tNET RX/s\tNET TX/s")
			for _, p := range res.GetPoints() {
				fmt.Fprintf(tw, "%s\t%.1f\t%.2f\t%s\t%s\t%s\t%s\t%s\n", p.GetT().AsTime().Local().Format(time.TimeOnly), p.GetCpuPercent(), p.GetLoad1(),
					ofTotal(p.GetMemUsed(), p.GetMemTotal()), dfPercent(p.GetDiskPercent(), p.GetHasDiskPercent()),
					dfPercent(p.GetInodesPercent(), p.GetHasInodesPercent()), humanBytes(p.GetNetRxBps()), humanBytes(p.GetNetTxBps()))
			}
			return tw.Flush()
		},
	}, &f)
	cmd.Flags().DurationVar(&since, "since", time.Hour, "how far back")
	cmd.Flags().DurationVar(&step, "step", 0, "bucket width (default since/120)")
	return cmd
}

// printJoin shows a join token once, with the commands that use it.
func (a *app) printJoin(output, verb string, srv *adminv1.Server, token string, exp time.Time, pin, enroll, install string, warnings []string) error {
	if output == "json" {
		return a.printJSON(map[string]any{
			"id": srv.GetId(), "name": srv.GetName(), "token": token, "token_expires_at": exp,
			"ca_pin": pin, "enroll_command": enroll, "install_command": install, "warnings": append([]string{}, warnings...),
		})
	}
	fmt.Fprintf(a.stdout, "Server %s %s (%s). The join token is shown once and expires %s.\n\n",
		srv.GetName(), verb, srv.GetId(), exp.Local().Format(time.RFC3339))
	fmt.Fprintf(a.stdout, "Install and enroll on the server (as root):\n  %s\n\nOr, with berth-agent already installed:\n  %s\n\n", install, enroll)
	fmt.Fprintf(a.stdout, "Both ask for the join token (or read it from --token-file FILE); it is not on the command line, so it stays out of ps and shell history:\n  %s\n", token)
	for _, w := range warnings {
		fmt.Fprintf(a.stderr, "\nwarning: %s\n", w)
	}
	return nil
}

// serverRootCmds: allow-root and deny-root, an admin's per-server grant
// to run apps as root (without it the controller and the agent refuse).
func (a *app) serverRootCmds() []*cobra.Command {
	mk := func(use, short string, allow bool) *cobra.Command {
		var f apiFlags
		return apiCommand(&cobra.Command{
			Use: use + " NAME", Short: short, Args: exactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, done, err := f.dial()
				if err != nil {
					return err
				}
				defer done()
				res, err := c.SetServerAllowRoot(cmd.Context(), &adminv1.SetServerAllowRootRequest{Server: args[0], Allow: allow})
				if err != nil {
					return rpcErr(err)
				}
				if f.output == "json" {
					return a.printJSON(serverJSON(res.GetServer()))
				}
				fmt.Fprintf(a.stdout, "server %s: apps %s\n", res.GetServer().GetName(), rootWord(res.GetServer().GetAllowRoot()))
				return nil
			},
		}, &f)
	}
	return []*cobra.Command{
		mk("allow-root", "Allow apps on a server to run as root (admin)", true),
		mk("deny-root", "Refuse apps on a server that run as root (admin); their next deploy fails", false),
	}
}

func rootWord(allow bool) string {
	if allow {
		return "may run as root"
	}
	return "may not run as root"
}

// humanBytes prints a byte count in binary units (1.5 GiB); -o json keeps
// the raw numbers.
func humanBytes(b float64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%.0f B", b)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := 0
	for b /= unit; b >= unit && i < len(units)-1; i++ {
		b /= unit
	}
	return fmt.Sprintf("%.1f %s", b, units[i])
}

// ofTotal is "used / total" in human units, or just used without a total.
// dfPercent shows a use percentage as df does: rounded up to a whole
// percent (a disk 90.1% full shows 91%, never 90%), "-" when unknown.
func dfPercent(pct float64, ok bool) string {
	if !ok {
		return "-"
	}
	return strconv.FormatFloat(math.Ceil(pct), 'f', 0, 64) + "%"
}

// optPercent is a percentage for JSON, nil (null) when unknown.
func optPercent(pct float64, ok bool) any {
	if !ok {
		return nil
	}
	return pct
}

func ofTotal(used, total float64) string {
	if total <= 0 {
		return humanBytes(used)
	}
	return humanBytes(used) + " / " + humanBytes(total)
}
