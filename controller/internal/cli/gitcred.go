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
	return m
}

func (a *app) gitCredentialCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "git-credential", Short: "Add, list and delete git credentials (deploy keys, HTTPS tokens)"}

	var addF apiFlags
	var sshKey, https, tokenStdin bool
	var keyFile, username string
	add := apiCommand(&cobra.Command{
		Use:   "add NAME",
		Short: "Add an SSH deploy key (generated ed25519, or --private-key-file) or an HTTPS username and token",
		Long: "With --ssh-key Berth generates an ed25519 key and prints its public key to add as a deploy key\n" +
			"on the git host (or imports --private-key-file). With --https the token is read from standard input.\n" +
			"The secret is stored encrypted and never shown again.",
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &adminv1.AddGitCredentialRequest{Name: args[0]}
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
			fmt.Fprintln(tw, "NAME\tKIND\tFINGERPRINT/USERNAME")
			for _, cr := range res.GetCredentials() {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", cr.GetName(), cr.GetKind(), cr.GetFingerprint()+cr.GetUsername())
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
	return cmd
}
