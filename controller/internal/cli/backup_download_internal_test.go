package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/berthhq/berth/gen/proto/berth/admin/v1"
)

// A download's temporary file is created new, never opened through a name
// someone else prepared: in a shared directory (/tmp) a symlink planted at
// FILE.partial must not make the CLI truncate and overwrite its target. The
// controller here is a real gRPC connection to a port nothing listens on,
// so the download fails after the temporary file was made.
func TestDownloadDoesNotFollowPlantedPartial(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "dump.sql")
	if err := os.Symlink(victim, out+".partial"); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	a := &app{stdin: bytes.NewReader(nil), stdout: io.Discard, stderr: io.Discard}
	if err := a.download(context.Background(), adminv1.NewBackupServiceClient(conn), "01ARZ3NDEKTSV4RRFFQ69G5FAV", out); err == nil {
		t.Fatal("download from no controller succeeded")
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "precious" {
		t.Fatalf("the symlink's target was written through: %q, %v", b, err)
	}
	if _, err := os.Lstat(out); err == nil {
		t.Fatal("FILE exists after a failed download")
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "dump.sql.partial" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
