package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/berthhq/berth/controller/internal/fleet"
	"github.com/berthhq/berth/controller/internal/store"
)

// serverRow is one line of the fleet dashboard.
type serverRow struct {
	store.Server
	CPU     string // sparkline points for an SVG polyline, "" without data
	Mem     string
	CPUNow  string
	MemNow  string
	OS      string
	Display string
}

// sparkW and sparkH are the sparkline's SVG viewBox.
const sparkW, sparkH = 120.0, 28.0

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request, v *viewer) {
	http.Redirect(w, r, "/servers", http.StatusSeeOther)
}

func (s *Server) serverList(w http.ResponseWriter, r *http.Request, v *viewer) {
	f := store.ServerFilter{Status: store.ServerStatus(r.URL.Query().Get("status")), Limit: 100}
	if b := r.URL.Query().Get("before"); b != "" {
		id, err := store.ParseID(b)
		if err != nil {
			s.errorPage(w, r, http.StatusBadRequest, "Bad request", "before must be a server id")
			return
		}
		f.Before = &id
	}
	switch f.Status {
	case "", store.ServerPending, store.ServerOnline, store.ServerOffline, store.ServerDisabled:
	default:
		s.errorPage(w, r, http.StatusBadRequest, "Bad request", "unknown status filter")
		return
	}
	list, err := s.d.Fleet.List(r.Context(), v.Principal, f)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	ids := make([]store.ID, len(list))
	for i, srv := range list {
		ids[i] = srv.ID
	}
	series, err := s.d.Fleet.Sparklines(r.Context(), v.Principal, ids, time.Hour, 2*time.Minute)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	now := s.cfg.Now()
	rows := make([]serverRow, len(list))
	for i, srv := range list {
		rows[i] = serverRow{Server: srv, OS: osOf(srv)}
		pts := series[srv.ID]
		rows[i].CPU, rows[i].CPUNow = sparkline(pts, now, func(p store.MetricPoint) *float64 { return p.CPUPercent }, func(*store.MetricPoint) float64 { return 100 })
		rows[i].Mem, rows[i].MemNow = sparkline(pts, now, func(p store.MetricPoint) *float64 { return p.MemUsed }, func(p *store.MetricPoint) float64 {
			if p.MemTotal != nil {
				return *p.MemTotal
			}
			return 0
		})
	}
	var next string
	if len(list) == f.Limit {
		next = list[len(list)-1].ID.String()
	}
	s.render(w, r, "servers", view{Title: "Servers", Nav: "servers", User: v, Data: map[string]any{
		"Servers": rows, "Status": string(f.Status), "Next": next,
	}})
}

// sparkline turns a series into SVG polyline points over the last hour,
// scaled to max (100 for CPU %, the total for memory). It returns the
// latest value as a percentage too.
func sparkline(pts []store.MetricPoint, now time.Time, val func(store.MetricPoint) *float64, maxOf func(*store.MetricPoint) float64) (string, string) {
	var b strings.Builder
	last := ""
	start := now.Add(-time.Hour)
	for i := range pts {
		v := val(pts[i])
		m := maxOf(&pts[i])
		if v == nil || m <= 0 || math.IsNaN(*v) {
			continue
		}
		frac := math.Max(0, math.Min(1, *v/m))
		x := float64(pts[i].T.Sub(start)) / float64(time.Hour) * sparkW
		y := sparkH - frac*(sparkH-2) - 1
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", math.Max(0, math.Min(sparkW, x)), y)
		last = fmt.Sprintf("%.0f%%", frac*100)
	}
	// One point draws nothing: show it as a short level line ending now.
	if n := strings.Count(b.String(), ","); n == 1 {
		_, y, _ := strings.Cut(b.String(), ",")
		return fmt.Sprintf("%.1f,%s %.1f,%s", sparkW-6, y, sparkW, y), last
	}
	return b.String(), last
}

