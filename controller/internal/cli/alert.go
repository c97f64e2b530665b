package cli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

var alertMetrics = []string{"cpu", "memory", "swap", "load", "disk", "inodes", "net_rx", "net_tx", "offline"}

func alertJSON(r *adminv1.AlertRule) map[string]any {
	firing := []map[string]any{}
	for _, f := range r.GetFiring() {
		firing = append(firing, map[string]any{"server_id": f.GetServerId(), "server": f.GetServerName(), "mount": f.GetMount(),
			"pending_since": tsOrNil(f.GetPendingSince()), "since": tsOrNil(f.GetSince()), "value": f.GetValue()})
	}
	var above, below any
	if r.Above != nil {
		above, below = r.GetAbove(), r.GetResolveBelow()
	}
	return map[string]any{"id": r.GetId(), "name": r.GetName(), "metric": r.GetMetric(), "above": above, "resolve_below": below,
		"for": r.GetFor().AsDuration().String(), "for_seconds": int64(r.GetFor().AsDuration() / time.Second), "mount": r.GetMount(),
		"server_id": r.GetServerId(), "server": r.GetServerName(), "label_key": r.GetLabelKey(), "label_value": r.GetLabelValue(),
		"level": r.GetLevel(), "created_at": tsString(r.GetCreatedAt()), "firing": firing}
}

// alertCondition is a rule in one phrase: "disk > 90 for 5m0s (resolves < 85)".
func alertCondition(r *adminv1.AlertRule) string {
	d := r.GetFor().AsDuration().String()
	if r.Above == nil {
		return r.GetMetric() + " for " + d
	}
	return fmt.Sprintf("%s > %s for %s (resolves < %s)", r.GetMetric(), fmtNum(r.GetAbove()), d, fmtNum(r.GetResolveBelow()))
}

