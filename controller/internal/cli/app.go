package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

func appJSON(p *adminv1.App) map[string]any {
	env := map[string][]string{}
	for sc, k := range p.GetEnvKeys() {
		env[sc] = append([]string{}, k.GetKeys()...)
	}
	procs := make([]map[string]any, 0, len(p.GetProcesses()))
	for _, pr := range p.GetProcesses() {
		procs = append(procs, processJSON(pr))
	}
	scheds := make([]map[string]any, 0, len(p.GetSchedules()))
	for _, s := range p.GetSchedules() {
		scheds = append(scheds, scheduleJSON(s))
	}
	return map[string]any{
		"id": p.GetId(), "name": p.GetName(), "server": p.GetServer(), "server_id": p.GetServerId(), "repository_url": p.GetRepositoryUrl(),
		"branch": p.GetBranch(), "credential": p.GetCredential(), "deploy_path": p.GetDeployPath(), "run_as_user": p.GetRunAsUser(),
		"deploy_script": p.GetDeployScript(), "health_check_command": p.GetHealthCheckCommand(), "health_check_url": p.GetHealthCheckUrl(),
		"health_check_timeout_seconds": p.GetHealthCheckTimeoutSeconds(), "reload_command": p.GetReloadCommand(),
		"releases_to_keep": p.GetReleasesToKeep(), "shared_paths": p.GetSharedPaths(), "timeout_seconds": p.GetTimeoutSeconds(),
		"has_webhook_secret": p.GetHasWebhookSecret(), "env_keys": env, "current_deployment_id": p.GetCurrentDeploymentId(),
		"created_at": p.GetCreatedAt().AsTime(), "deploy_script_path": p.GetDeployScriptPath(),
		"processes": procs, "schedules": scheds, "upstream_port": p.GetUpstreamPort(),
		"upstream_url": p.GetUpstreamUrl(), "static_root": p.GetStaticRoot(),
	}
}