func osOf(srv store.Server) string {
	var f struct {
		OS       string `json:"os"`
		Platform string `json:"platform"`
		Version  string `json:"platform_version"`
		Arch     string `json:"arch"`
	}
	_ = json.Unmarshal(srv.Facts, &f)
	parts := []string{}
	for _, p := range []string{f.Platform, f.Version, f.Arch} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, " ")
}

func (s *Server) serverShow(w http.ResponseWriter, r *http.Request, v *viewer) {
	srv, err := s.d.Fleet.Get(r.Context(), v.Principal, r.PathValue("name"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	rng := r.URL.Query().Get("range")
	if _, ok := fleet.ChartRanges[rng]; !ok {
		rng = "1h"
	}
	var facts map[string]any
	_ = json.Unmarshal(srv.Facts, &facts)
	keys := make([]string, 0, len(facts))
	for k := range facts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	type fact struct{ K, V string }
	fl := make([]fact, 0, len(keys))
	for _, k := range keys {
		val := facts[k]
		if k == "memory_bytes" || k == "memory_total" {
			if f, ok := val.(float64); ok {
				fl = append(fl, fact{k, humanBytes(f)})
				continue
			}
		}
		fl = append(fl, fact{k, fmt.Sprint(val)})
	}
	firing, err := s.serverAlerts(r, v, srv.ID)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "server", view{Title: srv.Name, Nav: "servers", User: v, Data: map[string]any{
		"Server": srv, "Range": rng, "Ranges": []string{"1h", "24h", "7d"}, "Facts": fl, "Alerts": firing,
	}})
}

// serverMetrics is the chart data: columns in uPlot's layout (x then one
// array per series), nulls where a bucket has no value.
func (s *Server) serverMetrics(w http.ResponseWriter, r *http.Request, v *viewer) {
	rng, ok := fleet.ChartRanges[r.URL.Query().Get("range")]
	if !ok {
		jsonError(w, http.StatusBadRequest, "range must be one of 1h, 24h, 7d")
		return
	}
	pts, err := s.d.Fleet.Metrics(r.Context(), v.Principal, r.PathValue("name"), rng.Since, rng.Step)
	if err != nil {
		jsonError(w, statusOf(err), publicMessage(err))
		return
	}
	cols := map[string][]*float64{}
	// disk_percent is df's use % (used / (used + avail): reserved blocks
	// are no room for ordinary processes), the figure the Disk chart shows;
	// inodes_percent the share of inodes in use.
	names := []string{"cpu_percent", "load1", "load5", "load15", "mem_used", "mem_total", "swap_used", "disk_used", "disk_total",
		"disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps", "disk_avail", "disk_percent", "inodes_total", "inodes_free",
		"inodes_percent"}
	t := make([]int64, len(pts))
	for i, p := range pts {
		t[i] = p.T.Unix()
		vals := []*float64{p.CPUPercent, p.Load1, p.Load5, p.Load15, p.MemUsed, p.MemTotal, p.SwapUsed, p.DiskUsed, p.DiskTotal,
			p.DiskReadBps, p.DiskWriteBps, p.NetRxBps, p.NetTxBps, p.DiskAvail, p.DiskPercent, p.InodesTotal, p.InodesFree,
			p.InodesPercent}
		for j, n := range names {
			cols[n] = append(cols[n], vals[j])
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"t": t, "series": cols, "step": int(rng.Step.Seconds())})
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (s *Server) serverNewForm(w http.ResponseWriter, r *http.Request, v *viewer) {
	s.render(w, r, "server_new", view{Title: "Add a server", Nav: "servers", User: v})
}

func (s *Server) serverCreate(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	labels := map[string]string{}
	for _, line := range strings.FieldsFunc(r.PostFormValue("labels"), func(c rune) bool { return c == '\n' || c == ',' }) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, val, ok := strings.Cut(line, "=")
		if !ok {
			s.render(w, r, "server_new", view{Title: "Add a server", Nav: "servers", User: v, Status: http.StatusBadRequest,
				Error: "labels are key=value, one per line", Form: r.PostForm})
			return
		}
		labels[strings.TrimSpace(k)] = strings.TrimSpace(val)
	}
	ttl := time.Hour
	if t := r.PostFormValue("token_ttl"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil {
			s.render(w, r, "server_new", view{Title: "Add a server", Nav: "servers", User: v, Status: http.StatusBadRequest,
				Error: "token lifetime must be a duration like 1h or 30m", Form: r.PostForm})
			return
		}
		ttl = d
	}
	res, err := s.d.Fleet.AddServer(r.Context(), v.Principal, s.peer(r), r.PostFormValue("name"), labels, ttl)
	if err != nil {
		if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict {
			s.render(w, r, "server_new", view{Title: "Add a server", Nav: "servers", User: v, Status: st, Error: publicMessage(err), Form: r.PostForm})
			return
		}
		s.fail(w, r, v, err)
		return
	}
	// The join token is shown on this response only; it is stored hashed.
	s.render(w, r, "server_added", view{Title: "Server added", Nav: "servers", User: v, Data: res})
}

func (s *Server) serverDisable(w http.ResponseWriter, r *http.Request, v *viewer) {
	srv, err := s.d.Fleet.Disable(r.Context(), v.Principal, s.peer(r), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/servers/"+srv.Name, "Server "+srv.Name+" disabled: its agent is shut out.")
}

func (s *Server) serverEnable(w http.ResponseWriter, r *http.Request, v *viewer) {
	res, err := s.d.Fleet.Enable(r.Context(), v.Principal, s.peer(r), r.PathValue("name"), time.Hour)
	if err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.render(w, r, "server_added", view{Title: "Server enabled", Nav: "servers", User: v, Data: res})
}

func (s *Server) serverRemove(w http.ResponseWriter, r *http.Request, v *viewer) {
	if !s.parseForm(w, r) {
		return
	}
	name := r.PathValue("name")
	if r.PostFormValue("confirm") != name {
		s.redirect(w, r, "/servers/"+name, "Type the server's name to confirm removal.")
		return
	}
	if err := s.d.Fleet.Remove(r.Context(), v.Principal, s.peer(r), name); err != nil {
		s.fail(w, r, v, err)
		return
	}
	s.redirect(w, r, "/servers", "Server "+name+" removed.")
}

// parseForm reads a bounded form body; oversized or malformed bodies get a
// clear 400 or 413.
func (s *Server) parseForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.errorPage(w, r, http.StatusRequestEntityTooLarge, "Form too large", "The form is limited to 64 KiB.")
			return false
		}
		s.errorPage(w, r, http.StatusBadRequest, "Bad request", "The form could not be read.")
		return false
	}
	return true
}

func (s *Server) peer(r *http.Request) fleet.Peer {
	ip := s.clientIP(r)
	p := fleet.Peer{UserAgent: truncateUA(r.UserAgent())}
	if ip.IsValid() {
		p.IP = &ip
	}
	return p
}

func truncateUA(ua string) string {
	if len(ua) > 512 {
		return ua[:512]
	}
	return ua
}

// fail renders a service error.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, v *viewer, err error) {
	st := statusOf(err)
	if st == http.StatusInternalServerError {
		s.d.Log.Error("web request failed", "path", r.URL.Path, "err", err)
	}
	title := map[int]string{400: "Bad request", 401: "Sign in again", 403: "Not allowed", 404: "Not found", 409: "Conflict", 429: "Too many attempts"}[st]
	if title == "" {
		title = "Something went wrong"
	}
	if st == http.StatusTooManyRequests {
		if ra := retryAfter(err); ra > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ra.Seconds()))))
		}
	}
	s.errorPage(w, r, st, title, publicMessage(err))
}
