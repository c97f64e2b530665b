package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"

	"github.com/berthhq/berth/controller/internal/notify"
	"github.com/berthhq/berth/controller/internal/store"
)

// Notification channels and rules (admin). Every call goes through the
// notify service's principal-taking methods, the ones the gRPC API calls:
// the service refuses anyone but an admin, validates and audits. A channel
// is shown by its kind, its addresses or its URL's host, and its delivery
// state; its URL and secret are write-only and never rendered, except the
// generated webhook secret on the one answer that created it.

// maxNotifyField bounds each field of these forms, as the gRPC API does,
// so an oversized field gets its own message (the whole form is bounded by
// parseForm).
const maxNotifyField = 4096

// channelDeliveries is how many recent deliveries a channel's page lists.
const channelDeliveries = 50

// channelKinds are the kinds a person adds (the inbox channel comes with
// the install), in the order of the page's forms.
var channelKinds = []string{notify.KindEmail, notify.KindSlack, notify.KindDiscord, notify.KindWebhook}

// channelRow is a channel as the list shows it.
type channelRow struct {
	notify.Channel
	Target string // addresses or the URL's host: never the URL
	State  string // ok, failing or unused
}

func channelRowOf(c notify.Channel) channelRow {
	row := channelRow{Channel: c, State: "unused"}
	switch {
	case c.Kind == notify.KindInbox:
		row.Target = "every admin's inbox"
	case c.ToAdmins:
		row.Target = "every admin"
	case len(c.To) > 0:
		row.Target = strings.Join(c.To, ", ")
	case c.Host != "":
		row.Target = c.Host
	}
	switch {
	case c.FailingSince != nil:
		row.State = "failing"
	case c.LastDeliveredAt != nil:
		row.State = "ok"
	}
	return row
}

// oversized names the first form field longer than maxNotifyField.
func oversized(f url.Values) string {
	for k, vs := range f {
		for _, v := range vs {
			if len(v) > maxNotifyField {
				return k
			}
		}
	}
	return ""
}

// fieldLabel is a form field's name as the page labels it.
var fieldLabel = map[string]string{
	"name": "Name", "to": "Addresses", "url": "URL", "secret": "Signing secret", "rate_limit_per_hour": "Messages per hour",
	"events": "Events", "channel": "Channel", "server": "Server", "app": "App", "min_level": "Minimum level", "confirm": "Confirmation",
}

func oversizedMessage(field string) string {
	label := fieldLabel[field]
	if label == "" {
		label = "A field"
	}
	return fmt.Sprintf("%s is longer than %d characters.", label, maxNotifyField)
}

// splitList reads a list typed as commas, spaces or lines.
func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
}

func (s *Server) notifyPeer(r *http.Request) notify.Peer {
	p := s.peer(r)
	return notify.Peer{IP: p.IP, UserAgent: p.UserAgent}
}

// channelsView renders the channel list with the add forms. On a refused
// add, Form holds what was typed (the form it came from is named by its
// "form" field), so nothing typed is lost.
func (s *Server) channelsView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string) {
	chans, err := s.d.Notify.ChannelsAs(r.Context(), v.Principal)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	rows := make([]channelRow, len(chans))
	for i, c := range chans {
		rows[i] = channelRowOf(c)
	}
	s.render(w, r, "notify_channels", view{Title: "Notification channels", Nav: "channels", User: v, Status: status, Error: errMsg,
		Form: r.PostForm, Data: map[string]any{"Channels": rows, "Kinds": channelKinds}})
}

func (s *Server) channelList(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.channelsView(w, r, v, 0, "")
}

func (s *Server) channelCreate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	f := r.PostForm
	if field := oversized(f); field != "" {
		s.channelsView(w, r, v, http.StatusBadRequest, oversizedMessage(field)+forgetSecrets(f))
		return
	}
	kind := f.Get("form")
	spec := notify.ChannelSpec{Name: strings.TrimSpace(f.Get("name")), Kind: kind}
	if raw := strings.TrimSpace(f.Get("rate_limit_per_hour")); raw != "" {
		// Empty is the default; a number goes to the service, which
		// checks its range (0 being the default there, it is refused
		// here where it was typed).
		n, err := strconv.Atoi(raw)
		if err != nil || n == 0 {
			s.channelsView(w, r, v, http.StatusBadRequest,
				fmt.Sprintf("Messages per hour must be a whole number from 1 to %d (empty for %d).", notify.MaxRateLimit, notify.DefaultRateLimit)+forgetSecrets(f))
			return
		}
		spec.RateLimitPerHour = n
	}
	switch kind {
	case notify.KindEmail:
		spec.To = splitList(f.Get("to"))
	case notify.KindSlack, notify.KindDiscord:
		spec.URL = strings.TrimSpace(f.Get("url"))
	case notify.KindWebhook:
		spec.URL = strings.TrimSpace(f.Get("url"))
		spec.Secret = strings.TrimSpace(f.Get("secret"))
	}
	// An unknown kind goes to the service too: it checks who asks before
	// it says what is wrong.
	c, secret, err := s.d.Notify.AddChannelAs(r.Context(), v.Principal, s.notifyPeer(r), spec)
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict {
			s.channelsView(w, r, v, st, channelError(err)+forgetSecrets(f))
			return
		}
		s.fail(w, r, v, err)
		return
	}
	if secret != "" {
		// The generated secret is on this answer only (no flash cookie,
		// no URL); the database keeps it sealed and never shows it again.
		s.channelView(w, r, v, c.Name, http.StatusCreated, "", map[string]any{"NewSecret": secret})
		return
	}
	s.redirect(w, r, "/notify/channels/"+c.Name, "Channel "+c.Name+" added.")
}