func (a *app) appCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "app", Short: "Create, inspect, update and delete apps; their environment, processes, logs and schedules"}

	var createF apiFlags
	var req adminv1.CreateAppRequest
	var scriptFile string
	create := apiCommand(&cobra.Command{
		Use:   "create NAME",
		Short: "Create an app deployed from a git repository onto a server",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if req.Server == "" || req.RepositoryUrl == "" {
				return usageError{errors.New("--server and --repo are required")}
			}
			if scriptFile != "" {
				b, err := os.ReadFile(scriptFile)
				if err != nil {
					return fmt.Errorf("deploy script: %w", err)
				}
				req.DeployScript = string(b)
			}
			c, done, err := createF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.CreateApp(cmd.Context(), &req)
			if err != nil {
				return rpcErr(err)
			}
			if createF.output == "json" {
				return a.printJSON(appJSON(res.GetApp()))
			}
			p := res.GetApp()
			fmt.Fprintf(a.stdout, "app %s created on %s (%s, branch %s) at %s, run as %s\n", p.GetName(), p.GetServer(), p.GetRepositoryUrl(), p.GetBranch(), p.GetDeployPath(), p.GetRunAsUser())
			return nil
		},
	}, &createF)
	f := create.Flags()
	f.StringVar(&req.Server, "server", "", "server to deploy on (name or id)")
	f.StringVar(&req.RepositoryUrl, "repo", "", "git repository URL (https://… or git@host:…/ssh://…)")
	f.StringVar(&req.Branch, "branch", "", "branch to deploy (default main)")
	f.StringVar(&req.Credential, "credential", "", "git credential for a private repository")
	f.StringVar(&req.DeployPath, "path", "", "deploy path on the server (default /srv/berth/NAME)")
	f.StringVar(&req.RunAsUser, "user", "", "system user that owns the releases and runs the deploy script (default berth)")
	f.StringVar(&scriptFile, "deploy-script", "", "file with the deploy script, run with bash from the new release directory")
	f.StringVar(&req.DeployScriptPath, "deploy-script-path", "", "the deploy script is this file of the release being deployed (like deploy/berth.sh)")
	create.MarkFlagsMutuallyExclusive("deploy-script", "deploy-script-path")
	f.StringVar(&req.HealthCheckCommand, "health-cmd", "", "health check command, run with bash in the new release; must exit 0")
	f.StringVar(&req.HealthCheckUrl, "health-url", "", "health check URL polled until it answers 2xx")
	f.Uint32Var(&req.HealthCheckTimeoutSeconds, "health-timeout", 0, "health check timeout in seconds (default 30)")
	f.StringVar(&req.ReloadCommand, "reload-cmd", "", "command run after `current` switches (deploy and rollback)")
	f.Uint32Var(&req.ReleasesToKeep, "keep", 0, "releases to keep (default 5)")
	f.StringArrayVar(&req.SharedPaths, "shared", nil, "path inside the release linked to DEPLOY_PATH/shared (repeatable)")
	f.Uint32Var(&req.TimeoutSeconds, "timeout", 0, "deploy timeout in seconds (default 1800)")

	var listF apiFlags
	var server string
	list := apiCommand(&cobra.Command{
		Use:   "list",
		Short: "List apps",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := listF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.ListApps(cmd.Context(), &adminv1.ListAppsRequest{Server: server})
			if err != nil {
				return rpcErr(err)
			}
			if listF.output == "json" {
				out := make([]map[string]any, 0, len(res.GetApps()))
				for _, p := range res.GetApps() {
					out = append(out, appJSON(p))
				}
				return a.printJSON(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSERVER\tBRANCH\tREPOSITORY\tCURRENT")
			for _, p := range res.GetApps() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.GetName(), p.GetServer(), p.GetBranch(), p.GetRepositoryUrl(), p.GetCurrentDeploymentId())
			}
			return tw.Flush()
		},
	}, &listF)
	list.Flags().StringVar(&server, "server", "", "only this server's apps")

	var showF apiFlags
	show := apiCommand(&cobra.Command{
		Use:   "show APP",
		Short: "Show every setting of an app, its processes, schedules and upstream (variable names only, never values)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := showF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.GetApp(cmd.Context(), &adminv1.GetAppRequest{App: args[0]})
			if err != nil {
				return rpcErr(err)
			}
			if showF.output == "json" {
				return a.printJSON(appJSON(res.GetApp()))
			}
			printApp(a.stdout, res.GetApp())
			return nil
		},
	}, &showF)

	env := &cobra.Command{Use: "env", Short: "Set an app's environment variables"}
	var setF apiFlags
	var scope string
	var unset []string
	set := apiCommand(&cobra.Command{
		Use:   "set APP KEY=VALUE...",
		Short: "Set variables: common ones, or with --env those that overlay them in production or staging",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || (len(args) < 2 && len(unset) == 0) {
				return usageError{errors.New("give the app and at least one KEY=VALUE")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			vars := map[string]string{}
			for _, kv := range args[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageError{fmt.Errorf("want KEY=VALUE, got an argument without '=' (%q)", k)}
				}
				vars[k] = v
			}
			sc := "common"
			switch scope {
			case "":
			case "production", "staging":
				sc = scope
			default:
				return usageError{errors.New("--env must be production or staging")}
			}
			c, done, err := setF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.SetAppEnv(cmd.Context(), &adminv1.SetAppEnvRequest{App: args[0], Scope: sc, Set: vars, Unset: unset})
			if err != nil {
				return rpcErr(err)
			}
			if setF.output == "json" {
				return a.printJSON(map[string]any{"app": args[0], "scope": sc, "keys": res.GetKeys()})
			}
			fmt.Fprintf(a.stdout, "%s %s environment: %s\n", args[0], sc, strings.Join(res.GetKeys(), " "))
			return nil
		},
	}, &setF)
	set.Flags().StringVar(&scope, "env", "", "production or staging (default: the common variables)")
	set.Flags().StringArrayVar(&unset, "unset", nil, "remove this variable (repeatable)")
	env.AddCommand(set)

	var hookF apiFlags
	hook := apiCommand(&cobra.Command{
		Use:   "webhook-secret APP",
		Short: "Generate the app's webhook secret and print it with the GitHub and GitLab endpoint paths (shown once)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := hookF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.SetAppWebhookSecret(cmd.Context(), &adminv1.SetAppWebhookSecretRequest{App: args[0]})
			if err != nil {
				return rpcErr(err)
			}
			if hookF.output == "json" {
				return a.printJSON(map[string]any{"secret": res.GetSecret(), "github_path": res.GetGithubPath(), "gitlab_path": res.GetGitlabPath()})
			}
			fmt.Fprintf(a.stdout, "secret: %s\ngithub: POST %s\ngitlab: POST %s\n", res.GetSecret(), res.GetGithubPath(), res.GetGitlabPath())
			return nil
		},
	}, &hookF)

	cmd.AddCommand(create, list, show, env, hook, a.appUpdateCmd(), a.appDeleteCmd(), a.processCmd(), a.logsCmd(), a.scheduleCmd())
	return cmd
}

