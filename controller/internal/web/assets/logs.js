// Live app logs over server-sent events. Lines are added as text nodes,
// never as HTML, and the stream closes when the page goes, which ends the
// agent's read on the server.
(function () {
  "use strict";
  var log = document.getElementById("app-log");
  if (!log || !log.dataset.stream) return;
  var state = document.getElementById("logs-state");
  var failure = document.getElementById("logs-failure");
  var maxLines = 5000;
  var es = new EventSource(log.dataset.stream);
  function setState(s) {
    state.textContent = s;
    state.className = "status status-" + s;
  }
  es.addEventListener("open", function () { setState("live"); });
  es.addEventListener("lines", function (e) {
    var lines = JSON.parse(e.data);
    var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    var frag = document.createDocumentFragment();
    lines.forEach(function (l) {
      var row = document.createElement("span");
      row.className = "line " + (l.stream === "stderr" ? "stderr" : "stdout");
      row.dataset.process = l.process;
      var t = l.time ? new Date(l.time) : null;
      row.textContent = (t ? t.toISOString().slice(11, 23) + " " : "") + l.process + "." + l.instance + " | " + l.text + "\n";
      frag.appendChild(row);
    });
    log.appendChild(frag);
    while (log.childNodes.length > maxLines) log.removeChild(log.firstChild);
    if (atEnd) log.scrollTop = log.scrollHeight;
  });
  es.addEventListener("failure", function (e) {
    failure.textContent = JSON.parse(e.data).message;
    failure.hidden = false;
  });
  es.addEventListener("end", function () {
    es.close();
    setState("ended");
  });
  es.addEventListener("error", function () {
    if (es.readyState === EventSource.CLOSED) setState("ended");
    else setState("reconnecting");
  });
  window.addEventListener("pagehide", function () { es.close(); });
})();
