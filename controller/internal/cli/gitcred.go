package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

func credentialJSON(c *adminv1.GitCredential) map[string]any {
	m := map[string]any{"id": c.GetId(), "name": c.GetName(), "kind": c.GetKind(), "created_at": c.GetCreatedAt().AsTime()}
	if c.GetKind() == "ssh" {
		m["public_key"], m["fingerprint"] = c.GetPublicKey(), c.GetFingerprint()
	} else {
		m["username"] = c.GetUsername()
	}
	if c.GetLastUsedAt() != nil {
		m["last_used_at"] = c.GetLastUsedAt().AsTime()
	}
	m["allowed_hosts"] = nonNil(c.GetAllowedHosts())
	m["shared_with"] = nonNil(c.GetSharedWith())
	if c.GetKind() == "ssh" {
		m["known_hosts"] = c.GetKnownHosts()
	}
	return m
}

// nonNil makes an empty list print as [] rather than null.
func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

func (a *app) gitCredentialCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "git-credential", Short: "Add, list and delete git credentials (deploy keys, HTTPS tokens)"}

	var addF apiFlags
	var sshKey, https, tokenStdin bool
	var keyFile, username, knownHostsFile string
	var hosts []string
	add := apiCommand(&cobra.Command{
		Use:   "add NAME",
		Short: "Add an SSH deploy key (generated ed25519, or --private-key-file) or an HTTPS username and token",
		Long: "With --ssh-key Berth generates an ed25519 key and prints its public key to add as a deploy key\n" +
			"on the git host (or imports --private-key-file). With --https the token is read from standard input.\n" +
			"The secret is stored encrypted and never shown again. --host binds it to the repository hosts it\n" +
			"may be sent to (default: the host of the first app that uses it); --known-hosts-file pins the SSH\n" +
			"host keys its fetches trust (or pin them later with scan-host and trust-host).",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &adminv1.AddGitCredentialRequest{Name: args[0], AllowedHosts: hosts}
			if knownHostsFile != "" {
				if !sshKey {
					return usageError{errors.New("--known-hosts-file goes with --ssh-key")}
				}
				b, err := os.ReadFile(knownHostsFile)
				if err != nil {
					return fmt.Errorf("known hosts file: %w", err)
				}
				req.KnownHosts = string(b)
			}
			switch {
			case sshKey == https:
				return usageError{errors.New("give exactly one of --ssh-key or --https")}
			case sshKey:
				if username != "" || tokenStdin {
					return usageError{errors.New("--username and --token-stdin go with --https")}
				}
				req.Kind = "ssh"
				if keyFile != "" {
					b, err := os.ReadFile(keyFile)
					if err != nil {
						return fmt.Errorf("private key file: %w", err)
					}
					req.PrivateKey = string(b)
				}
			default:
				if keyFile != "" {
					return usageError{errors.New("--private-key-file goes with --ssh-key")}
				}
				if username == "" || !tokenStdin {
					return usageError{errors.New("--https needs --username and --token-stdin (tokens never go on the command line)")}
				}
				line, err := bufio.NewReader(io.LimitReader(a.stdin, 8192)).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				req.Kind, req.Username, req.Token = "https", username, strings.TrimRight(line, "\r\n")
				if req.Token == "" {
					return usageError{errors.New("no token on standard input")}
				}
			}
			c, done, err := addF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.AddGitCredential(cmd.Context(), req)
			if err != nil {
				return rpcErr(err)
			}
			cr := res.GetCredential()
			if addF.output == "json" {
				return a.printJSON(credentialJSON(cr))
			}
			fmt.Fprintf(a.stdout, "git credential %s added (%s)\n", cr.GetName(), cr.GetKind())
			if cr.GetKind() == "ssh" {
				fmt.Fprintf(a.stdout, "fingerprint: %s\nadd this public key as a read-only deploy key on the git host:\n%s\n", cr.GetFingerprint(), cr.GetPublicKey())
			}
			return nil
		},
	}, &addF)
	add.Flags().BoolVar(&sshKey, "ssh-key", false, "an SSH deploy key (generated ed25519 unless --private-key-file)")
	add.Flags().StringVar(&keyFile, "private-key-file", "", "import this unencrypted OpenSSH/PEM private key instead of generating one")
	add.Flags().BoolVar(&https, "https", false, "an HTTPS username and token")
	add.Flags().StringVar(&username, "username", "", "HTTPS username")
	add.Flags().BoolVar(&tokenStdin, "token-stdin", false, "read the HTTPS token from standard input")
	add.Flags().StringArrayVar(&hosts, "host", nil, "a repository host the credential may be sent to (repeatable; default: the first app's host)")
	add.Flags().StringVar(&knownHostsFile, "known-hosts-file", "", "pin the SSH host keys in this OpenSSH known_hosts file (plain host names)")

	var listF apiFlags
	list := apiCommand(&cobra.Command{
		Use:   "list",
		Short: "List git credentials (never their secrets)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, done, err := listF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.ListGitCredentials(cmd.Context(), &adminv1.ListGitCredentialsRequest{})
			if err != nil {
				return rpcErr(err)
			}
			if listF.output == "json" {
				out := make([]map[string]any, 0, len(res.GetCredentials()))
				for _, cr := range res.GetCredentials() {
					out = append(out, credentialJSON(cr))
				}
				return a.printJSON(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tFINGERPRINT/USERNAME\tHOSTS")
			for _, cr := range res.GetCredentials() {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cr.GetName(), cr.GetKind(), cr.GetFingerprint()+cr.GetUsername(), strings.Join(cr.GetAllowedHosts(), ","))
			}
			return tw.Flush()
		},
	}, &listF)

	var rmF apiFlags
	remove := apiCommand(&cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a git credential no app uses",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := rmF.dial()
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.DeleteGitCredential(cmd.Context(), &adminv1.DeleteGitCredentialRequest{Credential: args[0]}); err != nil {
				return rpcErr(err)
			}
			fmt.Fprintf(a.stdout, "git credential %s deleted\n", args[0])
			return nil
		},
	}, &rmF)
	cmd.AddCommand(add, list, remove)
	cmd.AddCommand(a.gitCredentialAccessCmds()...)
	return cmd
}

