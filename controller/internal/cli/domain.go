package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// withDomains dials the domain service.
func withDomains(ctx context.Context, f *apiFlags, fn func(context.Context, adminv1.DomainServiceClient) error) error {
	conn, err := f.conn()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := fn(ctx, adminv1.NewDomainServiceClient(conn)); err != nil {
		return rpcErr(err)
	}
	return nil
}

func domainJSON(d *adminv1.Domain) map[string]any {
	return map[string]any{
		"id": d.GetId(), "hostname": d.GetHostname(), "app": d.GetApp(), "app_id": d.GetAppId(), "server_id": d.GetServerId(),
		"primary": d.GetPrimary(), "redirect_to": d.GetRedirectTo(), "redirect_status": d.GetRedirectStatus(),
		"force_https": d.GetForceHttps(), "hsts": d.GetHsts(), "status": d.GetStatus(), "last_error": d.GetLastError(),
		"tls_mode": d.GetTlsMode(), "acme_directory": d.GetAcmeDirectory(), "cert_path": d.GetCertPath(), "key_path": d.GetKeyPath(),
		"tls_status": d.GetTlsStatus(), "tls_issuer": d.GetTlsIssuer(), "tls_serial": d.GetTlsSerial(),
		"tls_not_before": tsOrNil(d.GetTlsNotBefore()), "tls_expires_at": tsOrNil(d.GetTlsExpiresAt()),
		"tls_last_attempt_at": tsOrNil(d.GetTlsLastAttemptAt()), "tls_next_attempt_at": tsOrNil(d.GetTlsNextAttemptAt()),
		"tls_last_error": d.GetTlsLastError(), "dns_provider": d.GetDnsProvider(), "created_at": tsString(d.GetCreatedAt()),
	}
}

// daysLeft says how long a certificate has, for people.
func daysLeft(d *adminv1.Domain) string {
	if d.GetTlsExpiresAt() == nil {
		return "-"
	}
	left := time.Until(d.GetTlsExpiresAt().AsTime())
	if left <= 0 {
		return "expired"
	}
	if left < 48*time.Hour {
		return fmt.Sprintf("%.0fh", left.Hours())
	}
	return fmt.Sprintf("%dd", int(left.Hours()/24))
}

