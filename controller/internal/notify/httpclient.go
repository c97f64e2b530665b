package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrPrivateTarget: the URL resolves to an address the controller does not
// call (SSRF protection), see AllowPrivateTargets.
var ErrPrivateTarget = errors.New("target address is private, loopback, link-local or unspecified")

const (
	maxURL          = 2048
	maxResponseRead = 64 << 10
	httpTimeout     = 15 * time.Second
)

// blockedAddr says whether ip is one the controller refuses to call.
func blockedAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() ||
		ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() ||
		ip.IsUnspecified() ||
		// Carrier-grade NAT (100.64/10) is private in practice.
		netip.MustParsePrefix("100.64.0.0/10").Contains(ip)
}

// newHTTPClient returns the client channels send with. The check runs in
// the dialer's Control, on the address actually dialled after resolution,
// so a name that resolves to a public address when validated and to a
// private one when used (DNS rebinding) is still refused.
func newHTTPClient(allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if !allowPrivate {
		d.Control = func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("dial %s: %w", network, ErrPrivateTarget)
			}
			if blockedAddr(ap.Addr()) {
				return ErrPrivateTarget
			}
			return nil
		}
	}
	tr := &http.Transport{
		Proxy:                 nil, // a proxy would make the dial check meaningless
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: httpTimeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   httpTimeout,
		// A receiver that redirects is misconfigured; following it could
		// carry the signed body (and a token in the URL's path) elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// checkURL validates a channel URL before it is stored: https (or http)
// with a host, no user info, not too long. With allowPrivate false, a
// literal private address is refused here already; names are checked at
// dial time.
func checkURL(raw string, allowPrivate bool) (*url.URL, error) {
	if raw == "" || len(raw) > maxURL {
		return nil, fmt.Errorf("%w: the URL must be 1 to %d characters", ErrInvalid, maxURL)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Opaque != "" {
		// The URL itself is not repeated: it may hold a token.
		return nil, fmt.Errorf("%w: not an http(s) URL with a host", ErrInvalid)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: the URL must not carry a user or password", ErrInvalid)
	}
	if strings.ContainsAny(u.Host, " \t\r\n") {
		return nil, fmt.Errorf("%w: bad host", ErrInvalid)
	}
	if !allowPrivate {
		h := u.Hostname()
		if a, err := netip.ParseAddr(h); err == nil && blockedAddr(a) {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, ErrPrivateTarget)
		}
		if strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost") {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, ErrPrivateTarget)
		}
	}
	return u, nil
}

// post sends body and reports an error for anything but a 2xx. The error
// names the status and the URL's host only.
func post(ctx context.Context, c *http.Client, rawURL string, hdr http.Header, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, strings.NewReader(string(body)))
	if err != nil {
		return errors.New("build request: bad URL")
	}
	req.Header = hdr
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "berth-notify/1")
	host := req.URL.Hostname()
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("post to %s: %s", host, scrub(err, rawURL))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseRead))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		err := fmt.Errorf("post to %s: HTTP %d", host, resp.StatusCode)
		if d, ok := retryAfter(resp, time.Now()); ok && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
			return &retryAfterError{error: err, after: d}
		}
		return err
	}
	return nil
}

// retryAfterError is a refusal that says when to try again (a 429 or 503
// with Retry-After).
type retryAfterError struct {
	error
	after time.Duration
}

func (e *retryAfterError) Unwrap() error { return e.error }

// retryAfter reads a Retry-After header: delay seconds or an HTTP date.
func retryAfter(resp *http.Response, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > 7*24*3600 {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// scrub is err's message with the URL (which may carry a token) removed:
// net/http's *url.Error quotes the whole URL.
func scrub(err error, rawURL string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	if rawURL != "" {
		msg = strings.ReplaceAll(msg, rawURL, "<url>")
	}
	if errors.Is(err, ErrPrivateTarget) {
		return ErrPrivateTarget.Error()
	}
	return msg
}
