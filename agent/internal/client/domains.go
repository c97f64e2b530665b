package client

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/berthhq/berth/agent/internal/deploy"
	"github.com/berthhq/berth/agent/internal/proxy"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// The job kinds of domains (issue 19): 'site' applies an app's nginx site,
// 'acme' is one step of a certificate issuance the controller runs.
const (
	kindSite = "site"
	kindACME = "acme"
)

// domainJob runs a site or acme job. They are short and idempotent (an
// applied site applied again changes nothing, a CSR reuses the name's key,
// a challenge answer is a file), so they are not journaled: the result is
// kept until the controller acknowledges it and sent again when the
// controller re-sends the job after a reconnect; an agent restarted
// meanwhile simply runs it again.
func (j *Jobs) domainJob(ctx context.Context, log *slog.Logger, js *agentv1.JobStart) {
	id := js.GetJobId()
	j.mu.Lock()
	if j.domain == nil {
		j.domain = map[string]*agentv1.ConnectRequest{}
	}
	if res, ok := j.domain[id]; ok {
		if res != nil {
			j.extra = append(j.extra, res) // lost with the last stream: again
		}
		j.mu.Unlock()
		j.poke()
		return
	}
	j.domain[id] = nil // running
	j.mu.Unlock()
	go func() {
		started := time.Now()
		timeout := js.GetTimeout().AsDuration()
		if timeout <= 0 {
			timeout = 2 * time.Minute
		}
		jctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		r := &agentv1.JobResult{JobId: id, Seq: js.GetAckedSeq() + 1, Status: string(deploy.StatusSucceeded), StartedAt: timestamppb.New(started)}
		var err error
		if j.Proxy == nil {
			err = errNoProxy
		} else if js.GetKind() == kindSite {
			err = j.applySite(jctx, js, r)
		} else {
			err = j.acmeStep(jctx, js.GetAppName(), js.GetAcme(), r)
		}
		if err != nil {
			r.Status, r.FailedStep, r.ExitCode, r.Error = string(deploy.StatusFailed), js.GetKind(), 1, err.Error()
			log.Warn("domain job failed", "job", id, "kind", js.GetKind(), "app", js.GetAppName(), "err", err)
		} else {
			log.Info("domain job done", "job", id, "kind", js.GetKind(), "app", js.GetAppName(), "op", js.GetAcme().GetOp())
		}
		r.FinishedAt = timestamppb.Now()
		msg := &agentv1.ConnectRequest{Msg: &agentv1.ConnectRequest_JobResult{JobResult: r}}
		j.mu.Lock()
		j.domain[id] = msg
		j.extra = append(j.extra, msg)
		j.mu.Unlock()
		j.poke()
	}()
}

// ackDomain forgets a domain job's result once the controller holds it.
func (j *Jobs) ackDomain(id string, seq uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if res := j.domain[id]; res != nil && res.GetJobResult().GetSeq() <= seq {
		delete(j.domain, id)
	}
}

type agentError string

func (e agentError) Error() string { return string(e) }

const errNoProxy = agentError("this agent does not manage nginx (berth-agent run --nginx-conf ...); the site cannot be applied")

func (j *Jobs) applySite(ctx context.Context, js *agentv1.JobStart, r *agentv1.JobResult) error {
	spec := js.GetSite()
	if len(spec.GetDomains()) == 0 {
		return j.Proxy.Remove(ctx, js.GetAppName())
	}
	site := proxy.Site{App: js.GetAppName(), Upstream: spec.GetUpstream(), StaticRoot: spec.GetStaticRoot()}
	for _, d := range spec.GetDomains() {
		site.Domains = append(site.Domains, proxy.Domain{
			Host: d.GetHost(), Primary: d.GetPrimary(), RedirectTo: d.GetRedirectTo(), RedirectStatus: int(d.GetRedirectStatus()),
			ForceHTTPS: d.GetForceHttps(), HSTS: d.GetHsts(), TLS: d.GetTls(), CertPath: d.GetCertPath(), KeyPath: d.GetKeyPath(),
			CertName: d.GetCertName(), ConfineRoot: d.GetConfineRoot(),
		})
	}
	err := j.Proxy.Apply(ctx, site)
	// Custom certificates are read either way: a site that failed because
	// of its certificate says so, and the controller watches expiry.
	for _, d := range site.Domains {
		if d.TLS != proxy.TLSCustom {
			continue
		}
		sc := &agentv1.SiteCert{Host: d.Host}
		read := proxy.ReadCertInfo
		if d.ConfineRoot != "" {
			read = func(p string) (proxy.CertInfo, error) { return proxy.ReadCertInfoIn(d.ConfineRoot, p) }
		}
		if info, rerr := read(d.CertPath); rerr != nil {
			sc.Error = rerr.Error()
		} else {
			sc.Cert = certInfoProto(info)
		}
		r.SiteCerts = append(r.SiteCerts, sc)
	}
	return err
}

func (j *Jobs) acmeStep(ctx context.Context, app string, st *agentv1.AcmeStep, r *agentv1.JobResult) error {
	switch st.GetOp() {
	case "csr":
		csr, err := j.Proxy.CSRWith(st.GetCertName(), st.GetHosts(), proxy.CSROptions{App: app})
		r.CsrPem = csr
		return err
	case "present":
		if err := j.Proxy.PutChallengeFor(app, st.GetToken(), st.GetKeyAuth()); err != nil {
			return err
		}
		// The CA is told to look only once the answer is really served.
		if hosts := st.GetHosts(); len(hosts) == 1 {
			return j.Proxy.VerifyChallenge(ctx, hosts[0], st.GetToken())
		}
		return nil
	case "cleanup":
		return j.Proxy.DeleteChallenge(st.GetToken())
	case "install":
		info, err := j.Proxy.InstallCertificateContext(ctx, st.GetCertName(), st.GetChainPem())
		if err == nil {
			r.Cert = certInfoProto(info)
		}
		return err
	case "delete":
		// A removed domain's key and certificate go too, so a later owner
		// of the host never gets a key that served someone else's site.
		return j.Proxy.DeleteCertificate(st.GetCertName())
	case "inspect":
		var info proxy.CertInfo
		var err error
		if root := st.GetConfineRoot(); root != "" {
			info, err = proxy.ReadCertInfoIn(root, st.GetCertPath())
		} else {
			info, err = proxy.ReadCertInfo(st.GetCertPath())
		}
		if err == nil {
			r.Cert = certInfoProto(info)
		}
		return err
	}
	return agentError("unknown acme step " + st.GetOp())
}

func certInfoProto(c proxy.CertInfo) *agentv1.CertInfo {
	return &agentv1.CertInfo{
		Issuer: c.Issuer, Subject: c.Subject, DnsNames: c.DNSNames, NotBefore: timestamppb.New(c.NotBefore),
		NotAfter: timestamppb.New(c.NotAfter), SerialHex: c.SerialHex,
	}
}