func (a *app) domainCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "domain", Short: "Host names routed to apps by their server's nginx, with TLS certificates"}

	var addF apiFlags
	var primary, noForce, hsts bool
	var redirectTo, tlsMode, certPath, keyPath, acmeDir, dnsProvider string
	var redirectStatus uint32
	add := apiCommand(&cobra.Command{
		Use:   "add APP HOST",
		Short: "Route a host name to an app (certificate from ACME by default)",
		Long: "Routes HOST (lowercased, trailing dot dropped, IDNs in punycode) to APP on its server's nginx.\n" +
			"--tls acme (default) gets a certificate by ACME, HTTP-01 through the server (DNS-01 with --dns-provider,\n" +
			"required for *.example.com); --tls custom uses --cert-path and --key-path already on the server;\n" +
			"--tls off serves plain HTTP. --redirect-to makes HOST only redirect (e.g. www -> apex).",
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &adminv1.AddDomainRequest{
				App: args[0], Hostname: args[1], Primary: primary, RedirectTo: redirectTo, RedirectStatus: redirectStatus,
				NoForceHttps: noForce, Tls: tlsMode, CertPath: certPath, KeyPath: keyPath, AcmeDirectory: acmeDir, Hsts: hsts,
				DnsProvider: dnsProvider,
			}
			switch tlsMode {
			case "", "acme", "custom", "off":
			default:
				return usageError{fmt.Errorf("--tls %q: want acme, custom or off", tlsMode)}
			}
			if (certPath != "" || keyPath != "") && tlsMode != "custom" {
				return usageError{errors.New("--cert-path and --key-path go with --tls custom")}
			}
			return withDomains(cmd.Context(), &addF, func(ctx context.Context, c adminv1.DomainServiceClient) error {
				res, err := c.AddDomain(ctx, req)
				if err != nil {
					return err
				}
				d := res.GetDomain()
				if addF.output == "json" {
					return a.printJSON(domainJSON(d))
				}
				fmt.Fprintf(a.stdout, "%s routed to %s (tls %s)\n", d.GetHostname(), d.GetApp(), d.GetTlsMode())
				return nil
			})
		},
	}, &addF)
	af := add.Flags()
	af.BoolVar(&primary, "primary", false, "make it the app's primary host name")
	af.StringVar(&redirectTo, "redirect-to", "", "only redirect this host to URL (or host)")
	af.Uint32Var(&redirectStatus, "redirect-status", 0, "redirect status: 301 (default), 302, 307 or 308")
	af.StringVar(&tlsMode, "tls", "acme", "acme, custom or off")
	af.StringVar(&certPath, "cert-path", "", "custom: certificate chain (PEM) on the server")
	af.StringVar(&keyPath, "key-path", "", "custom: private key (PEM) on the server")
	af.StringVar(&acmeDir, "acme-directory", "", "ACME directory for this domain (default the controller's --acme-directory)")
	af.BoolVar(&noForce, "no-force-https", false, "answer plain HTTP instead of redirecting it to HTTPS")
	af.BoolVar(&hsts, "hsts", false, "send Strict-Transport-Security over HTTPS")
	af.StringVar(&dnsProvider, "dns-provider", "", "answer ACME by DNS-01 through this provider (berth domain dns-provider add)")

	var listF apiFlags
	var listApp string
	list := apiCommand(&cobra.Command{
		Use: "list", Short: "List domains, soonest certificate expiry first", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withDomains(cmd.Context(), &listF, func(ctx context.Context, c adminv1.DomainServiceClient) error {
				res, err := c.ListDomains(ctx, &adminv1.ListDomainsRequest{App: listApp})
				if err != nil {
					return err
				}
				if listF.output == "json" {
					out := []map[string]any{}
					for _, d := range res.GetDomains() {
						out = append(out, domainJSON(d))
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HOST\tAPP\tROUTING\tTLS\tEXPIRES\tLEFT\tLAST ERROR")
				for _, d := range res.GetDomains() {
					host := d.GetHostname()
					if d.GetPrimary() {
						host += " (primary)"
					}
					if d.GetRedirectTo() != "" {
						host += fmt.Sprintf(" -> %s (%d)", d.GetRedirectTo(), d.GetRedirectStatus())
					}
					errText := d.GetLastError()
					if errText == "" {
						errText = d.GetTlsLastError()
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\t%s\t%s\n", host, d.GetApp(), d.GetStatus(), d.GetTlsMode(), d.GetTlsStatus(),
						tsString(d.GetTlsExpiresAt()), daysLeft(d), dash(firstLine(errText)))
				}
				return tw.Flush()
			})
		},
	}, &listF)
	list.Flags().StringVar(&listApp, "app", "", "only this app's domains")

	var showF apiFlags
	show := apiCommand(&cobra.Command{
		Use: "show HOST", Short: "Show a domain: routing, TLS status, issuer, expiry, last error, next attempt", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withDomains(cmd.Context(), &showF, func(ctx context.Context, c adminv1.DomainServiceClient) error {
				res, err := c.GetDomain(ctx, &adminv1.GetDomainRequest{Hostname: args[0]})
				if err != nil {
					return err
				}
				if showF.output == "json" {
					return a.printJSON(domainJSON(res.GetDomain()))
				}
				printDomain(a.stdout, res.GetDomain())
				return nil
			})
		},
	}, &showF)

	var rmF apiFlags
	rm := apiCommand(&cobra.Command{
		Use: "remove HOST", Short: "Remove a domain from nginx and from every renewal", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withDomains(cmd.Context(), &rmF, func(ctx context.Context, c adminv1.DomainServiceClient) error {
				if _, err := c.RemoveDomain(ctx, &adminv1.RemoveDomainRequest{Hostname: args[0]}); err != nil {
					return err
				}
				if rmF.output == "json" {
					return a.printJSON(map[string]any{"hostname": args[0], "removed": true})
				}
				fmt.Fprintf(a.stdout, "%s removed\n", args[0])
				return nil
			})
		},
	}, &rmF)

	var renewF apiFlags
	var follow bool
	renew := apiCommand(&cobra.Command{
		Use: "renew HOST", Short: "Ask for a certificate attempt now (--follow waits for its outcome)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withDomains(cmd.Context(), &renewF, func(ctx context.Context, c adminv1.DomainServiceClient) error {
				res, err := c.RenewDomain(ctx, &adminv1.RenewDomainRequest{Hostname: args[0]})
				if err != nil {
					return err
				}
				if !follow {
					if renewF.output == "json" {
						return a.printJSON(domainJSON(res.GetDomain()))
					}
					fmt.Fprintf(a.stdout, "certificate attempt for %s asked for\n", res.GetDomain().GetHostname())
					return nil
				}
				st, err := c.WatchDomain(ctx, &adminv1.WatchDomainRequest{Hostname: args[0]})
				if err != nil {
					return err
				}
				var last *adminv1.Domain
				for {
					m, err := st.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						return err
					}
					last = m.GetDomain()
					if renewF.output != "json" {
						fmt.Fprintf(a.stdout, "%s  tls %s\n", time.Now().UTC().Format(time.TimeOnly), last.GetTlsStatus())
					}
				}
				if last == nil {
					return errors.New("no answer from the controller")
				}
				if renewF.output == "json" {
					if err := a.printJSON(domainJSON(last)); err != nil {
						return err
					}
				} else {
					printDomain(a.stdout, last)
				}
				if last.GetTlsStatus() != "active" {
					return fmt.Errorf("certificate attempt for %s ended %s: %s", last.GetHostname(), last.GetTlsStatus(), last.GetTlsLastError())
				}
				return nil
			})
		},
	}, &renewF)
	renew.Flags().BoolVar(&follow, "follow", false, "wait until the attempt ended and print its outcome (exit status 1 unless active)")

	cmd.AddCommand(add, list, show, rm, renew, a.dnsProviderCmd())
	return cmd
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

