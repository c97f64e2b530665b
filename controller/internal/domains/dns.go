package domains

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/providers/dns/cloudflare"
	"github.com/go-acme/lego/v5/providers/dns/exec"
	"github.com/go-acme/lego/v5/providers/dns/httpreq"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/auth"
	"github.com/berthhq/berth/controller/internal/store"
)

// The DNS-01 providers Berth builds in, with the variables each takes
// (lego's names). Only these are linked: importing lego's whole provider
// registry would link every cloud's SDK into the controller.
var dnsProviders = map[string]struct {
	required, optional []string
}{
	"cloudflare": {required: []string{"CF_DNS_API_TOKEN"}, optional: []string{"CF_ZONE_API_TOKEN"}},
	"httpreq":    {required: []string{"HTTPREQ_ENDPOINT"}, optional: []string{"HTTPREQ_MODE", "HTTPREQ_USERNAME", "HTTPREQ_PASSWORD"}},
	"exec":       {required: []string{"EXEC_PATH"}, optional: []string{"EXEC_MODE"}},
}

var varRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,63}$`)

// DNSProvider is a provider as shown: its variables' names, never values.
type DNSProvider struct {
	store.DNSProvider
	Variables []string
}

// AddDNSProvider stores a DNS-01 provider's credentials, sealed and
// write-only (admin scope: they control the install's DNS zones).
func (s *Service) AddDNSProvider(ctx context.Context, pr *auth.Principal, peer Peer, name, provider string, creds map[string]string) (DNSProvider, error) {
	if err := require(pr, store.ScopeAdmin); err != nil {
		return DNSProvider{}, err
	}
	name, provider = strings.ToLower(strings.TrimSpace(name)), strings.ToLower(strings.TrimSpace(provider))
	if !regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`).MatchString(name) {
		return DNSProvider{}, fmt.Errorf("%w: a DNS provider name is a lowercase slug (a-z, 0-9, . _ -), at most 63 characters", ErrInvalid)
	}
	spec, ok := dnsProviders[provider]
	if !ok {
		known := make([]string, 0, len(dnsProviders))
		for k := range dnsProviders {
			known = append(known, k)
		}
		sort.Strings(known)
		return DNSProvider{}, fmt.Errorf("%w: DNS provider %q is not built in (%s)", ErrInvalid, provider, strings.Join(known, ", "))
	}
	if provider == "exec" && !s.cfg.AllowDNSExec {
		return DNSProvider{}, fmt.Errorf("%w: the exec provider runs a program on the controller; start it with --acme-allow-dns-exec to allow it", ErrInvalid)
	}
	if len(creds) > 16 {
		return DNSProvider{}, fmt.Errorf("%w: at most 16 variables", ErrInvalid)
	}
	for k, v := range creds {
		if !varRE.MatchString(k) || len(v) > 4096 {
			return DNSProvider{}, fmt.Errorf("%w: variable %q: names are upper case, values at most 4096 bytes", ErrInvalid, truncate(k, 64))
		}
		if !contains(spec.required, k) && !contains(spec.optional, k) {
			return DNSProvider{}, fmt.Errorf("%w: %s takes %s, not %s", ErrInvalid, provider, strings.Join(append(append([]string{}, spec.required...), spec.optional...), ", "), k)
		}
	}
	for _, k := range spec.required {
		if strings.TrimSpace(creds[k]) == "" {
			return DNSProvider{}, fmt.Errorf("%w: %s needs %s", ErrInvalid, provider, k)
		}
	}
	if _, _, err := buildDNSProvider(provider, creds, s.cfg); err != nil {
		return DNSProvider{}, err
	}
	buf, err := json.Marshal(creds)
	if err != nil {
		return DNSProvider{}, err
	}
	p, err := s.st.CreateDNSProvider(ctx, name, provider, buf)
	if err != nil {
		return DNSProvider{}, err
	}
	vars := varNames(creds)
	pa := store.CreateActivityParams{
		Action: kind.DNSProviderCreated, SubjectType: "dns_provider", SubjectID: &p.ID, SubjectName: name,
		Changes: map[string]any{"provider": provider, "variables": vars}, IPAddress: peer.IP, UserAgent: peer.UserAgent,
	}
	pa.ActorType, pa.Actor, pa.UserID = pr.Actor()
	if _, err := s.st.CreateActivity(ctx, pa); err != nil {
		s.log.Error("record activity", "action", kind.DNSProviderCreated, "err", err)
	}
	return DNSProvider{DNSProvider: p, Variables: vars}, nil
}