// appUpdateCmd changes the settings whose flags are given. --keep,
// --timeout and --health-timeout need the write scope; every other flag
// decides what code runs, as whom or where, and needs deploy.
func (a *app) appUpdateCmd() *cobra.Command {
	var f apiFlags
	var repo, branch, credential, path, user, scriptFile, scriptPath, healthCmd, healthURL, reloadCmd string
	var upstream, staticRoot string
	var healthTimeout, keep, timeout uint32
	var shared []string
	cmd := apiCommand(&cobra.Command{
		Use:   "update APP",
		Short: "Change an app's settings (only the flags given)",
		Long: "Changes only the settings whose flags are given. --keep, --timeout and --health-timeout need the\n" +
			"write scope; the others decide what code runs, as whom or where, and need deploy. --credential ''\n" +
			"detaches the credential; --health-cmd '', --health-url '' and --reload-cmd '' clear them.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fl := cmd.Flags()
			req := &adminv1.UpdateAppRequest{App: args[0]}
			str := func(name string, v string) *string {
				if fl.Changed(name) {
					return &v
				}
				return nil
			}
			num := func(name string, v uint32) *uint32 {
				if fl.Changed(name) {
					return &v
				}
				return nil
			}
			req.RepositoryUrl, req.Branch, req.Credential = str("repo", repo), str("branch", branch), str("credential", credential)
			req.DeployPath, req.RunAsUser = str("path", path), str("user", user)
			req.DeployScriptPath = str("deploy-script-path", scriptPath)
			req.HealthCheckCommand, req.HealthCheckUrl, req.ReloadCommand = str("health-cmd", healthCmd), str("health-url", healthURL), str("reload-cmd", reloadCmd)
			req.HealthCheckTimeoutSeconds, req.ReleasesToKeep, req.TimeoutSeconds = num("health-timeout", healthTimeout), num("keep", keep), num("timeout", timeout)
			req.Upstream, req.StaticRoot = str("upstream", upstream), str("static-root", staticRoot)
			if fl.Changed("shared") {
				req.SharedPaths, req.SetSharedPaths = shared, true
			}
			if scriptFile != "" {
				b, err := os.ReadFile(scriptFile)
				if err != nil {
					return fmt.Errorf("deploy script: %w", err)
				}
				s := string(b)
				req.DeployScript = &s
			}
			c, done, err := f.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.UpdateApp(cmd.Context(), req)
			if err != nil {
				return rpcErr(err)
			}
			if f.output == "json" {
				return a.printJSON(appJSON(res.GetApp()))
			}
			fmt.Fprintf(a.stdout, "app %s updated\n", res.GetApp().GetName())
			return nil
		},
	}, &f)
	fs := cmd.Flags()
	fs.StringVar(&repo, "repo", "", "git repository URL")
	fs.StringVar(&upstream, "upstream", "", "where the app's domains forward: http://127.0.0.1:PORT or unix:/path.sock ('' goes back to the app's own upstream port)")
	fs.StringVar(&staticRoot, "static-root", "", "serve the app's domains from this directory of current instead of an upstream ('' clears)")
	fs.StringVar(&branch, "branch", "", "branch to deploy")
	fs.StringVar(&credential, "credential", "", "git credential ('' detaches it)")
	fs.StringVar(&path, "path", "", "deploy path on the server")
	fs.StringVar(&user, "user", "", "system user that runs the app (root needs the server's allow-root)")
	fs.StringVar(&scriptFile, "deploy-script", "", "file with the new deploy script (replaces a script path)")
	fs.StringVar(&scriptPath, "deploy-script-path", "", "the deploy script is this file of the release (replaces a stored script; '' clears)")
	cmd.MarkFlagsMutuallyExclusive("deploy-script", "deploy-script-path")
	fs.StringVar(&healthCmd, "health-cmd", "", "health check command ('' clears)")
	fs.StringVar(&healthURL, "health-url", "", "health check URL ('' clears)")
	fs.Uint32Var(&healthTimeout, "health-timeout", 0, "health check timeout in seconds")
	fs.StringVar(&reloadCmd, "reload-cmd", "", "command run after `current` switches ('' clears)")
	fs.Uint32Var(&keep, "keep", 0, "releases to keep")
	fs.StringArrayVar(&shared, "shared", nil, "shared path (repeatable; replaces the list)")
	fs.Uint32Var(&timeout, "timeout", 0, "deploy timeout in seconds")
	return cmd
}

