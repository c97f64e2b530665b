package deploys

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/berthhq/berth/controller/internal/audit/kind"
	"github.com/berthhq/berth/controller/internal/store"
)

// maxWebhookBody bounds a push event's body.
const maxWebhookBody = 2 << 20

// WebhookHandler serves POST /hooks/apps/{app}/{provider}: GitHub push
// events signed with X-Hub-Signature-256 (HMAC-SHA256 of the body with the
// app's webhook secret) and GitLab push events carrying the secret in
// X-Gitlab-Token (compared in constant time). A push to the app's branch
// enqueues a deployment of the pushed commit; other branches are ignored.
// Each delivery (X-GitHub-Delivery, X-Gitlab-Event-UUID) is processed once,
// and so is each body, ever (the delivery id is not signed, so a captured
// body replayed under a new id must not redeploy; and a body replayed days
// later would deploy its old commit over newer ones, so there is no window:
// the digests stay as long as the delivery rows): a replay is answered
// "already processed" and does nothing. A delivery
// deploys on behalf of the user who set the secret and is refused, with a
// security event, once that user is disabled or no longer holds deploy.
func (s *Service) WebhookHandler() http.Handler {
	return http.HandlerFunc(s.serveWebhook)
}

func webhookReply(w http.ResponseWriter, code int, v map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

type pushEvent struct {
	Ref         string `json:"ref"`
	After       string `json:"after"`
	CheckoutSHA string `json:"checkout_sha"`
	Deleted     bool   `json:"deleted"`
	HeadCommit  *struct {
		ID      string `json:"id"`
		Message string `json:"message"`
	} `json:"head_commit"`
}

func (s *Service) serveWebhook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	provider := r.PathValue("provider")
	if provider != "github" && provider != "gitlab" {
		webhookReply(w, http.StatusNotFound, map[string]any{"error": "unknown provider: use github or gitlab"})
		return
	}
	id, err := store.ParseID(r.PathValue("app"))
	if err != nil {
		webhookReply(w, http.StatusNotFound, map[string]any{"error": "no such app"})
		return
	}
	a, err := s.st.App(ctx, id)
	if err != nil {
		webhookReply(w, http.StatusNotFound, map[string]any{"error": "no such app"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		webhookReply(w, http.StatusRequestEntityTooLarge, map[string]any{"error": "body too large"})
		return
	}
	secret, err := s.st.AppWebhookSecret(ctx, a.ID)
	if err != nil {
		webhookReply(w, http.StatusInternalServerError, map[string]any{"error": "internal error"})
		return
	}
	peer := fleetPeer(r)
	if len(secret) == 0 {
		webhookReply(w, http.StatusNotFound, map[string]any{"error": "webhooks are not enabled for this app"})
		return
	}
	var delivery, event string
	ok := false
	switch provider {
	case "github":
		delivery, event = r.Header.Get("X-GitHub-Delivery"), r.Header.Get("X-GitHub-Event")
		sig, found := strings.CutPrefix(r.Header.Get("X-Hub-Signature-256"), "sha256=")
		got, derr := hex.DecodeString(sig)
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		ok = found && derr == nil && hmac.Equal(got, mac.Sum(nil))
	case "gitlab":
		delivery, event = r.Header.Get("X-Gitlab-Event-UUID"), r.Header.Get("X-Gitlab-Event")
		ok = subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Gitlab-Token")), secret) == 1
	}
	if !ok {
		// A valid signature always gets through; failures beyond the
		// budget of this address for this app are refused without a row
		// each, so a flood fills neither the audit log nor the database.
		if !s.badHooks.Allow(a.ID.String()+"|"+peer.String(), s.cfg.Now()) {
			w.Header().Set("Retry-After", "60")
			webhookReply(w, http.StatusTooManyRequests, map[string]any{"error": "too many failed deliveries from this address; try again later"})
			return
		}
		aid := a.ID
		_, _ = s.st.CreateSecurityEvent(ctx, store.CreateSecurityEventParams{
			Type: "webhook.signature_invalid", Severity: store.SeverityWarning, Actor: "webhook:" + provider,
			IPAddress: peer.IP, UserAgent: peer.UserAgent, Details: map[string]any{"app": a.Name, "app_id": aid.String(), "provider": provider},
		})
		webhookReply(w, http.StatusUnauthorized, map[string]any{"error": "signature or token does not match"})
		return
	}
	if !s.hookOwnerMayDeploy(ctx, a) {
		aid := a.ID
		_, _ = s.st.CreateSecurityEvent(ctx, store.CreateSecurityEventParams{
			Type: kind.WebhookOwnerNotAllowed, Severity: store.SeverityWarning, Actor: "webhook:" + provider,
			IPAddress: peer.IP, UserAgent: peer.UserAgent, Details: map[string]any{"app": a.Name, "app_id": aid.String(), "provider": provider},
		})
		webhookReply(w, http.StatusForbidden, map[string]any{"error": "the user who set this webhook's secret may no longer deploy; someone who may sets a new secret"})
		return
	}
	if delivery == "" || len(delivery) > 200 {
		webhookReply(w, http.StatusBadRequest, map[string]any{"error": "missing delivery id header"})
		return
	}
	if (provider == "github" && event == "ping") || (provider == "gitlab" && event == "System Hook") {
		webhookReply(w, http.StatusOK, map[string]any{"result": "pong"})
		return
	}
	var ev pushEvent
	isPush := (provider == "github" && event == "push") || (provider == "gitlab" && event == "Push Hook")
	if isPush {
		if err := json.Unmarshal(body, &ev); err != nil {
			webhookReply(w, http.StatusBadRequest, map[string]any{"error": "body is not a push event"})
			return
		}
	}
	branch, _ := strings.CutPrefix(ev.Ref, "refs/heads/")
	commit := strings.ToLower(ev.After)
	if provider == "gitlab" && ev.CheckoutSHA != "" {
		commit = strings.ToLower(ev.CheckoutSHA)
	}
	result := store.WebhookDeployed
	switch {
	case !isPush || ev.Deleted || !strings.HasPrefix(ev.Ref, "refs/heads/") || !validCommit(commit) || strings.Trim(commit, "0") == "":
		result = store.WebhookIgnoredEvent
	case branch != a.Branch:
		result = store.WebhookIgnoredBranch
	}
	var (
		dep   store.Deployment
		first bool
	)
	err = s.st.InTx(ctx, func(tx *store.Store) error {
		var did store.ID
		var err error
		digest := sha256.Sum256(body)
		did, first, err = tx.RecordWebhookDeliveryBody(ctx, store.WebhookDelivery{
			AppID: a.ID, Provider: provider, DeliveryID: delivery, Ref: truncate(branch, 255), Result: result,
			BodyDigest: digest[:], // no Since: a body seen once is a replay forever
		})
		if err != nil || !first || result != store.WebhookDeployed {
			return err
		}
		cp := store.CreateDeploymentParams{AppID: a.ID, TriggeredBy: store.TriggerWebhook, TriggerRef: &delivery, Branch: branch, CommitSHA: &commit}
		if ev.HeadCommit != nil && ev.HeadCommit.Message != "" {
			msg := truncate(ev.HeadCommit.Message, 1000)
			cp.CommitMessage = &msg
		}
		if dep, err = tx.CreateDeployment(ctx, cp); err != nil {
			return err
		}
		return tx.SetWebhookDeliveryDeployment(ctx, did, dep.ID)
	})
	if errors.Is(err, store.ErrConflict) {
		first = false
	} else if err != nil {
		s.log.Error("webhook", "app", a.Name, "err", err)
		webhookReply(w, http.StatusInternalServerError, map[string]any{"error": "internal error"})
		return
	}
	if !first {
		webhookReply(w, http.StatusOK, map[string]any{"result": "already processed"})
		return
	}
	if result != store.WebhookDeployed {
		webhookReply(w, http.StatusAccepted, map[string]any{"result": string(result)})
		return
	}
	s.systemActivity(ctx, store.ActorWebhook, "webhook:"+provider, "deployment.queued", dep, a.Name, map[string]any{"branch": branch, "commit": commit, "delivery": delivery})
	s.notify(ctx, "dispatch")
	webhookReply(w, http.StatusAccepted, map[string]any{"result": string(result), "deployment_id": dep.ID.String()})
}

// hookOwnerMayDeploy: the user who set the app's webhook secret is still
// active and their role still holds deploy. A secret nobody set through
// SetWebhookSecret (before that was recorded, or its user deleted) vouches
// for nothing.
func (s *Service) hookOwnerMayDeploy(ctx context.Context, a store.App) bool {
	if a.WebhookSecretSetBy == nil {
		return false
	}
	u, err := s.st.User(ctx, *a.WebhookSecretSetBy)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Error("webhook: load the secret's owner", "app", a.Name, "err", err)
		}
		return false
	}
	return roleMayDeploy(u)
}

func fleetPeer(r *http.Request) Peer {
	return fleetParse(r.RemoteAddr, r.UserAgent())
}
