// The console's own script: KPI charts (Chart.js, vendored) from the JSON the page embeds.
// No inline scripts: the data travels in a <script type="application/json"> block.
// Live counts and forms are htmx attributes in the templates; nothing here talks to an API.
(function () {
  "use strict";
  function series(data) {
    // /v1/kpis: {"series": [{"start": ..., GROUP: {metric: number, ...}}, ...]}:
    // one chart per group and numeric metric, over the intervals' starts.
    var rows = Array.isArray(data.series) ? data.series : [];
    if (!rows.length) return [];
    var out = [];
    Object.keys(rows[0]).forEach(function (group) {
      var first = rows[0][group];
      if (group === "start" || first === null || typeof first !== "object") return;
      Object.keys(first).forEach(function (metric) {
        if (typeof first[metric] !== "number") return;
        out.push({ name: group + " · " + metric,
                   labels: rows.map(function (r) { return String(r.start).slice(0, 10); }),
                   values: rows.map(function (r) { return r[group] ? r[group][metric] : null; }) });
      });
    });
    return out.slice(0, 24);
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

  // Live fragments ([data-live], htmx `every 5s`): no request while the tab is hidden, and one
  // at once when it shows again. (Done here rather than in an hx-trigger filter: filters need
  // eval, which the Content-Security-Policy forbids.)
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var elt = evt.detail && evt.detail.elt;
    if (elt && elt.hasAttribute("data-live") && document.visibilityState !== "visible") {
      evt.preventDefault();
    }
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState !== "visible" || typeof htmx === "undefined") return;
    document.querySelectorAll("[data-live]").forEach(function (elt) {
      htmx.trigger(elt, "visible-again");
    });
  });

  // <select data-autosubmit>: submit its form on change (no inline handlers under the CSP).
  document.addEventListener("change", function (evt) {
    var t = evt.target;
    if (t && t.matches && t.matches("select[data-autosubmit]") && t.form) t.form.submit();
  });
})();
