package backup

import (
	"strings"
	"testing"
)

func TestCheckKey(t *testing.T) {
	for _, k := range []string{"app/2026/01J.dump.zst.age", "a", "x_y/z-1.tar.zst.age", "a=b+c"} {
		if err := checkKey(k); err != nil {
			t.Errorf("checkKey(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", "/abs", "../up", "a/../../b", "a/..", "a//b", "a/./b", ".hidden", "a b", "a\\b", "x.partial-1", strings.Repeat("a", 513), "a/"} {
		if err := checkKey(k); err == nil {
			t.Errorf("checkKey(%q) accepted", k)
		}
	}
}

func TestRecipientAndIdentity(t *testing.T) {
	identity, recipient := ageKeys(t)
	if _, err := parseRecipient(recipient); err != nil {
		t.Fatal(err)
	}
	if _, err := parseIdentity(identity); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"", "age1notarecipient", "ssh-ed25519 AAAA", identity} {
		if _, err := parseRecipient(r); err == nil {
			t.Errorf("parseRecipient(%q) accepted", r)
		} else if strings.Contains(err.Error(), identity) {
			t.Errorf("the error shows the identity: %v", err)
		}
	}
	broken := identity[:len(identity)-4] + "QQQQ"
	for _, id := range []string{"", recipient, broken} {
		_, err := parseIdentity(id)
		if err == nil {
			t.Errorf("parseIdentity accepted %q", id)
		} else if strings.Contains(err.Error(), broken) || strings.Contains(err.Error(), identity[16:]) {
			t.Errorf("the error shows the identity: %v", err)
		}
	}
}

func TestTarEntryName(t *testing.T) {
	for in, want := range map[string]string{"a/b": "a/b", "./a/": "a", "a/./b": "a/b", ".": ".", "./": "."} {
		if got, err := tarEntryName(in); err != nil || got != want {
			t.Errorf("tarEntryName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"../a", "a/../../b", "/etc/passwd", "a/..", "a\\..\\b", "a\x00b"} {
		if _, err := tarEntryName(in); err == nil {
			t.Errorf("tarEntryName(%q) accepted", in)
		}
	}
	for _, tc := range []struct {
		name, link string
		escapes    bool
	}{
		{"a", "b", false}, {"d/a", "../b", false}, {"d/a", "../../b", true}, {"a", "/etc", true}, {"a", "", true}, {"d/e/a", "../../x/../y", false},
	} {
		if got := linkEscapes(tc.name, tc.link); got != tc.escapes {
			t.Errorf("linkEscapes(%q, %q) = %v", tc.name, tc.link, got)
		}
	}
}

// Verify checks what the content is: a MySQL dump cut before its trailer,
// something that is not a dump, a PostgreSQL "dump" pg_restore cannot read.
func TestVerifyContent(t *testing.T) {
	ctx := ctxT(t)
	identity, recipient := ageKeys(t)
	dest := Destination{Kind: "local", Path: t.TempDir()}
	for i, tc := range []struct {
		kind, plain, want string
	}{
		{"mysql", "-- MariaDB dump 10.19\nCREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\n", "no \"-- Dump completed\" trailer"},
		{"mysql", "hello\n", "not a MySQL/MariaDB dump"},
		{"postgres", "PGDMP but not really", "pg_restore failed"},
		{"directory", "not a tar archive, long enough to be read as a header block? " + strings.Repeat("x", 600), "tar:"},
	} {
		obj := storePlain(t, dest, "c/"+itoa(i), []byte(tc.plain), recipient)
		obj.Kind = tc.kind
		err := Verify(ctx, obj, identity, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: Verify = %v, want %q", tc.kind, tc.plain[:10], err, tc.want)
		}
	}
	// A complete one passes.
	obj := storePlain(t, dest, "c/ok", []byte("-- MariaDB dump 10.19\nSELECT 1;\n-- Dump completed on 2026-12-06 22:00:00\n"), recipient)
	obj.Kind = "mysql"
	if err := Verify(ctx, obj, identity, nil); err != nil {
		t.Errorf("complete mysql dump: %v", err)
	}
	// A line far longer than the reader's buffer (an extended INSERT).
	long := "-- MariaDB dump 10.19\nINSERT INTO t VALUES " + strings.Repeat("(1,'abc'),", 30000) + "(2,'x');\n-- Dump completed on 2026-12-06 22:00:00\n"
	lobj := storePlain(t, dest, "c/long", []byte(long), recipient)
	lobj.Kind = "mysql"
	if err := Verify(ctx, lobj, identity, nil); err != nil {
		t.Errorf("mysql dump with a long line: %v", err)
	}
	cut := storePlain(t, dest, "c/cut", []byte(long[:len(long)-60]), recipient)
	cut.Kind = "mysql"
	if err := Verify(ctx, cut, identity, nil); err == nil || !strings.Contains(err.Error(), "trailer") {
		t.Errorf("mysql dump cut in its long line: %v", err)
	}
	// Restoring needs the same kind of target.
	if err := Restore(ctx, obj, identity, RestoreTarget{Source: Source{Kind: "postgres", Name: "x"}}, nil); err == nil || !strings.Contains(err.Error(), "cannot be restored into a postgres target") {
		t.Errorf("cross-kind restore: %v", err)
	}
}