func printDomain(w io.Writer, d *adminv1.Domain) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, dash(v)) }
	row("host", d.GetHostname())
	row("app", d.GetApp())
	row("primary", fmt.Sprint(d.GetPrimary()))
	if d.GetRedirectTo() != "" {
		row("redirect", fmt.Sprintf("%s (%d)", d.GetRedirectTo(), d.GetRedirectStatus()))
	}
	row("force https", fmt.Sprint(d.GetForceHttps()))
	row("hsts", fmt.Sprint(d.GetHsts()))
	row("routing", d.GetStatus())
	row("routing error", d.GetLastError())
	row("tls", d.GetTlsMode())
	if d.GetTlsMode() == "custom" {
		row("certificate", d.GetCertPath())
		row("key", d.GetKeyPath())
	}
	if d.GetAcmeDirectory() != "" {
		row("acme directory", d.GetAcmeDirectory())
	}
	if d.GetDnsProvider() != "" {
		row("dns provider", d.GetDnsProvider())
	}
	row("tls status", d.GetTlsStatus())
	row("issuer", d.GetTlsIssuer())
	row("serial", d.GetTlsSerial())
	row("expires", tsString(d.GetTlsExpiresAt())+" ("+daysLeft(d)+")")
	row("last attempt", tsString(d.GetTlsLastAttemptAt()))
	row("next attempt", tsString(d.GetTlsNextAttemptAt()))
	row("last error", d.GetTlsLastError())
	_ = tw.Flush()
}

// dnsProviderCmd: berth domain dns-provider add|list. Credentials come
// from standard input as NAME=VALUE lines, never from the command line.
func (a *app) dnsProviderCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dns-provider", Short: "DNS-01 providers (for wildcard certificates); credentials are write-only"}
	var addF apiFlags
	var provider string
	add := apiCommand(&cobra.Command{
		Use:   "add NAME --provider P",
		Short: "Store a DNS provider's credentials, read as NAME=VALUE lines from standard input",
		Long:  "Providers: cloudflare (CF_DNS_API_TOKEN), httpreq (HTTPREQ_ENDPOINT ...), exec (EXEC_PATH, needs berth serve --acme-allow-dns-exec).",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if provider == "" {
				return usageError{errors.New("--provider is required")}
			}
			raw, err := io.ReadAll(io.LimitReader(a.stdin, 64<<10))
			if err != nil {
				return err
			}
			creds := map[string]string{}
			for _, line := range strings.Split(string(raw), "\n") {
				line = strings.TrimSpace(line)
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				k, v, ok := strings.Cut(line, "=")
				if !ok {
					return usageError{errors.New("standard input: want NAME=VALUE lines")}
				}
				creds[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
			return withDomains(cmd.Context(), &addF, func(ctx context.Context, c adminv1.DomainServiceClient) error {
				res, err := c.AddDNSProvider(ctx, &adminv1.AddDNSProviderRequest{Name: args[0], Provider: provider, Credentials: creds})
				if err != nil {
					return err
				}
				p := res.GetProvider()
				if addF.output == "json" {
					return a.printJSON(map[string]any{"id": p.GetId(), "name": p.GetName(), "provider": p.GetProvider(), "variables": orEmpty(p.GetVariables())})
				}
				fmt.Fprintf(a.stdout, "dns provider %s (%s) added with %s\n", p.GetName(), p.GetProvider(), strings.Join(p.GetVariables(), ", "))
				return nil
			})
		},
	}, &addF)
	add.Flags().StringVar(&provider, "provider", "", "lego provider code: cloudflare, httpreq or exec")
	var listF apiFlags
	list := apiCommand(&cobra.Command{
		Use: "list", Short: "List DNS providers (never their credentials)", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withDomains(cmd.Context(), &listF, func(ctx context.Context, c adminv1.DomainServiceClient) error {
				res, err := c.ListDNSProviders(ctx, &adminv1.ListDNSProvidersRequest{})
				if err != nil {
					return err
				}
				if listF.output == "json" {
					out := []map[string]any{}
					for _, p := range res.GetProviders() {
						out = append(out, map[string]any{"id": p.GetId(), "name": p.GetName(), "provider": p.GetProvider(), "variables": orEmpty(p.GetVariables())})
					}
					return a.printJSON(out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tPROVIDER\tVARIABLES")
				for _, p := range res.GetProviders() {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", p.GetName(), p.GetProvider(), strings.Join(p.GetVariables(), ","))
				}
				return tw.Flush()
			})
		},
	}, &listF)
	cmd.AddCommand(add, list)
	return cmd
}
