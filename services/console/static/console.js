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

  // Stage maps: each stage's steps drawn as a small flow (dagre lays it out, we draw SVG).
  // The ordered list next to it stays in the page for screen readers and text browsers.
  var SVG = "http://www.w3.org/2000/svg";
  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;  // text, never markup
    return node;
  }
  function clip(text, n) { text = String(text); return text.length > n ? text.slice(0, n - 1) + "…" : text; }
  function drawFlows(root) {
    if (typeof dagre === "undefined") return;
    root.querySelectorAll("script.flow-data").forEach(function (tag) {
      var holder = tag.nextElementSibling, data = JSON.parse(tag.textContent || "{}");
      if (!holder || !data.nodes || !data.nodes.length) return;
      var g = new dagre.graphlib.Graph({ multigraph: true });
      g.setGraph({ rankdir: "TB", nodesep: 14, ranksep: 28, edgesep: 8, marginx: 2, marginy: 2 });
      g.setDefaultEdgeLabel(function () { return {}; });
      data.nodes.forEach(function (n) {
        g.setNode(n.id, { width: n.kind === "end" ? 90 : 168, height: n.kind === "end" ? 24 : 44, n: n });
      });
      data.edges.forEach(function (e, i) {
        g.setEdge(e.from, e.to, { label: e.label, width: e.label ? Math.min(e.label.length, 28) * 5.6 : 0,
                                  height: e.label ? 12 : 0, labelpos: "c" }, "e" + i);
      });
      dagre.layout(g);
      var size = g.graph();
      var svg = el("svg", { width: Math.ceil(size.width), height: Math.ceil(size.height), class: "flow-svg",
                            role: "img", "aria-label": "steps of this stage" });
      var defs = el("defs"), marker = el("marker", { id: "arrow", viewBox: "0 0 8 8", refX: 7, refY: 4,
                                                    markerWidth: 7, markerHeight: 7, orient: "auto" });
      marker.appendChild(el("path", { d: "M0,0 L8,4 L0,8 z", class: "arrowhead" }));
      defs.appendChild(marker); svg.appendChild(defs);
      g.edges().forEach(function (ref) {
        var e = g.edge(ref), pts = e.points;
        var d = "M" + pts.map(function (p) { return p.x.toFixed(1) + "," + p.y.toFixed(1); }).join(" L");
        svg.appendChild(el("path", { d: d, class: "edge", "marker-end": "url(#arrow)" }));
        if (e.label) svg.appendChild(el("text", { x: e.x, y: e.y + 4, class: "edge-label", "text-anchor": "middle" }, clip(e.label, 28)));
      });
      g.nodes().forEach(function (id) {
        var v = g.node(id), n = v.n, x = v.x - v.width / 2, y = v.y - v.height / 2;
        var group = el("g", { class: "node " + n.kind, "data-step-node": n.id,
                              "data-active": n.active === null ? "" : String(n.active) });
        group.appendChild(el("rect", { x: x, y: y, width: v.width, height: v.height, rx: 6 }));
        if (n.kind === "end") {
          group.appendChild(el("text", { x: v.x, y: v.y + 4, "text-anchor": "middle", class: "muted" }, n.label));
        } else {
          group.appendChild(el("text", { x: x + 8, y: y + 16, class: "kind" }, clip(n.kind.replace(/_/g, " ") + " · " + n.id, 24)));
          group.appendChild(el("text", { x: x + 8, y: y + 33, class: "what" }, clip(n.label, 27)));
          group.appendChild(el("circle", { cx: x + v.width - 14, cy: y + 14, r: 11, class: "badge" }));
          group.appendChild(el("text", { x: x + v.width - 14, y: y + 18, "text-anchor": "middle", class: "badge-n" }, String(n.active)));
        }
        var title = el("title", {}, n.id + ": " + n.label + (n.active === null ? "" : " (" + n.active + " here now)"));
        group.appendChild(title);
        svg.appendChild(group);
      });
      holder.replaceChildren(svg);
      holder.parentElement.classList.add("graphed");
    });
  }
  window.addEventListener("load", function () { drawFlows(document); });
  document.addEventListener("htmx:afterSwap", function (evt) { drawFlows(evt.detail.target || document); });

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