// channelSecrets are the add forms' write-only fields: a Slack or Discord
// URL carries its token, a webhook's URL may, and the signing secret is
// one.
var channelSecrets = []string{"url", "secret"}

// forgetSecrets drops the write-only fields from a refused form, so the
// page that answers it never carries them back (as the git-credential and
// backup-destination forms), and says so when one was typed.
func forgetSecrets(f url.Values) string {
	typed := false
	for _, k := range channelSecrets {
		typed = typed || strings.TrimSpace(f.Get(k)) != ""
		f.Del(k)
	}
	if typed {
		return " URLs and secrets are never sent back to the browser: enter it again."
	}
	return ""
}

// channelError is the service's refusal as the page words it. The
// service's messages never repeat a URL or secret.
func channelError(err error) string {
	if errors.Is(err, store.ErrConflict) {
		return "A channel with that name exists already: choose another name."
	}
	if errors.Is(err, notify.ErrPrivateTarget) {
		return "That URL points at a private, loopback or link-local address, which this controller does not call " +
			"(start it with --allow-private-webhook-targets to allow them)."
	}
	return publicMessage(err)
}

// channelView renders one channel with its recent deliveries and the rules
// that route to it; extra carries what one answer shows (a new secret, a
// test's result).
func (s *Server) channelView(w http.ResponseWriter, r *http.Request, v *viewer, name string, status int, errMsg string, extra map[string]any) {
	c, err := s.d.Notify.ChannelAs(r.Context(), v.Principal, name)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	dels, err := s.d.Notify.DeliveriesAs(r.Context(), v.Principal, notify.DeliveryFilter{Channel: c.Name, Limit: channelDeliveries})
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	rules, err := s.d.Notify.RulesAs(r.Context(), v.Principal)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	mine := []notify.Rule{}
	for _, rl := range rules {
		if rl.Channel == c.Name {
			mine = append(mine, rl)
		}
	}
	data := map[string]any{"Channel": channelRowOf(c), "Deliveries": dels, "Rules": mine}
	for k, val := range extra {
		data[k] = val
	}
	s.render(w, r, "notify_channel", view{Title: "Channel " + c.Name, Nav: "channels", User: v, Status: status, Error: errMsg, Form: r.PostForm, Data: data})
}

func (s *Server) channelShow(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.channelView(w, r, v, r.PathValue("name"), 0, "", nil)
}

// testResult is what the test button shows.
type testResult struct {
	OK      bool
	Message string
}

func (s *Server) channelTest(w http.ResponseWriter, r *http.Request, v *viewer) {
	name := r.PathValue("name")
	c, err := s.d.Notify.TestChannelAs(r.Context(), v.Principal, s.notifyPeer(r), name)
	if err != nil {
		// A send that failed is the receiver's answer, shown as the
		// result; anything else (refused, unknown, bad name) fails the
		// page. The channel's last_error is the scrubbed message.
		st := statusOf(err)
		if c.Name == "" || st == http.StatusForbidden || st == http.StatusUnauthorized || st == http.StatusNotFound || st == http.StatusBadRequest {
			s.fail(w, r, v, err)
			return
		}
		msg := c.LastError
		if msg == "" {
			msg = "the send failed; the error was logged"
		}
		s.channelView(w, r, v, c.Name, http.StatusOK, "", map[string]any{"Test": testResult{Message: "Test message to " + c.Name + " failed: " + msg}})
		return
	}
	s.channelView(w, r, v, c.Name, http.StatusOK, "", map[string]any{"Test": testResult{OK: true, Message: "Test message delivered to " + c.Name + "."}})
}

