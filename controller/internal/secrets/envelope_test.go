package secrets

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// Fixed test keys, so that failures reproduce and fuzzing is deterministic.
const (
	testKey1 = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=" // bytes 1..32
	testKey2 = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=" // bytes 32..63
)

func testKeyring(t testing.TB, s string) *Keyring {
	t.Helper()
	kr, err := ParseKeys(s)
	if err != nil {
		t.Fatalf("ParseKeys: %v", err)
	}
	return kr
}

func row(b byte) [16]byte {
	var id [16]byte
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

var adApp = AD{Table: "apps", Column: "env_vars", RowID: row(1)}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	kr := testKeyring(t, "1:"+testKey1)
	for _, pt := range [][]byte{nil, {}, []byte("x"), []byte("DB_PASSWORD=hunter2\n"), bytes.Repeat([]byte{0xab}, 1<<16)} {
		ct, err := kr.Encrypt(pt, adApp)
		if err != nil {
			t.Fatalf("Encrypt(%d bytes): %v", len(pt), err)
		}
		if got, want := len(ct), minEnvelope+len(pt); got != want {
			t.Errorf("envelope is %d bytes, want %d", got, want)
		}
		if ct[0] != Version1 {
			t.Errorf("version byte %#x", ct[0])
		}
		if len(pt) > 4 && bytes.Contains(ct, pt) {
			t.Error("ciphertext contains the plaintext")
		}
		got, err := kr.Decrypt(ct, adApp)
		if err != nil {
			t.Fatalf("Decrypt(%d bytes): %v", len(pt), err)
		}
		if got == nil || !bytes.Equal(got, pt) {
			t.Errorf("round trip of %d bytes gave %d bytes (nil: %v)", len(pt), len(got), got == nil)
		}
	}
}

func TestEncryptUsesFreshNonces(t *testing.T) {
	t.Parallel()
	kr := testKeyring(t, "1:"+testKey1)
	a, _ := kr.Encrypt([]byte("same"), adApp)
	b, _ := kr.Encrypt([]byte("same"), adApp)
	if bytes.Equal(a, b) {
		t.Fatal("two encryptions of the same value are identical")
	}
}

func TestTamperedByteFails(t *testing.T) {
	t.Parallel()
	kr := testKeyring(t, "1:"+testKey1+",2:"+testKey2)
	ct, err := kr.Encrypt([]byte("secret value"), adApp)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ct {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(ct)
			bad[i] ^= mask
			pt, err := kr.Decrypt(bad, adApp)
			if err == nil || pt != nil {
				t.Fatalf("byte %d ^ %#x: decrypted (err %v)", i, mask, err)
			}
			switch {
			case i == 0:
				if !errors.Is(err, ErrUnsupportedVersion) {
					t.Errorf("version byte ^ %#x: %v, want ErrUnsupportedVersion", mask, err)
				}
			case i < headerSize:
				// Another id: unknown, or a key that is present but wrong.
				if !errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrCorrupt) {
					t.Errorf("key id byte %d ^ %#x: %v", i, mask, err)
				}
			default:
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("byte %d ^ %#x: %v, want ErrCorrupt", i, mask, err)
				}
			}
		}
	}
}

