// Live log of a backup or of one of its tasks over server-sent events, as
// the deployment page's: chunks as they are stored, status changes, and the
// end. Reconnects resume after the last chunk (Last-Event-ID). When a
// backup succeeds while its page is open, the actions on a stored object
// (verify, download, restore) appear without a reload.
(function () {
  "use strict";
  var log = document.getElementById("log");
  if (!log || !window.EventSource) return;
  var status = document.getElementById("job-status");
  var result = document.getElementById("job-result");
  var finished = document.getElementById("job-finished");
  var size = document.getElementById("job-size");
  var checksum = document.getElementById("job-checksum");
  var object = document.getElementById("job-object");
  var stored = document.getElementById("stored-actions");
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
    var done = ["succeeded", "failed", "canceled", "timed_out"].indexOf(s.status) >= 0;
    status.textContent = s.status + (s.cancel_requested && !done ? " (canceling)" : "");
    status.className = "status status-" + s.status;
    if (s.failure_reason) result.textContent = s.failure_reason;
    else if (s.status === "succeeded") result.textContent = size ? "stored" : "succeeded";
    if (s.finished_at) {
      var t = new Date(s.finished_at);
      finished.textContent = t.toLocaleString();
      finished.title = s.finished_at;
    }
    if (size && s.size) size.textContent = s.size;
    if (checksum && s.checksum) checksum.textContent = s.checksum;
    if (object && s.object_key) object.textContent = s.object_key;
    if (stored && s.status === "succeeded") stored.hidden = false;
  });
  es.addEventListener("end", function () {
    es.close();
    var cancel = document.getElementById("cancel-form");
    if (cancel) cancel.remove();
  });
})();