// gitCredentialAccessCmds: who may attach a credential (share, unshare)
// and which SSH host keys it trusts (scan-host, trust-host). Admin only.
func (a *app) gitCredentialAccessCmds() []*cobra.Command {
	shareCmd := func(use, short string, share bool) *cobra.Command {
		var f apiFlags
		var user string
		c := apiCommand(&cobra.Command{
			Use: use + " NAME --user EMAIL", Short: short, Args: exactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if user == "" {
					return usageError{errors.New("--user EMAIL is required")}
				}
				c, done, err := f.dial()
				if err != nil {
					return err
				}
				defer done()
				var cr *adminv1.GitCredential
				if share {
					res, err := c.ShareGitCredential(cmd.Context(), &adminv1.ShareGitCredentialRequest{Credential: args[0], User: user})
					if err != nil {
						return rpcErr(err)
					}
					cr = res.GetCredential()
				} else {
					res, err := c.UnshareGitCredential(cmd.Context(), &adminv1.UnshareGitCredentialRequest{Credential: args[0], User: user})
					if err != nil {
						return rpcErr(err)
					}
					cr = res.GetCredential()
				}
				if f.output == "json" {
					return a.printJSON(credentialJSON(cr))
				}
				fmt.Fprintf(a.stdout, "git credential %s shared with: %s\n", cr.GetName(), orNone(strings.Join(cr.GetSharedWith(), ", ")))
				return nil
			},
		}, &f)
		c.Flags().StringVar(&user, "user", "", "the user's email")
		return c
	}
	share := shareCmd("share", "Let a user attach a git credential to apps (admins always may)", true)
	unshare := shareCmd("unshare", "Withdraw a user's right to attach a git credential", false)

	var scanF apiFlags
	scan := apiCommand(&cobra.Command{
		Use:   "scan-host NAME HOST[:PORT]",
		Short: "Show an SSH host's key fingerprints, to check before trust-host (stores nothing)",
		Long: "The controller connects to HOST (port 22 by default) and prints the host keys it offers. Compare\n" +
			"them with the fingerprints the git host publishes, then pin one with trust-host.",
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, done, err := scanF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.ScanGitHost(cmd.Context(), &adminv1.ScanGitHostRequest{Credential: args[0], Address: args[1]})
			if err != nil {
				return rpcErr(err)
			}
			if scanF.output == "json" {
				out := make([]map[string]any, 0, len(res.GetKeys()))
				for _, k := range res.GetKeys() {
					out = append(out, map[string]any{"type": k.GetType(), "fingerprint": k.GetFingerprint()})
				}
				return a.printJSON(out)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TYPE\tFINGERPRINT")
			for _, k := range res.GetKeys() {
				fmt.Fprintf(tw, "%s\t%s\n", k.GetType(), k.GetFingerprint())
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "check a fingerprint with the git host, then: berth git-credential trust-host %s %s --fingerprint SHA256:...\n", args[0], args[1])
			return nil
		},
	}, &scanF)

	var trustF apiFlags
	var fingerprint string
	trust := apiCommand(&cobra.Command{
		Use:   "trust-host NAME HOST[:PORT] --fingerprint SHA256:...",
		Short: "Pin an SSH host's key to a credential, if a fresh scan offers the fingerprint given",
		Args:  exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if fingerprint == "" {
				return usageError{errors.New("--fingerprint SHA256:... is required (from scan-host, checked with the git host)")}
			}
			c, done, err := trustF.dial()
			if err != nil {
				return err
			}
			defer done()
			res, err := c.TrustGitHost(cmd.Context(), &adminv1.TrustGitHostRequest{Credential: args[0], Address: args[1], Fingerprint: fingerprint})
			if err != nil {
				return rpcErr(err)
			}
			if trustF.output == "json" {
				return a.printJSON(credentialJSON(res.GetCredential()))
			}
			fmt.Fprintf(a.stdout, "git credential %s now trusts %s's %s key %s\n", args[0], args[1], res.GetKey().GetType(), res.GetKey().GetFingerprint())
			return nil
		},
	}, &trustF)
	trust.Flags().StringVar(&fingerprint, "fingerprint", "", "the SHA256:... fingerprint checked with the git host")
	return []*cobra.Command{share, unshare, scan, trust}
}

func orNone(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}
