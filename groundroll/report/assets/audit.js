(function () {
  "use strict";
  var D = GR.data, root = GR.root, el = GR.el;
  function fmt(v) { return typeof v === "number" ? v.toFixed(4) : String(v); }
  root.appendChild(el("p", {}, D.summary));
  var agg = el("table", {"class": "gr-table", id: "gr-aggregate"}), hr = el("tr");
  ["metric", "mean", "median", "agreement is"].forEach(function (h) { hr.appendChild(el("th", {}, h)); });
  agg.appendChild(hr);
  D.metrics.forEach(function (m) {
    var tr = el("tr");
    tr.appendChild(el("td", {}, m));
    tr.appendChild(el("td", {}, fmt(D.aggregate[m])));
    tr.appendChild(el("td", {}, fmt(D.aggregate[m + "_median"])));
    tr.appendChild(el("td", {"class": "gr-muted"}, D.higher[m] ? "higher" : "lower"));
    agg.appendChild(tr);
  });
  root.appendChild(agg);

  root.appendChild(el("h2", {}, "Examples"));
  root.appendChild(el("p", {"class": "gr-muted"}, "Click a column to sort; click a row to see both models' maps (where embedded)."));
  var wrap = el("div", {"class": "gr-seg"});
  var table = el("table", {"class": "gr-table", id: "gr-examples"});
  var view = el("div", {id: "gr-example-view"});
  wrap.appendChild(table); wrap.appendChild(view); root.appendChild(wrap);
  var cols = ["index", "label"].concat(D.metrics), sortBy = D.sort || "spearman", asc = true;
  function renderTable() {
    table.innerHTML = "";
    var h = el("tr");
    cols.forEach(function (c) {
      var th = el("th", {"data-col": c, style: "cursor:pointer"}, c + (c === sortBy ? (asc ? " ▲" : " ▼") : ""));
      th.addEventListener("click", function () { asc = c === sortBy ? !asc : true; sortBy = c; renderTable(); });
      h.appendChild(th);
    });
    table.appendChild(h);
    var rows = D.examples.slice().sort(function (a, b) {
      var x = a[sortBy], y = b[sortBy];
      var r = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
      return asc ? r : -r;
    });
    rows.forEach(function (e) {
      var tr = el("tr", {"data-index": e.index, style: "cursor:pointer"});
      cols.forEach(function (c) {
        var v = e[c];
        tr.appendChild(el("td", {}, c === "label" ? String(v).slice(0, 70) : fmt(v)));
      });
      tr.addEventListener("click", function () { show(e.index); });
      table.appendChild(tr);
    });
  }
  function show(i) {
    view.innerHTML = "";
    table.querySelectorAll("tr").forEach(function (r) { r.style.background = +r.getAttribute("data-index") === i && r.hasAttribute("data-index") ? "#fdecec" : ""; });
    var pics = D.pictures[String(i)];
    if (!pics) { view.appendChild(el("p", {"class": "gr-muted"}, "Maps of example " + i + " are not embedded (size limit)." )); return; }
    view.appendChild(el("h2", {}, "Example " + i + (pics.what ? " · " + pics.what : "")));
    var row = el("div", {"class": "gr-layers"});
    [["A: " + D.model_a, pics.a], ["B: " + D.model_b, pics.b], ["B − A (red: B higher)", pics.diff]].forEach(function (p) {
      var f = el("figure"), img = el("img", {alt: p[0]}); img.src = p[1];
      img.style.width = "220px"; img.style.imageRendering = "pixelated";
      f.appendChild(img); f.appendChild(el("figcaption", {}, p[0])); row.appendChild(f);
    });
    view.appendChild(row);
  }
  renderTable();
  if (D.first !== null && D.first !== undefined) show(D.first);
  if (D.settings) {
    root.appendChild(el("h2", {}, "Settings"));
    root.appendChild(el("pre", {"class": "gr-json"}, JSON.stringify(D.settings, null, 2)));
  }
  document.body.setAttribute("data-ready", "1");
})();
