// The Domains tab keeps its routing and certificate states current while
// one is in progress (a route not yet applied, a certificate being
// issued), by polling the tab's JSON; it stops once nothing is. It never
// reloads the page, so nothing typed in the add form is lost. Everything
// is set as text, never as HTML.
(function () {
  "use strict";
  var table = document.getElementById("domains");
  if (!table || !table.dataset.states) return;

  function busy(d) {
    return d.status === "pending" || d.tls_status === "pending" || d.tls_status === "issuing";
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setError(div, text) {
    div.textContent = text;
    div.hidden = text === "";
  }
  function setWhen(td, iso, text) {
    td.textContent = "";
    if (!text) { td.appendChild(el("span", "muted", "—")); return; }
    var t = el("time", "", text);
    t.dateTime = iso;
    td.appendChild(t);
  }
  function setCert(td, d) {
    td.textContent = "";
    if (!d.expiry) { td.appendChild(el("span", "muted", "none")); return; }
    var x = el("span", d.soon ? "expiry-soon" : "", d.expiry);
    x.dataset.field = "expiry";
    x.dataset.daysLeft = String(d.days_left);
    td.appendChild(x);
    td.appendChild(el("br"));
    var t = el("time", "muted", d.expires_at);
    t.dateTime = d.expires_iso;
    td.appendChild(t);
    if (d.issuer) {
      td.appendChild(el("br"));
      var i = el("span", "muted", d.issuer);
      i.dataset.field = "issuer";
      td.appendChild(i);
    }
  }

  function update(data) {
    var any = false;
    data.domains.forEach(function (d) {
      var tr = table.querySelector('tr[data-domain="' + CSS.escape(d.host) + '"]');
      if (!tr) return;
      var st = tr.querySelector("[data-field=status]");
      st.textContent = d.status;
      st.className = "status domain-" + d.status;
      setError(tr.querySelector("[data-field=last-error]"), d.last_error);
      var ts = tr.querySelector("[data-field=tls-status]");
      ts.textContent = d.tls_status;
      ts.className = "status tls-" + d.tls_status;
      setError(tr.querySelector("[data-field=tls-error]"), d.tls_last_error);
      setCert(tr.querySelector("[data-field=cert]"), d);
      setWhen(tr.querySelector("[data-field=next]"), d.next_iso, d.next_attempt);
      any = any || busy(d);
    });
    table.dataset.updated = String(Date.now());
    return any;
  }

  function poll() {
    fetch(table.dataset.states, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (data) { if (update(data)) setTimeout(poll, 2000); })
      .catch(function () { setTimeout(poll, 5000); });
  }
  var inProgress = Array.prototype.some.call(table.querySelectorAll("tbody tr"), function (tr) {
    var s = tr.querySelector("[data-field=status]").textContent;
    var t = tr.querySelector("[data-field=tls-status]").textContent;
    return busy({ status: s, tls_status: t });
  });
  if (inProgress) setTimeout(poll, 2000);
})();