func TestMovedCiphertextFails(t *testing.T) {
	t.Parallel()
	kr := testKeyring(t, "1:"+testKey1)
	from := AD{Table: "ab", Column: "c", RowID: row(1)}
	ct, err := kr.Encrypt([]byte("secret"), from)
	if err != nil {
		t.Fatal(err)
	}
	for name, to := range map[string]AD{
		"other row":            {Table: "ab", Column: "c", RowID: row(2)},
		"other column":         {Table: "ab", Column: "d", RowID: row(1)},
		"other table":          {Table: "ax", Column: "c", RowID: row(1)},
		"shifted boundary":     {Table: "a", Column: "bc", RowID: row(1)},
		"table/column swap":    {Table: "c", Column: "ab", RowID: row(1)},
		"one row id bit":       {Table: "ab", Column: "c", RowID: func() [16]byte { r := row(1); r[15] ^= 1; return r }()},
		"longer column":        {Table: "ab", Column: "c\x00", RowID: row(1)},
		"name differs in case": {Table: "AB", Column: "c", RowID: row(1)},
	} {
		if _, err := kr.Decrypt(ct, to); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := kr.Decrypt(ct, from); err != nil {
		t.Errorf("original place: %v", err)
	}
}

func TestADEncodingIsInjective(t *testing.T) {
	t.Parallel()
	hdr := []byte{Version1, 0, 0, 0, 1}
	a := AD{Table: "ab", Column: "c", RowID: row(1)}.encode(hdr)
	b := AD{Table: "a", Column: "bc", RowID: row(1)}.encode(hdr)
	if bytes.Equal(a, b) {
		t.Fatal(`("ab","c") and ("a","bc") encode the same`)
	}
	want := []byte{1, 0, 0, 0, 1, 0, 0, 0, 2, 'a', 'b', 0, 0, 0, 1, 'c'}
	r := row(1)
	want = append(want, r[:]...)
	if !bytes.Equal(a, want) {
		t.Fatalf("encoding changed (stored ciphertexts would stop decrypting):\n got %x\nwant %x", a, want)
	}
}

func TestInvalidAD(t *testing.T) {
	t.Parallel()
	kr := testKeyring(t, "1:"+testKey1)
	ct, _ := kr.Encrypt([]byte("x"), adApp)
	for _, ad := range []AD{
		{Column: "c", RowID: row(1)},
		{Table: "t", RowID: row(1)},
		{Table: "t", Column: "c"},
	} {
		if _, err := kr.Encrypt([]byte("x"), ad); !errors.Is(err, ErrInvalidAD) {
			t.Errorf("Encrypt with %+v: %v, want ErrInvalidAD", ad, err)
		}
		if _, err := kr.Decrypt(ct, ad); !errors.Is(err, ErrInvalidAD) {
			t.Errorf("Decrypt with %+v: %v, want ErrInvalidAD", ad, err)
		}
	}
}

func TestUnknownKeyID(t *testing.T) {
	t.Parallel()
	ct, err := testKeyring(t, "1:"+testKey1).Encrypt([]byte("secret"), adApp)
	if err != nil {
		t.Fatal(err)
	}
	_, err = testKeyring(t, "2:"+testKey2).Decrypt(ct, adApp)
	if !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("got %v, want ErrUnknownKey", err)
	}
	// Same id, different key bytes: the id matches but authentication fails.
	_, err = testKeyring(t, "1:"+testKey2).Decrypt(ct, adApp)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want ErrCorrupt", err)
	}
}

func TestUnsupportedVersion(t *testing.T) {
	t.Parallel()
	kr := testKeyring(t, "1:"+testKey1)
	ct, _ := kr.Encrypt([]byte("secret"), adApp)
	for _, v := range []byte{0x00, 0x02, 0xff} {
		bad := bytes.Clone(ct)
		bad[0] = v
		if _, err := kr.Decrypt(bad, adApp); !errors.Is(err, ErrUnsupportedVersion) {
			t.Errorf("version %#x: %v, want ErrUnsupportedVersion", v, err)
		}
		if _, err := KeyID(bad); !errors.Is(err, ErrUnsupportedVersion) {
			t.Errorf("KeyID with version %#x: %v", v, err)
		}
	}
}

func TestTruncatedFails(t *testing.T) {
	t.Parallel()
	kr := testKeyring(t, "1:"+testKey1)
	ct, _ := kr.Encrypt([]byte("secret"), adApp)
	for n := range len(ct) {
		if _, err := kr.Decrypt(ct[:n], adApp); !errors.Is(err, ErrCorrupt) {
			t.Errorf("first %d bytes: %v, want ErrCorrupt", n, err)
		}
	}
	if _, err := kr.Decrypt(append(bytes.Clone(ct), 0), adApp); !errors.Is(err, ErrCorrupt) {
		t.Errorf("extra byte: %v, want ErrCorrupt", err)
	}
	zeroID := bytes.Clone(ct)
	copy(zeroID[1:5], []byte{0, 0, 0, 0})
	if _, err := KeyID(zeroID); !errors.Is(err, ErrCorrupt) {
		t.Errorf("key id 0: %v, want ErrCorrupt", err)
	}
}

func TestEmptyKeyring(t *testing.T) {
	t.Parallel()
	for _, kr := range []*Keyring{nil, {}} {
		if _, err := kr.Encrypt([]byte("x"), adApp); !errors.Is(err, ErrNoKeys) {
			t.Errorf("Encrypt: %v", err)
		}
		if _, err := kr.Decrypt(make([]byte, 40), adApp); !errors.Is(err, ErrNoKeys) {
			t.Errorf("Decrypt: %v", err)
		}
		if kr.PrimaryID() != 0 || kr.Has(1) || len(kr.IDs()) != 0 {
			t.Error("empty keyring reports keys")
		}
	}
}

func TestErrorsDoNotLeak(t *testing.T) {
	t.Parallel()
	kr := testKeyring(t, "1:"+testKey1)
	pt := []byte("PLAINTEXT-MARKER")
	ct, _ := kr.Encrypt(pt, adApp)
	bad := bytes.Clone(ct)
	bad[len(bad)-1] ^= 1
	_, err := kr.Decrypt(bad, adApp)
	msg := err.Error()
	for _, secret := range []string{"PLAINTEXT-MARKER", testKey1, fmt.Sprintf("%x", kr.keys[1])} {
		if bytes.Contains([]byte(msg), []byte(secret)) {
			t.Errorf("error %q leaks %q", msg, secret)
		}
	}
}