// channelUpdate saves the channel page's rate limit form through the
// service's UpdateChannelAs (the gRPC UpdateChannel), which checks who
// asks, the range, and records the change.
func (s *Server) channelUpdate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	name := r.PathValue("name")
	f := r.PostForm
	if field := oversized(f); field != "" {
		s.channelView(w, r, v, name, http.StatusBadRequest, oversizedMessage(field), nil)
		return
	}
	var u notify.ChannelUpdate
	if raw := strings.TrimSpace(f.Get("rate_limit_per_hour")); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil {
			s.channelView(w, r, v, name, http.StatusBadRequest, fmt.Sprintf("Messages per hour must be a whole number from 1 to %d.", notify.MaxRateLimit), nil)
			return
		}
		u.RateLimitPerHour = &n
	}
	c, err := s.d.Notify.UpdateChannelAs(r.Context(), v.Principal, s.notifyPeer(r), name, u)
	if err != nil {
		if statusOf(err) == http.StatusBadRequest {
			// The page needs the channel: a bad name fails there.
			s.channelView(w, r, v, name, http.StatusBadRequest, publicMessage(err), nil)
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/notify/channels/"+c.Name, fmt.Sprintf("Channel %s: at most %d messages an hour from now on.", c.Name, c.RateLimitPerHour))
}

func (s *Server) channelRemove(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	name := r.PathValue("name")
	if r.PostFormValue("confirm") != name {
		// The channel page names what to type; the service still decides
		// whether this caller may see or remove it.
		s.channelView(w, r, v, name, http.StatusBadRequest, "Type the channel's name to confirm its removal.", nil)
		return
	}
	if err := s.d.Notify.RemoveChannelAs(r.Context(), v.Principal, s.notifyPeer(r), name); err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/notify/channels", "Channel "+name+" removed, with its rules and pending messages.")
}

// rulesView renders the rule list with the add form (Form: what was typed
// on a refused add).
func (s *Server) rulesView(w http.ResponseWriter, r *http.Request, v *viewer, status int, errMsg string) {
	rules, err := s.d.Notify.RulesAs(r.Context(), v.Principal)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	chans, err := s.d.Notify.ChannelsAs(r.Context(), v.Principal)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "notify_rules", view{Title: "Notification rules", Nav: "rules", User: v, Status: status, Error: errMsg,
		Form: r.PostForm, Data: map[string]any{"Rules": rules, "Channels": chans, "Levels": []notify.Level{notify.Info, notify.Warning, notify.Critical}}})
}

func (s *Server) ruleList(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.rulesView(w, r, v, 0, "")
}

func (s *Server) ruleCreate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	f := r.PostForm
	if field := oversized(f); field != "" {
		s.rulesView(w, r, v, http.StatusBadRequest, oversizedMessage(field))
		return
	}
	req := notify.RuleRequest{
		Events: splitList(f.Get("events")), Channel: strings.TrimSpace(f.Get("channel")),
		Server: strings.TrimSpace(f.Get("server")), App: strings.TrimSpace(f.Get("app")), MinLevel: notify.Level(f.Get("min_level")),
	}
	rl, err := s.d.Notify.AddRuleAs(r.Context(), v.Principal, s.notifyPeer(r), req)
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict || st == http.StatusNotFound {
			msg := publicMessage(err)
			if st == http.StatusNotFound {
				msg = notFoundRule(err)
			}
			s.rulesView(w, r, v, st, msg)
			return
		}
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/notify/rules", fmt.Sprintf("Rule added: %s to %s.", strings.Join(rl.Events, ", "), rl.Channel))
}

// notFoundRule says which reference of a rule named nothing. The
// service's error starts with what it looked up ("channel ...", "server
// ...", "app ...").
func notFoundRule(err error) string {
	msg := err.Error()
	for _, what := range []string{"channel", "server", "app"} {
		if strings.HasPrefix(msg, what+" ") {
			return fmt.Sprintf("There is no such %s.", what)
		}
	}
	return "There is no such channel, server or app."
}

func (s *Server) ruleRemove(w http.ResponseWriter, r *http.Request, v *viewer) {
	if err := s.d.Notify.RemoveRuleAs(r.Context(), v.Principal, s.notifyPeer(r), r.PathValue("id")); err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/notify/rules", "Rule removed.")
}

// deliveryList is the outbox across channels, filtered like `berth notify
// delivery list` (?channel=NAME&status=STATUS).
func (s *Server) deliveryList(w http.ResponseWriter, r *http.Request, v *viewer) {
	q := r.URL.Query()
	f := notify.DeliveryFilter{Channel: q.Get("channel"), Status: q.Get("status"), Limit: notify.MaxDeliveries}
	dels, err := s.d.Notify.DeliveriesAs(r.Context(), v.Principal, f)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	chans, err := s.d.Notify.ChannelsAs(r.Context(), v.Principal)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "notify_deliveries", view{Title: "Deliveries", Nav: "channels", User: v, Data: map[string]any{
		"Deliveries": dels, "Channels": chans, "Statuses": notify.DeliveryStatuses, "Channel": f.Channel, "Status": f.Status,
	}})
}
