// Package client is the agent's side of the controller protocol: enrollment
// and the long-lived Connect stream.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/berthhq/berth/agent/internal/identity"
	agentv1 "github.com/berthhq/berth/gen/proto/berth/agent/v1"
)

// EnrollParams is what `berth-agent enroll` is given.
type EnrollParams struct {
	Controller string // host:port
	Token      string
	CAPin      string
	DataDir    string
	Facts      *agentv1.HostFacts
	Timeout    time.Duration
}

// Enroll joins this host to the controller: it pins the controller's CA,
// then sends a CSR for a key made here with the join token, and saves the
// certificate it gets back. It returns the server id.
func Enroll(ctx context.Context, p EnrollParams) (string, error) {
	if p.Timeout == 0 {
		p.Timeout = 30 * time.Second
	}
	if p.Controller == "" || p.Token == "" || p.CAPin == "" {
		return "", errors.New("--controller, --token and --ca-pin are required")
	}
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()

	// 1. Pin: nothing but a TLS handshake goes out before the CA matches.
	ca, err := identity.FetchCA(p.Controller, p.CAPin, p.Timeout)
	if err != nil {
		return "", fmt.Errorf("controller %s: %w", p.Controller, err)
	}

	// 2. Re-dial trusting that CA alone, and enroll.
	key, err := identity.NewKey()
	if err != nil {
		return "", err
	}
	csr, err := identity.CSR(key, p.Facts.GetHostname())
	if err != nil {
		return "", fmt.Errorf("make CSR: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	conn, err := grpc.NewClient(p.Controller, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: identity.ServerName,
	})))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	resp, err := agentv1.NewAgentServiceClient(conn).Enroll(ctx, &agentv1.EnrollRequest{Token: p.Token, CsrDer: csr, Facts: p.Facts})
	if err != nil {
		if s, ok := status.FromError(err); ok {
			switch s.Code() {
			case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument, codes.ResourceExhausted:
				return "", fmt.Errorf("enrollment refused: %s", s.Message())
			}
			return "", fmt.Errorf("enroll: %s: %s", s.Code(), s.Message())
		}
		return "", fmt.Errorf("enroll: %w", err)
	}
	cert, err := x509.ParseCertificate(resp.GetCertificateDer())
	if err != nil {
		return "", fmt.Errorf("controller sent a bad certificate: %w", err)
	}
	if !identity.Equal(mustParse(resp.GetCaCertificateDer()), ca) {
		return "", errors.New("controller answered with a CA other than the pinned one")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", fmt.Errorf("controller sent a certificate that does not verify: %w", err)
	}
	if err := identity.Save(p.DataDir, key, resp.GetCertificateDer(), ca.Raw); err != nil {
		return "", fmt.Errorf("save identity: %w", err)
	}
	// Remember the controller so `berth-agent run` needs no flags.
	if err := os.WriteFile(filepath.Join(p.DataDir, controllerFile), []byte(p.Controller+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("save controller address: %w", err)
	}
	return resp.GetServerId(), nil
}

const controllerFile = "controller"

// SavedController is the controller address enroll stored in dataDir.
func SavedController(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, controllerFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func mustParse(der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return &x509.Certificate{}
	}
	return c
}
