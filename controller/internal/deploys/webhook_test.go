package deploys

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berthhq/berth/controller/internal/store"
)

// Deliveries that fail verification are budgeted per app and address: past
// the budget they get 429 and no security event each; a correctly signed
// delivery from the same address still gets through, and another address
// keeps its own budget.
func TestWebhookFailuresAreThrottled(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	a := e.app(t, "shop")
	const secret = "a-webhook-secret-for-tests"
	if _, _, err := e.svc.SetWebhookSecret(ctx, e.admin, Peer{}, "shop", secret); err != nil {
		t.Fatal(err)
	}
	h := e.svc.WebhookHandler()
	mux := http.NewServeMux()
	mux.Handle("POST /hooks/apps/{app}/{provider}", h)
	deliver := func(from, sig, delivery string) *httptest.ResponseRecorder {
		body := `{"zen":"ok"}`
		r := httptest.NewRequest(http.MethodPost, "/hooks/apps/"+a.ID.String()+"/github", strings.NewReader(body))
		r.RemoteAddr = from + ":40000"
		r.Header.Set("X-GitHub-Event", "ping")
		r.Header.Set("X-GitHub-Delivery", delivery)
		if sig == "" {
			m := hmac.New(sha256.New, []byte(secret))
			m.Write([]byte(body))
			sig = hex.EncodeToString(m.Sum(nil))
		}
		r.Header.Set("X-Hub-Signature-256", "sha256="+sig)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}
	bad := strings.Repeat("00", 32)
	count := func() int64 {
		n, err := e.st.CountSecurityEvents(ctx, store.SecurityEventFilter{Type: "webhook.signature_invalid"})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i := range 10 {
		if w := deliver("192.0.2.7", bad, "d"); w.Code != http.StatusUnauthorized {
			t.Fatalf("bad signature %d: %d %s", i, w.Code, w.Body)
		}
	}
	if n := count(); n != 10 {
		t.Fatalf("security events = %d, want 10", n)
	}
	w := deliver("192.0.2.7", bad, "d")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" {
		t.Fatalf("11th bad signature: %d %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if n := count(); n != 10 {
		t.Errorf("a throttled failure was recorded: %d events", n)
	}
	if w := deliver("192.0.2.7", "", "good-1"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "pong") {
		t.Errorf("signed delivery from the throttled address: %d %s", w.Code, w.Body)
	}
	if w := deliver("198.51.100.9", bad, "d"); w.Code != http.StatusUnauthorized {
		t.Errorf("another address shares the budget: %d", w.Code)
	}
	// The budget refills with time.
	e.now = e.now.Add(time.Minute)
	if w := deliver("192.0.2.7", bad, "d"); w.Code != http.StatusUnauthorized {
		t.Errorf("after a minute: %d", w.Code)
	}
}
