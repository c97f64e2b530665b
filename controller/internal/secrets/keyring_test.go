package secrets

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestPrimaryIsHighestID(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"2:" + testKey2 + ",1:" + testKey1, "1:" + testKey1 + ",2:" + testKey2} {
		kr := testKeyring(t, s)
		if kr.PrimaryID() != 2 {
			t.Errorf("%d listed: primary %d, want 2", len(kr.IDs()), kr.PrimaryID())
		}
		if got := fmt.Sprint(kr.IDs()); got != "[1 2]" {
			t.Errorf("IDs %s", got)
		}
	}
}

func TestAddKeyIsFreshAndLeavesOriginal(t *testing.T) {
	t.Parallel()
	kr := testKeyring(t, "3:"+testKey1)
	next, err := kr.AddKey()
	if err != nil {
		t.Fatal(err)
	}
	if next.PrimaryID() != 4 || kr.PrimaryID() != 3 || len(kr.IDs()) != 1 {
		t.Fatalf("kr %v, next %v", kr, next)
	}
	if bytes.Equal(next.keys[4], next.keys[3]) {
		t.Fatal("new key equals the old one")
	}
	ct, _ := next.Encrypt([]byte("x"), adApp)
	if id, _ := KeyID(ct); id != 4 {
		t.Fatalf("encrypted under %d, want 4", id)
	}
	if _, err := kr.Decrypt(ct, adApp); err == nil {
		t.Fatal("the original keyring gained the new key")
	}
}

// Every way of printing or logging a keyring shows ids only.
func TestKeyringNeverPrintsKeys(t *testing.T) {
	t.Parallel()
	kr := testKeyring(t, "1:"+testKey1+",2:"+testKey2)
	var forbidden []string
	for _, id := range kr.IDs() {
		k := kr.keys[id]
		forbidden = append(forbidden,
			base64.StdEncoding.EncodeToString(k), fmt.Sprintf("%x", k), fmt.Sprintf("%X", k),
			fmt.Sprint(k), fmt.Sprintf("%d", k[:4]), string(k[:8]))
	}
	want := "secrets.Keyring{primary: 2, ids: [1 2]}"
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%X", "%q", "%10.3f"} {
		for _, out := range []string{fmt.Sprintf(verb, kr), fmt.Sprintf(verb, *kr)} {
			if out != want {
				t.Errorf("%s: got %q, want %q", verb, out, want)
			}
			outs = append(outs, out)
		}
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("keys", "keyring", kr, "deref", *kr)
	text := slog.New(slog.NewTextHandler(&buf, nil))
	text.Info("keys", "keyring", kr)
	if !strings.Contains(buf.String(), `"keyring":{"primary":2,"ids":[1,2]}`) {
		t.Errorf("slog JSON: %s", buf.String())
	}
	js, _ := json.Marshal(kr)
	outs = append(outs, buf.String(), string(js), fmt.Sprint([]*Keyring{kr}), fmt.Sprintf("%v", struct{ K *Keyring }{kr}))
	for _, out := range outs {
		for _, f := range forbidden {
			if strings.Contains(out, f) {
				t.Errorf("output %q contains key material", out)
			}
		}
	}
}
