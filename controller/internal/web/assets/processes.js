// The app page's process states, kept current from what the agents
// report (polled; the page is rendered on the server). Everything is set
// as text, never as HTML.
(function () {
  "use strict";
  var box = document.getElementById("processes");
  if (!box || !box.dataset.states) return;

  function cell(tr, text) {
    var td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }
  function status(state) {
    var s = document.createElement("span");
    s.className = "status pstate-" + state;
    s.textContent = state;
    return s;
  }

  function update(data) {
    data.processes.forEach(function (p) {
      var art = box.querySelector('article.process[data-process="' + CSS.escape(p.name) + '"]');
      if (!art) return;
      var st = art.querySelector("[data-field=state]");
      st.textContent = p.state;
      st.className = "status pstate-" + p.state;
      art.querySelector("[data-field=summary]").textContent = p.summary;
      var body = art.querySelector("table.instances tbody");
      body.textContent = "";
      p.instances.forEach(function (i) {
        var tr = document.createElement("tr");
        tr.dataset.instance = i.index;
        cell(tr, String(i.index));
        cell(tr, "").appendChild(status(i.state));
        cell(tr, i.pid).className = "num";
        cell(tr, i.port).className = "num";
        cell(tr, String(i.restarts)).className = "num";
        cell(tr, i.uptime);
        cell(tr, i.last);
        body.appendChild(tr);
      });
      body.closest(".table-scroll").hidden = p.instances.length === 0;
    });
    box.dataset.updated = String(Date.now());
  }

  function poll() {
    fetch(box.dataset.states, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(update)
      .catch(function () { /* the next poll tries again */ })
      .finally(function () { setTimeout(poll, 3000); });
  }
  setTimeout(poll, 3000);
})();