func fmtNum(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func alertScope(r *adminv1.AlertRule) string {
	s := "every server"
	switch {
	case r.GetServerName() != "":
		s = "server " + r.GetServerName()
	case r.GetServerId() != "":
		s = "server " + r.GetServerId()
	case r.GetLabelKey() != "":
		s = "label " + r.GetLabelKey() + "=" + r.GetLabelValue()
	}
	if r.GetMount() != "" {
		s += ", mount " + r.GetMount()
	}
	return s
}

func alertFiringText(r *adminv1.AlertRule) string {
	if len(r.GetFiring()) == 0 {
		return "-"
	}
	var parts []string
	for _, f := range r.GetFiring() {
		where := f.GetServerName()
		if f.GetMount() != "" {
			where += ":" + f.GetMount()
		}
		parts = append(parts, where+" since "+tsString(f.GetSince()))
	}
	return strings.Join(parts, ", ")
}

func (a *app) alertCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "alert", Short: "Threshold alerts on server metrics (add and remove: admin)"}

	var addF apiFlags
	var metric, mount, server, label, level string
	var above, resolveBelow float64
	var forD time.Duration
	var replace bool
	add := apiCommand(&cobra.Command{
		Use:   "add NAME",
		Short: "Alert when a metric stays above a threshold for a duration",
		Long: "berth alert add NAME --metric cpu|memory|swap|load|disk|inodes|net_rx|net_tx|offline [--above X] [--for DURATION]\n" +
			"    [--resolve-below Y] [--mount PATH] [--server S | --label K=V] [--level warning|critical] [--replace]\n\n" +
			"cpu, memory, swap, disk and inodes are percentages, load is load1 per core, net_rx and net_tx are bytes per second.\n" +
			"It fires once the metric stayed above X for DURATION (default 5m; offline: 2m) and resolves below Y\n" +
			"(default X minus 5 points for percentages, 10% below X otherwise). disk and inodes are per mount: --mount PATH,\n" +
			"or every mount. offline takes no threshold: it fires once a server has sent no heartbeat for DURATION.\n" +
			"--replace changes an existing alert of that name (what it has firing is resolved first).",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			if metric == "" {
				return usageError{fmt.Errorf("--metric is required: %s", strings.Join(alertMetrics, ", "))}
			}
			if !slices.Contains(alertMetrics, metric) {
				return usageError{fmt.Errorf("--metric %q: want one of %s", metric, strings.Join(alertMetrics, ", "))}
			}
			if server != "" && label != "" {
				return usageError{errors.New("give --server or --label, not both")}
			}
			if level != "" && level != "warning" && level != "critical" {
				return usageError{fmt.Errorf("--level %q: want warning or critical", level)}
			}
			if mount != "" && metric != "disk" && metric != "inodes" {
				return usageError{fmt.Errorf("--mount is for disk and inodes only, not %s", metric)}
			}
			req := &adminv1.AddAlertRequest{Name: args[0], Metric: metric, Mount: mount, Server: server, Label: label, Level: level, Replace: replace}
			if metric == "offline" {
				if fl.Changed("above") || fl.Changed("resolve-below") {
					return usageError{errors.New("offline takes no --above or --resolve-below")}
				}
			} else {
				if !fl.Changed("above") {
					return usageError{fmt.Errorf("--above X is required for %s", metric)}
				}
				if math.IsNaN(above) || math.IsInf(above, 0) || above < 0 {
					return usageError{errors.New("--above must be a number of at least 0")}
				}
				req.Above = &above
				if fl.Changed("resolve-below") {
					if math.IsNaN(resolveBelow) || math.IsInf(resolveBelow, 0) || resolveBelow < 0 {
						return usageError{errors.New("--resolve-below must be a number of at least 0")}
					}
					req.ResolveBelow = &resolveBelow
				}
			}
			if fl.Changed("for") {
				if forD < 0 || forD > 24*time.Hour {
					return usageError{errors.New("--for must be from 0s to 24h")}
				}
				req.For = durationpb.New(forD)
			}
			return withNotify(cmd.Context(), &addF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				res, err := c.AddAlert(ctx, req)
				if err != nil {
					return err
				}
				r := res.GetAlert()
				if addF.output == "json" {
					return a.printJSON(alertJSON(r))
				}
				fmt.Fprintf(a.stdout, "added alert %s: %s on %s, %s\n", r.GetName(), alertCondition(r), alertScope(r), r.GetLevel())
				return nil
			})
		},
	}, &addF)
	add.Flags().StringVar(&metric, "metric", "", strings.Join(alertMetrics, "|"))
	add.Flags().Float64Var(&above, "above", 0, "threshold (percent, load per core, or bytes per second)")
	add.Flags().Float64Var(&resolveBelow, "resolve-below", 0, "resolve below this (default a margin below --above)")
	add.Flags().DurationVar(&forD, "for", 0, "how long it must hold before firing (default 5m; offline 2m)")
	add.Flags().StringVar(&mount, "mount", "", "disk and inodes: one mount point (default every mount)")
	add.Flags().StringVar(&server, "server", "", "only this server")
	add.Flags().StringVar(&label, "label", "", "only servers with this label (K=V)")
	add.Flags().StringVar(&level, "level", "", "warning (default) or critical")
	add.Flags().BoolVar(&replace, "replace", false, "change the alert of that name if there is one")

	var listF apiFlags
	list := apiCommand(&cobra.Command{
		Use: "list", Short: "List alert rules and where they fire now", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withNotify(cmd.Context(), &listF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				res, err := c.ListAlerts(ctx, &adminv1.ListAlertsRequest{})
				if err != nil {
					return err
				}
				if listF.output == "json" {
					out := []map[string]any{}
					for _, r := range res.GetAlerts() {
						out = append(out, alertJSON(r))
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tCONDITION\tON\tLEVEL\tFIRING")
				for _, r := range res.GetAlerts() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.GetName(), alertCondition(r), alertScope(r), r.GetLevel(), alertFiringText(r))
				}
				return tw.Flush()
			})
		},
	}, &listF)

	var showF apiFlags
	show := apiCommand(&cobra.Command{
		Use: "show NAME", Short: "Show an alert rule and where it fires now", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNotify(cmd.Context(), &showF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				res, err := c.GetAlert(ctx, &adminv1.GetAlertRequest{Name: args[0]})
				if err != nil {
					return err
				}
				r := res.GetAlert()
				if showF.output == "json" {
					return a.printJSON(alertJSON(r))
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "name:\t%s\nid:\t%s\ncondition:\t%s\non:\t%s\nlevel:\t%s\ncreated:\t%s\n", r.GetName(), r.GetId(),
					alertCondition(r), alertScope(r), r.GetLevel(), tsString(r.GetCreatedAt()))
				if len(r.GetFiring()) == 0 {
					fmt.Fprintln(tw, "firing:\tnowhere")
				}
				for _, f := range r.GetFiring() {
					where := f.GetServerName()
					if f.GetMount() != "" {
						where += " " + f.GetMount()
					}
					fmt.Fprintf(tw, "firing:\t%s since %s (value %s)\n", where, tsString(f.GetSince()), fmtNum(f.GetValue()))
				}
				return tw.Flush()
			})
		},
	}, &showF)

	var rmF apiFlags
	remove := apiCommand(&cobra.Command{
		Use: "remove NAME", Short: "Remove an alert rule (what it has firing is resolved)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withNotify(cmd.Context(), &rmF, func(ctx context.Context, c adminv1.NotificationServiceClient) error {
				if _, err := c.RemoveAlert(ctx, &adminv1.RemoveAlertRequest{Name: args[0]}); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "removed alert %s\n", args[0])
				return nil
			})
		},
	}, &rmF)

	cmd.AddCommand(add, list, show, remove)
	return cmd
}