// Rotation as the rotate command will do it: add a key, re-encrypt every
// value not under the primary, twice (a resumed run must be a no-op), then
// drop the old key and check everything still decrypts.
func TestRotationLeavesNothingUnderOldKey(t *testing.T) {
	t.Parallel()
	old := testKeyring(t, "1:"+testKey1)
	type cell struct {
		ad AD
		ct []byte
		pt string
	}
	var table []cell
	for i := range 50 {
		ad := AD{Table: "apps", Column: "env_vars", RowID: row(byte(i))}
		pt := fmt.Sprintf("VALUE=%d", i)
		ct, err := old.Encrypt([]byte(pt), ad)
		if err != nil {
			t.Fatal(err)
		}
		table = append(table, cell{ad, ct, pt})
	}

	next, err := old.AddKey()
	if err != nil {
		t.Fatal(err)
	}
	if next.PrimaryID() != 2 || old.PrimaryID() != 1 || !next.Has(1) {
		t.Fatalf("AddKey: old %v, next %v", old, next)
	}
	// The old key still decrypts under the new keyring.
	if _, err := next.Decrypt(table[0].ct, table[0].ad); err != nil {
		t.Fatalf("old value under new keyring: %v", err)
	}

	// A "crash" halfway: only the first half is rotated.
	for i := range table[:25] {
		out, changed, err := next.Reencrypt(table[i].ct, table[i].ad)
		if err != nil || !changed {
			t.Fatalf("row %d: changed %v, %v", i, changed, err)
		}
		table[i].ct = out
	}
	rotated := 0
	for i := range table {
		out, changed, err := next.Reencrypt(table[i].ct, table[i].ad)
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		if changed {
			rotated++
		}
		table[i].ct = out
	}
	if rotated != 25 {
		t.Errorf("resumed run rotated %d values, want 25", rotated)
	}

	final, err := next.RemoveKey(1)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range table {
		if id, err := KeyID(c.ct); err != nil || id != next.PrimaryID() {
			t.Errorf("row %d under key %d (%v)", i, id, err)
		}
		if next.NeedsRotation(c.ct) {
			t.Errorf("row %d still needs rotation", i)
		}
		got, err := final.Decrypt(c.ct, c.ad)
		if err != nil || string(got) != c.pt {
			t.Errorf("row %d after removing the old key: %q, %v", i, got, err)
		}
	}
	if _, err := next.RemoveKey(next.PrimaryID()); err == nil {
		t.Error("removed the primary key")
	}
	if _, err := next.RemoveKey(9); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("removing an absent key: %v", err)
	}
}

func TestNeedsRotationOnGarbage(t *testing.T) {
	t.Parallel()
	kr := testKeyring(t, "1:"+testKey1)
	if !kr.NeedsRotation(nil) || !kr.NeedsRotation([]byte{9, 9}) {
		t.Error("unparseable envelopes must be reported, not skipped")
	}
	if _, _, err := kr.Reencrypt([]byte{9, 9}, adApp); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("Reencrypt of garbage: %v", err)
	}
}

func FuzzDecrypt(f *testing.F) {
	kr := testKeyring(f, "1:"+testKey1+",7:"+testKey2)
	for _, pt := range []string{"", "a", "DB_PASSWORD=hunter2"} {
		ct, err := kr.Encrypt([]byte(pt), adApp)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ct, adApp.Table, adApp.Column)
		f.Add(ct[:len(ct)-1], adApp.Table, adApp.Column)
	}
	f.Add([]byte{}, "", "")
	f.Add([]byte{1, 0, 0, 0, 7}, "a", "b")
	f.Fuzz(func(t *testing.T, data []byte, table, column string) {
		ad := AD{Table: table, Column: column, RowID: adApp.RowID}
		pt, err := kr.Decrypt(data, ad)
		if err != nil {
			if pt != nil {
				t.Fatal("plaintext returned with an error")
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnknownKey) &&
				!errors.Is(err, ErrUnsupportedVersion) && !errors.Is(err, ErrInvalidAD) {
				t.Fatalf("error outside the documented set: %v", err)
			}
			return
		}
		// Only a genuine envelope for this place can open; re-encrypting it
		// must round trip.
		ct, err := kr.Encrypt(pt, ad)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := kr.Decrypt(ct, ad); err != nil || !bytes.Equal(back, pt) {
			t.Fatalf("re-encrypted value does not round trip: %v", err)
		}
		_ = kr.NeedsRotation(data)
	})
}
