package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// remoteRef asks an http(s) repository where ref is, in-process, with
// git's smart HTTP protocol: version 2's ls-refs for that one ref, or the
// version 0 advertisement of a server that speaks nothing newer. It is a
// redeploy's shortcut only: a deploy that gets no answer, or a different
// one, waits for its fetch as before. Like git here, it sends the
// credential as basic auth, uses no proxy and the system's CAs, and
// follows redirects of its first request only.
func (j *job) remoteRef(ctx context.Context, ref string) (string, error) {
	base, err := url.Parse(j.spec.RepoURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") {
		return "", errors.New("not an http(s) repository")
	}
	base.Path = strings.TrimSuffix(base.Path, "/")
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 10 * time.Second},
		Timeout:   30 * time.Second,
	}
	defer client.CloseIdleConnections()
	header := http.Header{
		"Git-Protocol": {"version=2"},
		"User-Agent":   {"git/berth-agent"},
	}
	// The credential goes only to a host it is bound to (Start checked the
	// URL already; this keeps the probe honest on its own), and never
	// follows a redirect to another host.
	c := j.spec.Credential
	if c.kind() == "https" && c.allows(base.Hostname()) {
		header.Set("Authorization", c.basicAuth())
	}
	client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if !c.allows(req.URL.Hostname()) {
			req.Header.Del("Authorization")
		}
		return nil
	}

	info := *base
	info.Path += "/info/refs"
	info.RawQuery = "service=git-upload-pack"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, info.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header = header.Clone()
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-git-upload-pack-advertisement" {
		return "", fmt.Errorf("info/refs: %s", resp.Status)
	}
	// Where git would go next: the redirect's target, if any.
	next := *resp.Request.URL
	next.Path = strings.TrimSuffix(next.Path, "/info/refs") + "/git-upload-pack"
	next.RawQuery = ""
	pr := newPktReader(resp.Body)
	first, err := pr.line()
	if err != nil {
		return "", err
	}
	if first == "# service=git-upload-pack\n" {
		if _, err := pr.line(); !errors.Is(err, errFlush) {
			return "", errors.New("info/refs: no flush after the service line")
		}
		if first, err = pr.line(); err != nil {
			return "", err
		}
	}
	if first != "version 2\n" {
		return advertisedRef(first, pr, ref)
	}
	if next.Host != base.Host || next.Scheme != base.Scheme {
		// Only the first request may be redirected (git's default), and
		// the credential stays with the host it was given for.
		return "", errors.New("redirected to another host")
	}

	var body bytes.Buffer
	for _, l := range []string{"command=ls-refs\n", "agent=git/berth-agent\n"} {
		writePkt(&body, l)
	}
	body.WriteString("0001") // delimiter
	writePkt(&body, "ref-prefix "+ref+"\n")
	body.WriteString("0000")
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, next.String(), &body)
	if err != nil {
		return "", err
	}
	req.Header = header.Clone()
	req.Header.Set("Content-Type", "application/x-git-upload-pack-request")
	req.Header.Set("Accept", "application/x-git-upload-pack-result")
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp2, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp2.Body.Close()
	if resp2.StatusCode != http.StatusOK {
		return "", fmt.Errorf("ls-refs: %s", resp2.Status)
	}
	pr = newPktReader(resp2.Body)
	for {
		l, err := pr.line()
		if errors.Is(err, errFlush) {
			return "", fmt.Errorf("%s is not on the remote", ref)
		}
		if err != nil {
			return "", err
		}
		id, rest, _ := strings.Cut(strings.TrimSuffix(l, "\n"), " ")
		name, _, _ := strings.Cut(rest, " ") // attributes (symref-target, peeled) follow
		if name == ref && isObjectID(id) {
			return id, nil
		}
	}
}

// advertisedRef finds ref in a version 0 advertisement whose first line
// (id, name, NUL, capabilities) is first.
func advertisedRef(first string, pr *pktReader, ref string) (string, error) {
	l := first
	for {
		l = strings.TrimSuffix(l, "\n")
		if i := strings.IndexByte(l, 0); i >= 0 {
			l = l[:i]
		}
		if id, name, ok := strings.Cut(l, " "); ok && name == ref && isObjectID(id) {
			return id, nil
		}
		var err error
		if l, err = pr.line(); errors.Is(err, errFlush) {
			return "", fmt.Errorf("%s is not on the remote", ref)
		} else if err != nil {
			return "", err
		}
	}
}

// pktLimit bounds what a probe reads: an answer about one ref is small,
// and a version 0 advertisement larger than this is not worth reading
// for a shortcut.
const pktLimit = 4 << 20

var errFlush = errors.New("flush packet")

// pktReader reads git's pkt-lines: four hex digits of length (including
// themselves), then the data; 0000 is a flush, 0001 a delimiter.
type pktReader struct {
	r    *bufio.Reader
	left int
}

func newPktReader(r io.Reader) *pktReader {
	return &pktReader{r: bufio.NewReader(r), left: pktLimit}
}

func (p *pktReader) line() (string, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
		return "", fmt.Errorf("pkt-line: %w", err)
	}
	n, err := strconv.ParseUint(string(hdr[:]), 16, 16)
	if err != nil {
		return "", fmt.Errorf("pkt-line: bad length %q", hdr[:])
	}
	switch {
	case n == 0:
		return "", errFlush
	case n < 4:
		return "", fmt.Errorf("pkt-line: unexpected special packet %04x", n)
	}
	p.left -= int(n)
	if p.left < 0 {
		return "", errors.New("pkt-line: answer too large")
	}
	buf := make([]byte, n-4)
	if _, err := io.ReadFull(p.r, buf); err != nil {
		return "", fmt.Errorf("pkt-line: %w", err)
	}
	if strings.HasPrefix(string(buf), "ERR ") {
		return "", fmt.Errorf("remote error: %s", strings.TrimSpace(string(buf[4:])))
	}
	return string(buf), nil
}

func writePkt(w *bytes.Buffer, s string) {
	fmt.Fprintf(w, "%04x%s", len(s)+4, s)
}

// fetchOrConfirm runs the mirror's fetch and, beside it, asks an http(s)
// remote directly where ref is. If the remote answers guessed first, the
// fetch is stopped and confirmed is true: the commit the mirror has there
// is the one to deploy, and waiting for git to find that out costs a
// redeploy its fetch (processes and round trips). Any other answer, or
// none, leaves the fetch to finish as usual.
func (j *job) fetchOrConfirm(ctx context.Context, mirror, ref, guessed string) (confirmed bool, err error) {
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	fetched := make(chan error, 1)
	go func() { fetched <- j.fetchMirror(fctx, mirror) }()
	probed := make(chan string, 1)
	go func() {
		id, _ := j.remoteRef(fctx, ref) // no answer is no shortcut
		probed <- id
	}()
	select {
	case err := <-fetched:
		return false, err
	case id := <-probed:
		if id != guessed {
			return false, <-fetched
		}
	}
	stop()
	<-fetched // stopped: its error says so
	return true, nil
}