// printApp prints every setting of an app; variable names, never values.
func printApp(w io.Writer, p *adminv1.App) {
	script := "(none)"
	switch {
	case p.GetDeployScriptPath() != "":
		script = "from the release: " + p.GetDeployScriptPath()
	case p.GetDeployScript() != "":
		script = fmt.Sprintf("stored (%d bytes; -o json shows it)", len(p.GetDeployScript()))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"id", p.GetId()}, {"name", p.GetName()}, {"server", p.GetServer()}, {"repository", p.GetRepositoryUrl()},
		{"branch", p.GetBranch()}, {"credential", or(p.GetCredential(), "(none)")}, {"path", p.GetDeployPath()},
		{"user", p.GetRunAsUser()}, {"deploy script", script},
		{"health check command", or(p.GetHealthCheckCommand(), "(none)")}, {"health check url", or(p.GetHealthCheckUrl(), "(none)")},
		{"health check timeout", fmt.Sprintf("%ds", p.GetHealthCheckTimeoutSeconds())}, {"reload command", or(p.GetReloadCommand(), "(none)")},
		{"keep releases", fmt.Sprint(p.GetReleasesToKeep())}, {"shared paths", or(strings.Join(p.GetSharedPaths(), " "), "(none)")},
		{"timeout", fmt.Sprintf("%ds", p.GetTimeoutSeconds())}, {"webhook secret", map[bool]string{true: "set", false: "not set"}[p.GetHasWebhookSecret()]},
		{"current", or(p.GetCurrentDeploymentId(), "(none)")},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	for _, sc := range []string{"common", "production", "staging"} {
		fmt.Fprintf(tw, "env %s:\t%s\n", sc, strings.Join(p.GetEnvKeys()[sc].GetKeys(), " "))
	}
	upstream := "(none: no process has --port)"
	if p.GetUpstreamPort() > 0 {
		upstream = fmt.Sprintf("127.0.0.1:%d", p.GetUpstreamPort())
	}
	fmt.Fprintf(tw, "upstream:\t%s\n", upstream)
	tw.Flush()
	if len(p.GetProcesses()) == 0 {
		fmt.Fprintln(w, "processes: (none)")
	} else {
		fmt.Fprintln(w, "processes:")
		printProcesses(w, p.GetProcesses())
	}
	if len(p.GetSchedules()) == 0 {
		fmt.Fprintln(w, "schedules: (none)")
	} else {
		fmt.Fprintln(w, "schedules:")
		printSchedules(w, p.GetSchedules())
	}
}

// appDeleteCmd deletes an app; its deployments stay as history.
func (a *app) appDeleteCmd() *cobra.Command {
	var f apiFlags
	var keep bool
	cmd := apiCommand(&cobra.Command{
		Use:   "delete APP",
		Short: "Delete an app: stop its processes and schedules, remove its releases, current, shared and .env (unless --keep-files); its deployments stay",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := f.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.DeleteApp(cmd.Context(), &adminv1.DeleteAppRequest{App: args[0], KeepFiles: keep})
			if err != nil {
				return rpcErr(err)
			}
			if f.output == "json" {
				out := map[string]any{"app": res.GetApp().GetName(), "id": res.GetApp().GetId(), "deleted": res.GetDeleted()}
				if j := res.GetJob(); j != nil {
					out["job"] = deploymentJSON(j)
				}
				return a.printJSON(out)
			}
			if res.GetDeleted() {
				fmt.Fprintf(a.stdout, "app %s deleted; its files stay in %s on %s\n", res.GetApp().GetName(), res.GetApp().GetDeployPath(), res.GetApp().GetServer())
				return nil
			}
			fmt.Fprintf(a.stdout, "deleting app %s: job %s removes its files from %s (berth deployments logs %s --follow); the app is deleted when it succeeds\n",
				res.GetApp().GetName(), res.GetJob().GetId(), res.GetApp().GetDeployPath(), res.GetJob().GetId())
			return nil
		},
	}, &f)
	cmd.Flags().BoolVar(&keep, "keep-files", false, "delete the app but leave its files on the server")
	return cmd
}
