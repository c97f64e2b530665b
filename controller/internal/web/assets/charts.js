// Server metrics charts with uPlot. Data comes downsampled from the
// controller (/servers/NAME/metrics.json), a few hundred points per range.
(function () {
  "use strict";
  var box = document.getElementById("charts");
  if (!box || typeof uPlot === "undefined") return;

  function bytes(v) {
    if (v == null) return "";
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return v.toFixed(i ? 1 : 0) + " " + u[i];
  }
  function pct(v) { return v == null ? "" : v.toFixed(1) + "%"; }
  function num(v) { return v == null ? "" : v.toFixed(2); }
  function rate(v) { return v == null ? "" : bytes(v) + "/s"; }

  var charts = [
    { title: "CPU", fmt: pct, series: [["cpu_percent", "CPU %", "#0b57d0"]], range: [0, 100] },
    { title: "Load", fmt: num, series: [["load1", "1 min", "#0b57d0"], ["load5", "5 min", "#137333"], ["load15", "15 min", "#a05a00"]] },
    { title: "Memory", fmt: bytes, series: [["mem_used", "used", "#0b57d0"], ["mem_total", "total", "#9aa0a6"], ["swap_used", "swap used", "#b3261e"]] },
    { title: "Disk", fmt: bytes, series: [["disk_used", "used", "#0b57d0"], ["disk_total", "total", "#9aa0a6"]] },
    { title: "Disk I/O", fmt: rate, series: [["disk_read_bps", "read", "#137333"], ["disk_write_bps", "write", "#b3261e"]] },
    { title: "Network", fmt: rate, series: [["net_rx_bps", "received", "#137333"], ["net_tx_bps", "sent", "#0b57d0"]] }
  ];
  var plots = [];

  // A chart is as wide as its card: the figure's width decides (it never
  // grows with its canvas, see app.css), so resizing the window redraws.
  function widthOf(el) {
    var cs = getComputedStyle(el);
    return Math.max(200, Math.floor(el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight)));
  }

  // lastIdx is the newest point that has any value, so the legend shows
  // the latest time and values while the pointer is elsewhere (uPlot
  // would print "--").
  function lastIdx(u) {
    for (var i = u.data[0].length - 1; i >= 0; i--) {
      for (var s = 1; s < u.data.length; s++) if (u.data[s][i] != null) return i;
    }
    return u.data[0].length - 1;
  }
  function showLatest(u) {
    if (u.data[0].length) u.setLegend({ idx: lastIdx(u) });
  }

  function draw(data) {
    // The x axis spans the chosen range up to now, however few points
    // there are yet (uPlot would stretch a single point over years).
    var now = Date.now() / 1000, span = { "1h": 3600, "24h": 86400, "7d": 604800 }[box.dataset.range] || 3600;
    box.textContent = "";
    plots = [];
    if (!data.t || data.t.length === 0) {
      var p = document.createElement("p");
      p.className = "muted";
      p.setAttribute("data-charts-empty", "");
      p.textContent = "No metrics in this range yet. They appear once the agent is online.";
      box.appendChild(p);
      return;
    }
    charts.forEach(function (c) {
      var wrap = document.createElement("figure");
      wrap.className = "chart";
      wrap.setAttribute("data-chart", c.title);
      var h = document.createElement("h3");
      h.textContent = c.title;
      wrap.appendChild(h);
      box.appendChild(wrap);
      var series = [{ label: "Time", value: function (u, v) { return v == null ? "" : new Date(v * 1000).toLocaleString(); } }];
      var cols = [data.t];
      c.series.forEach(function (s) {
        series.push({ label: s[1], stroke: s[2], width: 1.5, value: function (u, v) { return c.fmt(v); } });
        cols.push(data.series[s[0]] || []);
      });
      var opts = {
        width: widthOf(wrap), height: 180, series: series,
        axes: [{}, { values: function (u, vals) { return vals.map(c.fmt); }, size: 90 }],
        scales: { x: { time: true, range: function () { return [now - span, now]; } } },
        hooks: { setCursor: [function (u) { if (u.cursor.idx == null) showLatest(u); }] }
      };
      if (c.range) opts.scales.y = { range: c.range };
      var u = new uPlot(opts, cols, wrap);
      showLatest(u);
      plots.push({ u: u, wrap: wrap });
    });
  }

  var resizing = 0;
  window.addEventListener("resize", function () {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(function () {
      plots.forEach(function (p) { p.u.setSize({ width: widthOf(p.wrap), height: 180 }); });
    });
  });

  function load() {
    fetch(box.dataset.metrics, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(draw)
      .catch(function (e) { box.textContent = "Could not load metrics: " + e.message; });
  }
  load();
  // The 1 h view follows along; longer ranges barely move.
  if (box.dataset.range === "1h") setInterval(load, 30000);
})();
