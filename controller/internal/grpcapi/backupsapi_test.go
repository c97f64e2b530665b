package grpcapi_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/berthhq/berth/controller/internal/ca"
	"github.com/berthhq/berth/controller/internal/store"
)

// Malformed and oversized requests to BackupService get InvalidArgument
// (checked before the database sees them), unknown ids NotFound.
func TestBackupServiceBadInput(t *testing.T) {
	t.Parallel()
	e := setupMatrix(t)
	tok, _ := e.token(t, "admin", store.ScopeAdmin)
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(credentials.NewTLS(ca.ClientTLSConfig(e.ca.Pool(), nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	long := strings.Repeat("a", 5000)
	secret := strings.Repeat("s", 17<<10)
	cases := []struct {
		method, req string
		want        codes.Code
	}{
		{"AddBackupDestination", fmt.Sprintf(`name: "%s" kind: "local" path: "/x"`, long), codes.InvalidArgument},
		{"AddBackupDestination", fmt.Sprintf(`name: "s3" kind: "s3" endpoint: "https://h" bucket: "bkt" access_key_id: "a" secret_access_key: "%s"`, secret), codes.InvalidArgument},
		{"AddBackupDestination", `name: "s" kind: "sftp" host: "h" port: 70000 username: "u" path: "/b" password: "p" host_key_fingerprint: "SHA256:x"`, codes.InvalidArgument},
		{"AddBackupDestination", `name: "l" kind: "local" path: "relative"`, codes.InvalidArgument},
		{"AddBackupDestination", `name: "x" kind: "ftp"`, codes.InvalidArgument},
		{"RunBackup", `app: "shop" destination: "d" kind: "redis" source: "x"`, codes.InvalidArgument},
		{"RunBackup", fmt.Sprintf(`app: "shop" destination: "d" kind: "postgres" source: "%s"`, long), codes.InvalidArgument},
		{"ListBackups", `limit: 5000`, codes.InvalidArgument},
		{"ListBackups", `status: "great"`, codes.InvalidArgument},
		{"GetBackup", `id: "not-an-id"`, codes.InvalidArgument},
		{"GetBackup", `id: "$NO_SUCH_ID"`, codes.NotFound},
		{"FollowBackupJob", fmt.Sprintf(`id: "%s"`, long), codes.InvalidArgument},
		{"CancelBackupJob", `id: "$NO_SUCH_ID"`, codes.NotFound},
		{"RestoreBackup", `id: "$NO_SUCH_ID" to: "../etc"`, codes.NotFound},
		{"DownloadBackup", `id: "$NO_SUCH_ID"`, codes.NotFound},
		{"DeleteBackup", `id: ""`, codes.InvalidArgument},
		{"GetBackupDestination", `name: "nope"`, codes.NotFound},
		{"RemoveBackupDestination", `name: "Not A Name"`, codes.InvalidArgument},
		// Schedules.
		{"AddBackupSchedule", `app: "shop" destination: "d" kind: "postgres" source: "shop" cron: "not cron" keep: 3`, codes.InvalidArgument},
		{"AddBackupSchedule", `app: "shop" destination: "d" kind: "postgres" source: "shop" cron: "0 3 * * *" timezone: "Nowhere/Zone" keep: 3`, codes.InvalidArgument},
		{"AddBackupSchedule", `app: "shop" destination: "d" kind: "postgres" source: "shop" cron: "0 3 * * *" keep: -1`, codes.InvalidArgument},
		{"AddBackupSchedule", `app: "shop" destination: "d" kind: "postgres" source: "shop" cron: "0 3 * * *"`, codes.InvalidArgument},
		{"AddBackupSchedule", fmt.Sprintf(`app: "shop" destination: "d" kind: "postgres" source: "shop" cron: "%s" keep: 3`, long), codes.InvalidArgument},
		{"GetBackupSchedule", `id: "not-an-id"`, codes.InvalidArgument},
		{"GetBackupSchedule", `id: "$NO_SUCH_ID"`, codes.NotFound},
		{"DisableBackupSchedule", `id: "$NO_SUCH_ID"`, codes.NotFound},
		{"EnableBackupSchedule", fmt.Sprintf(`id: "%s"`, long), codes.InvalidArgument},
		{"RemoveBackupSchedule", `id: "$NO_SUCH_ID"`, codes.NotFound},
	}
	for _, c := range cases {
		method := "/berth.admin.v1.BackupService/" + c.method
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName("berth.admin.v1.BackupService." + c.method))
		if err != nil {
			t.Fatal(err)
		}
		req := strings.ReplaceAll(c.req, "$NO_SUCH_ID", store.NewID().String())
		if got := e.call(t, conn, d.(protoreflect.MethodDescriptor), method, tok, req); got != c.want {
			t.Errorf("%s %.80s: %v, want %v", c.method, c.req, got, c.want)
		}
	}
}
