// Live deployment log over server-sent events: chunks as they are stored,
// status changes, and the end. Reconnects resume after the last chunk
// (Last-Event-ID), so no line is shown twice.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log) return;
  var status = document.getElementById("dep-status");
  var result = document.getElementById("dep-result");
  var commit = document.getElementById("dep-commit");
  var finished = document.getElementById("dep-finished");
  var waiting = document.getElementById("dep-waiting");
  var es = new EventSource(log.dataset.log);
  var follow = true;
  window.addEventListener("scroll", function () {
    follow = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
  });
  es.addEventListener("chunk", function (e) {
    var c = JSON.parse(e.data);
    log.appendChild(document.createTextNode(c.text));
    if (follow) window.scrollTo(0, document.body.scrollHeight);
  });
  es.addEventListener("status", function (e) {
    var s = JSON.parse(e.data);
    status.textContent = s.status + (s.cancel_requested && s.status === "running" ? " (canceling)" : "");
    status.className = "status status-" + s.status;
    var parts = [];
    if (s.failed_step) parts.push("failed at " + s.failed_step);
    if (s.failure_reason) parts.push(s.failure_reason);
    if (s.exit_code) parts.push("exit " + s.exit_code);
    if (parts.length) result.textContent = parts.join(" — ");
    else if (s.status === "succeeded") result.textContent = "succeeded";
    if (s.commit_sha) commit.textContent = s.commit_sha + (s.commit_message ? " — " + s.commit_message : "");
    if (s.finished_at) {
      var t = new Date(s.finished_at);
      finished.textContent = t.toLocaleString();
      finished.title = s.finished_at;
    }
  });
  es.addEventListener("waiting", function (e) {
    var w = JSON.parse(e.data);
    waiting.textContent = w.text;
    waiting.hidden = !w.text;
  });
  es.addEventListener("end", function () {
    es.close();
    var cancel = document.getElementById("cancel-form");
    if (cancel) cancel.remove();
  });
})();
