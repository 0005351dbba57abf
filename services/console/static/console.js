// The console's own script: KPI charts (Chart.js, vendored) from the JSON the page embeds.
// Live counts and forms are htmx attributes in the templates; nothing here talks to an API.
(function () {
  "use strict";
  function series(data) {
    // Accepts {"series": [{"name", "points": [{"t"|"at"|"bucket", "value"}]}]} or
    // {"items": [{"bucket"|"t", <metric>: number, ...}]}: one chart per numeric metric.
    if (Array.isArray(data.series)) {
      return data.series.map(function (s) {
        var pts = s.points || s.values || [];
        return { name: s.name || s.key, labels: pts.map(function (p) { return p.t || p.at || p.bucket || p.start; }),
                 values: pts.map(function (p) { return p.value; }) };
      });
    }
    var rows = data.items || data.buckets || data.intervals || [];
    if (!rows.length) return [];
    var label = ["bucket", "t", "at", "start", "interval"].find(function (k) { return k in rows[0]; });
    return Object.keys(rows[0]).filter(function (k) { return k !== label && typeof rows[0][k] === "number"; })
      .map(function (k) { return { name: k, labels: rows.map(function (r) { return r[label]; }),
                                   values: rows.map(function (r) { return r[k]; }) }; });
  }
  function draw() {
    var holder = document.getElementById("kpi-charts"), raw = document.getElementById("kpi-data");
    if (!holder || !raw || typeof Chart === "undefined") return;
    var all = series(JSON.parse(raw.textContent || "{}"));
    if (!all.length) { holder.textContent = "No data for these filters."; return; }
    all.forEach(function (s) {
      var canvas = document.createElement("canvas"); holder.appendChild(canvas);
      new Chart(canvas, { type: "line", data: { labels: s.labels, datasets: [{ label: s.name.replace(/_/g, " "), data: s.values, borderColor: "#3056d3", tension: 0.2 }] },
                          options: { animation: false, plugins: { legend: { display: true } } } });
    });
  }
  window.addEventListener("load", draw);
})();
