package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/berthhq/berth/controller/internal/ca"
	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// apiFlags are how a CLI command reaches the admin API: BERTH_ADDR,
// BERTH_TOKEN and BERTH_CA_FILE (or --ca-pin), as flags or environment.
type apiFlags struct {
	addr, token, caFile, caPin, output string
}

func (f *apiFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.addr, "addr", "127.0.0.1:7443", "controller gRPC address (BERTH_ADDR)")
	fs.StringVar(&f.token, "token", "", "API token (BERTH_TOKEN)")
	fs.StringVar(&f.caFile, "ca-file", "", "controller CA certificate, DATA_DIR/ca.crt (BERTH_CA_FILE)")
	fs.StringVar(&f.caPin, "ca-pin", "", "controller CA pin sha256:HEX instead of --ca-file (BERTH_CA_PIN)")
	fs.StringVarP(&f.output, "output", "o", "text", "output format: text or json")
}

// tokenAuth sends the bearer token; TLS is always on, so it never travels
// in clear.
type tokenAuth string

func (t tokenAuth) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}
func (tokenAuth) RequireTransportSecurity() bool { return true }

func (f *apiFlags) dial() (adminv1.AdminServiceClient, func(), error) {
	conn, err := f.conn()
	if err != nil {
		return nil, nil, err
	}
	return adminv1.NewAdminServiceClient(conn), func() { conn.Close() }, nil
}

// conn dials the controller's gRPC API over TLS with the bearer token.
func (f *apiFlags) conn() (*grpc.ClientConn, error) {
	if f.output != "text" && f.output != "json" {
		return nil, usageError{fmt.Errorf("-o must be text or json")}
	}
	var cfg *tls.Config
	switch {
	case f.caPin != "":
		c, err := ca.PinnedClientTLSConfig(f.caPin, nil)
		if err != nil {
			return nil, usageError{err}
		}
		cfg = c
	case f.caFile != "":
		pemBytes, err := os.ReadFile(f.caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("CA file %s holds no certificate", f.caFile)
		}
		cfg = ca.ClientTLSConfig(pool, nil)
	default:
		return nil, usageError{errors.New("set BERTH_CA_FILE (the controller's DATA_DIR/ca.crt) or --ca-pin")}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	if f.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenAuth(f.token)))
	}
	return grpc.NewClient(f.addr, opts...)
}

// rpcErr turns a gRPC status into one line: "Unauthenticated: invalid token".
func rpcErr(err error) error {
	if s, ok := status.FromError(err); ok {
		return errors.New(s.Code().String() + ": " + s.Message())
	}
	return err
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func apiCommand(cmd *cobra.Command, f *apiFlags) *cobra.Command {
	f.register(cmd.Flags())
	return cmd
}

func jsonUnmarshal(s string, v any) error {
	if s == "" {
		return nil
	}
	return json.Unmarshal([]byte(s), v)
}
