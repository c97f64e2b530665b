package ca

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// ServerName is the fixed DNS name in every controller serving certificate.
// Agents and the CLI verify it (tls.Config.ServerName) whatever address they
// dial, and no agent certificate ever carries it.
const ServerName = "controller.berth.internal"

// Lifetimes.
const (
	// CALifetime is how long the root certificate is valid.
	CALifetime = 10 * 365 * 24 * time.Hour
	// DefaultAgentCertTTL is an agent certificate's lifetime when none is given.
	DefaultAgentCertTTL = 7 * 24 * time.Hour
	// MaxAgentCertTTL is the longest agent certificate lifetime accepted.
	MaxAgentCertTTL = 90 * 24 * time.Hour
	// DefaultServerCertTTL is the serving certificate's lifetime when none is
	// given.
	DefaultServerCertTTL = 90 * 24 * time.Hour
	// MaxServerCertTTL is the longest serving certificate lifetime accepted.
	MaxServerCertTTL = 397 * 24 * time.Hour
	// MinCertTTL is the shortest lifetime accepted for any issued
	// certificate. It catches a unit mistake (7 meaning 7ns) and leaves
	// room for renewal at a third of the lifetime.
	MinCertTTL = time.Minute
	// ClockSkew is how far NotBefore is set in the past.
	ClockSkew = time.Minute
)

// Options tunes a CA. The zero value is usable after CheckAndSetDefaults.
type Options struct {
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// AgentCertTTL is the default agent certificate lifetime
	// (DefaultAgentCertTTL when 0, at most MaxAgentCertTTL).
	AgentCertTTL time.Duration
	// ServerCertTTL is the default serving certificate lifetime
	// (DefaultServerCertTTL when 0, at most MaxServerCertTTL).
	ServerCertTTL time.Duration
	// Hostnames are extra DNS names or IP addresses put in every serving
	// certificate, next to ServerName and the loopback addresses.
	Hostnames []string
}

// CheckAndSetDefaults validates o and fills in defaults. Hostnames are
// normalised (DNS names lowercased, without a trailing dot; duplicates
// removed).
func (o *Options) CheckAndSetDefaults() error {
	if o.Now == nil {
		o.Now = time.Now
	}
	agentTTL, err := checkTTL("agent certificate", o.AgentCertTTL, DefaultAgentCertTTL, MaxAgentCertTTL)
	if err != nil {
		return err
	}
	serverTTL, err := checkTTL("server certificate", o.ServerCertTTL, DefaultServerCertTTL, MaxServerCertTTL)
	if err != nil {
		return err
	}
	names, err := normalizeHostnames(o.Hostnames)
	if err != nil {
		return err
	}
	o.AgentCertTTL, o.ServerCertTTL, o.Hostnames = agentTTL, serverTTL, names
	return nil
}

// checkTTL returns def for 0 and refuses values outside [MinCertTTL, max].
func checkTTL(what string, ttl, def, max time.Duration) (time.Duration, error) {
	switch {
	case ttl == 0:
		return def, nil
	case ttl < MinCertTTL:
		return 0, fmt.Errorf("ca: %s lifetime %s is below the minimum %s", what, ttl, MinCertTTL)
	case ttl > max:
		return 0, fmt.Errorf("ca: %s lifetime %s is above the maximum %s", what, ttl, max)
	}
	return ttl, nil
}

// normalizeHostnames validates names: each is an IP address or a DNS name
// (letters, digits and hyphens in dot-separated labels; no wildcards, no
// ports). DNS names are lowercased and lose a trailing dot; duplicates are
// dropped, order kept.
func normalizeHostnames(names []string) ([]string, error) {
	var out []string
	seen := make(map[string]bool, len(names))
	for _, h := range names {
		n := h
		if ip := net.ParseIP(n); ip != nil {
			n = ip.String()
		} else {
			n = strings.TrimSuffix(strings.ToLower(n), ".")
			if err := checkDNSName(n); err != nil {
				return nil, fmt.Errorf("ca: hostname %q: %w", h, err)
			}
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

func checkDNSName(n string) error {
	if n == "" {
		return errors.New("empty")
	}
	if len(n) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("want dot-separated labels of 1 to 63 characters")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("a label starts or ends with a hyphen")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return errors.New("want letters, digits, hyphens and dots only (no ports, no wildcards)")
			}
		}
	}
	return nil
}