// ListDNSProviders lists the providers with their variables' names.
func (s *Service) ListDNSProviders(ctx context.Context, pr *auth.Principal) ([]DNSProvider, error) {
	if err := require(pr, store.ScopeRead); err != nil {
		return nil, err
	}
	ps, err := s.st.DNSProviders(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]DNSProvider, len(ps))
	for i, p := range ps {
		out[i] = DNSProvider{DNSProvider: p}
		if raw, err := s.st.DNSProviderCredentials(p); err == nil {
			var m map[string]string
			if json.Unmarshal(raw, &m) == nil {
				out[i].Variables = varNames(m)
			}
		}
	}
	return out, nil
}

func varNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// dnsProvider opens a stored provider for an issuance.
func (s *Service) dnsProvider(ctx context.Context, id store.ID) (challenge.Provider, []dns01.ChallengeOption, error) {
	p, err := s.st.DNSProviderByID(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	raw, err := s.st.DNSProviderCredentials(p)
	if err != nil {
		return nil, nil, err
	}
	var creds map[string]string
	if err := json.Unmarshal(raw, &creds); err != nil {
		return nil, nil, fmt.Errorf("dns provider %s: credentials unreadable", p.Name)
	}
	return buildDNSProvider(p.Provider, creds, s.cfg)
}

// buildDNSProvider makes a lego provider from its variables, never from
// the process environment (several providers of one kind may exist).
func buildDNSProvider(provider string, creds map[string]string, cfg Config) (challenge.Provider, []dns01.ChallengeOption, error) {
	var opts []dns01.ChallengeOption
	if cfg.DNSSkipPropagationCheck {
		opts = append(opts, dns01.PropagationWait(0, true))
	}
	var (
		p   challenge.Provider
		err error
	)
	switch provider {
	case "cloudflare":
		c := cloudflare.NewDefaultConfig()
		c.AuthToken, c.ZoneToken = creds["CF_DNS_API_TOKEN"], creds["CF_ZONE_API_TOKEN"]
		p, err = cloudflare.NewDNSProviderConfig(c)
	case "httpreq":
		c := httpreq.NewDefaultConfig()
		u, perr := url.Parse(creds["HTTPREQ_ENDPOINT"])
		if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, nil, fmt.Errorf("%w: HTTPREQ_ENDPOINT must be an http(s) URL", ErrInvalid)
		}
		c.Endpoint, c.Mode, c.Username, c.Password = u, creds["HTTPREQ_MODE"], creds["HTTPREQ_USERNAME"], creds["HTTPREQ_PASSWORD"]
		c.PropagationTimeout, c.PollingInterval = 2*time.Minute, 2*time.Second
		p, err = httpreq.NewDNSProviderConfig(c)
	case "exec":
		if !cfg.AllowDNSExec {
			return nil, nil, fmt.Errorf("%w: the exec DNS provider is not allowed on this controller", ErrInvalid)
		}
		c := exec.NewDefaultConfig()
		c.Program, c.Mode = creds["EXEC_PATH"], creds["EXEC_MODE"]
		p, err = exec.NewDNSProviderConfig(c)
	default:
		return nil, nil, fmt.Errorf("%w: DNS provider %q is not built in", ErrInvalid, provider)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrInvalid, provider, err)
	}
	return p, opts, nil
}
