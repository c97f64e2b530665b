package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strconv"
	"testing"
)

func itoa(n int) string { return strconv.Itoa(n) }

func hashAll(t testing.TB, rc io.ReadCloser) (int64, string) {
	t.Helper()
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatal(err)
	}
	return n, hex.EncodeToString(h.Sum(nil))
}
