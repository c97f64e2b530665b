// Berth admin UI: small progressive enhancements. Every page works without
// this file; it adds live status, copy buttons and relative times.
(function () {
  "use strict";

  function ago(iso) {
    if (!iso) return "never";
    var s = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (s < 5) return "just now";
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m ago";
    if (s < 172800) return Math.floor(s / 3600) + "h ago";
    return Math.floor(s / 86400) + "d ago";
  }

  function setStatus(el, status) {
    el.textContent = status;
    el.className = "status status-" + status;
  }

  // Live server status over server-sent events.
  function live() {
    var table = document.querySelector("[data-live=servers]");
    var single = document.querySelector("[data-live-server]");
    if (!table && !single) return;
    var es = new EventSource("/events");
    es.addEventListener("server", function (e) {
      var ev = JSON.parse(e.data);
      if (table) {
        var row = table.querySelector('tr[data-server-id="' + ev.id + '"]');
        if (row) {
          setStatus(row.querySelector("[data-field=status]"), ev.status);
          var seen = row.querySelector("[data-field=last_seen]");
          if (seen && ev.last_seen_at) { seen.dataset.time = ev.last_seen_at; seen.textContent = ago(ev.last_seen_at); }
        }
      }
      if (single && single.dataset.liveServer === ev.id) {
        setStatus(single, ev.status);
        var s = document.querySelector('[data-live-seen="' + ev.id + '"]');
        if (s && ev.last_seen_at) { s.dataset.time = ev.last_seen_at; s.textContent = ago(ev.last_seen_at); }
      }
    });
    setInterval(function () {
      document.querySelectorAll("[data-time]").forEach(function (el) { el.textContent = ago(el.dataset.time); });
    }, 5000);
  }

  function copyButtons() {
    document.querySelectorAll("[data-copy-target]").forEach(function (b) {
      b.addEventListener("click", function () {
        var t = document.getElementById(b.dataset.copyTarget);
        t.select();
        if (navigator.clipboard) { navigator.clipboard.writeText(t.value); }
        b.textContent = "Copied";
      });
    });
  }

  function confirms() {
    document.querySelectorAll("form[data-confirm]").forEach(function (f) {
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.dataset.confirm)) e.preventDefault();
      });
    });
  }

  // The bell: the unread count, live over server-sent events.
  function bell() {
    var count = document.getElementById("bell-count");
    var link = document.getElementById("bell");
    if (!count || !link || !window.EventSource) return;
    var es = new EventSource("/notifications/stream");
    es.addEventListener("unread", function (e) {
      var n = JSON.parse(e.data).unread;
      count.textContent = String(n);
      count.dataset.count = String(n);
      count.hidden = n === 0;
      link.setAttribute("aria-label", "Notifications, " + n + " unread");
    });
  }

  document.addEventListener("DOMContentLoaded", function () { live(); bell(); copyButtons(); confirms(); });
})();
