(function () {
  "use strict";
  var D = GR.data, root = GR.root, el = GR.el;
  var state = {pair: 0, variant: D.initial || 0, extraction: D.extraction || "argmax",
               thresholds: D.thresholds || {threshold: D.threshold, mutual: D.threshold},
               view: "both", pinned: null, hover: null};
  // The cut-off of the current extraction (undefined for argmax and itermax).
  function cutoff() { return state.thresholds[state.extraction]; }
  var links = [];
  // The SVG namespace is a name, not a link; spelt with \u003a so the file holds no
  // address-like text at all.
  var SVG_NS = "http\u003a//www.w3.org/2000/svg";

  // ---- link extraction: the same rules as groundroll.alignment.extract_links ----------
  function argmaxRow(row) {          // first index of the maximum (numpy's tie rule)
    var b = 0;
    for (var j = 1; j < row.length; j++) if (row[j] > row[b]) b = j;
    return b;
  }
  function argmaxCol(m, j) {
    var b = 0;
    for (var i = 1; i < m.length; i++) if (m[i][j] > m[b][j]) b = i;
    return b;
  }
  function normRows(m) {
    return m.map(function (row) {
      var c = row.map(function (v) { return v > 0 ? v : 0; });
      var s = c.reduce(function (a, b) { return a + b; }, 0);
      return c.map(function (v) { return s > 0 ? v / s : 0; });
    });
  }
  function transpose(m) {
    return m[0].map(function (_, j) { return m.map(function (row) { return row[j]; }); });
  }
    function extract(m, how, threshold) {
    var T = m.length, S = T ? m[0].length : 0, out = [], t, s;
    if (!T || !S) return out;
    if (how === "argmax") {
      for (t = 0; t < T; t++) out.push([argmaxRow(m[t]), t]);
      return out;
    }
    if (how === "threshold") {
      var n = normRows(m);
      for (t = 0; t < T; t++) for (s = 0; s < S; s++) if (n[t][s] > threshold) out.push([s, t]);
      return out;
    }
    if (how === "mutual") {      // sqrt(P(s | t) P(t | s)): rows and columns normalised
      var pr = normRows(m), pc = normRows(transpose(m));
      for (t = 0; t < T; t++) for (s = 0; s < S; s++)
        if (Math.sqrt(pr[t][s] * pc[s][t]) > threshold) out.push([s, t]);
      return out;
    }
    // itermax (SimAlign): mutual argmax, then rounds on cells with an unaligned word
    var aligned = [], alpha = 0.9, maxIter = 2;
    for (t = 0; t < T; t++) { aligned.push([]); for (s = 0; s < S; s++) aligned[t].push(false); }
    for (t = 0; t < T; t++) { var bc = argmaxRow(m[t]); if (argmaxCol(m, bc) === t) aligned[t][bc] = true; }
    if (Math.min(T, S) > 2) {
      for (var it = 0; it < maxIter - 1; it++) {
        var rowFree = [], colFree = [], anyR = false, anyC = false;
        for (t = 0; t < T; t++) { rowFree.push(aligned[t].indexOf(true) < 0); anyR = anyR || rowFree[t]; }
        for (s = 0; s < S; s++) {
          var f = true;
          for (t = 0; t < T; t++) if (aligned[t][s]) { f = false; break; }
          colFree.push(f); anyC = anyC || f;
        }
        if (!anyR || !anyC) break;
        var sc = [];
        for (t = 0; t < T; t++) {
          sc.push([]);
          for (s = 0; s < S; s++) {
            var w = Math.min(1, Math.max(0, alpha * rowFree[t] + alpha * colFree[s]));
            sc[t].push(m[t][s] * w);
          }
        }
        var added = false, fwd = [], bwd = [];
        for (t = 0; t < T; t++) fwd.push(argmaxRow(sc[t]));
        for (s = 0; s < S; s++) bwd.push(argmaxCol(sc, s));
        for (t = 0; t < T; t++) {
          s = fwd[t];
          if (bwd[s] === t && (rowFree[t] || colFree[s]) && !aligned[t][s]) { aligned[t][s] = true; added = true; }
        }
        if (!added) break;
      }
    }
    for (t = 0; t < T; t++) for (s = 0; s < S; s++) if (aligned[t][s]) out.push([s, t]);
    return out;
  }

  // ---- controls --------------------------------------------------------------
  var V = D.variants;
  function key(v) { return [v.method, v.layer, v.head, v.shift].join("|"); }
  function options(field, filter) {
    var seen = [], out = [];
    V.forEach(function (v) {
      if (filter && !filter(v)) return;
      var k = String(v[field]);
      if (seen.indexOf(k) < 0) { seen.push(k); out.push(v[field]); }
    });
    return out;
  }
  function label(field, value) {
    if (field === "layer") return value === "all" ? "all (mean)" : "layer " + value;
    if (field === "head") return value === "fused" ? "fused" : "head " + value;
    if (field === "shift") return value ? "AWI (shift)" : "AWO";
    return String(value);
  }
  var controls = el("div", {"class": "gr-controls", id: "gr-controls"});
  root.appendChild(controls);
  var selects = {};
  function addSelect(name, text) {
    var lab = el("label", {}, text + " ");
    var sel = el("select", {id: "gr-" + name, name: name});
    lab.appendChild(sel); controls.appendChild(lab); selects[name] = sel;
    sel.addEventListener("change", function () { onChange(name); });
    return sel;
  }
  var pairBox = null;
  if (D.pairs.length > 1) {
    pairBox = addSelect("pair", "pair");
    D.pairs.forEach(function (p, i) {
      var o = el("option", {value: i}, (i + 1) + ": " + p.src.slice(0, 6).join(" ") + (p.src.length > 6 ? " …" : ""));
      pairBox.appendChild(o);
    });
  }
  ["method", "layer", "head", "shift"].forEach(function (f) { addSelect(f, f); });
  var ex = addSelect("extraction", "extraction");
  ["argmax", "threshold", "itermax", "mutual"].forEach(function (x) { ex.appendChild(el("option", {value: x}, x)); });
  ex.value = state.extraction;
  var thLab = el("label", {}, "threshold ");
  var th = el("input", {type: "number", id: "gr-threshold", min: "0", max: "1", step: "0.05", value: String(cutoff() || 0)});
  thLab.appendChild(th); controls.appendChild(thLab);
  th.addEventListener("input", function () { state.thresholds[state.extraction] = parseFloat(th.value) || 0; render(); });
  var vw = addSelect("view", "view");
  ["both", "links", "matrix"].forEach(function (x) { vw.appendChild(el("option", {value: x}, x)); });
  var phBtn = el("button", {id: "gr-pharaoh-button", type: "button"}, "Pharaoh");
  controls.appendChild(phBtn);

  function fill(field, values, current) {
    var sel = selects[field];
    sel.innerHTML = "";
    values.forEach(function (v) { sel.appendChild(el("option", {value: String(v)}, label(field, v))); });
    var want = values.map(String).indexOf(String(current));
    sel.value = String(values[want < 0 ? 0 : want]);
  }
  function parse(field, text) {
    if (field === "shift") return text === "true";
    if ((field === "layer" && text !== "all") || (field === "head" && text !== "fused")) return parseInt(text, 10);
    return text;
  }
  function syncSelects() {
    var v = V[state.variant];
    fill("method", options("method"), v.method);
    fill("layer", options("layer", function (u) { return u.method === v.method; }), v.layer);
    fill("head", options("head", function (u) { return u.method === v.method && String(u.layer) === String(v.layer); }), v.head);
    fill("shift", options("shift", function (u) { return u.method === v.method && String(u.layer) === String(v.layer) && String(u.head) === String(v.head); }), v.shift);
  }
  function onChange(name) {
    if (name === "pair") { state.pair = parseInt(pairBox.value, 10); state.pinned = null; render(); return; }
    if (name === "extraction") { state.extraction = ex.value; render(); return; }
    if (name === "view") { state.view = vw.value; render(); return; }
    var cur = V[state.variant], want = {};
    ["method", "layer", "head", "shift"].forEach(function (f) { want[f] = cur[f]; });
    want[name] = parse(name, selects[name].value);
    // keep the other choices where that combination exists, else the first that does
    var order = ["method", "layer", "head", "shift"], best = -1, bestScore = -1;
    V.forEach(function (v, i) {
      if (String(v[name]) !== String(want[name])) return;
      var score = 0;
      order.forEach(function (f, k) { if (String(v[f]) === String(want[f])) score += 1 << (4 - k); });
      if (score > bestScore) { bestScore = score; best = i; }
    });
    if (best >= 0) state.variant = best;
    render();
  }

  // ---- views -----------------------------------------------------------------
  var scores = el("div", {"class": "gr-scores", id: "gr-scores"}, "Hover or click a word to see its links and scores.");
  var views = el("div", {"class": "gr-views"});
  var linkView = el("div", {"class": "gr-linkview", id: "gr-links"});
  var matrixView = el("div", {id: "gr-matrix"});
  views.appendChild(linkView); views.appendChild(matrixView);
  root.appendChild(scores); root.appendChild(views);
  var phBox = el("div", {id: "gr-pharaoh", hidden: ""});
  var phText = el("textarea", {"class": "gr-pharaoh", id: "gr-pharaoh-text", rows: "2", readonly: ""});
  var phSave = el("button", {type: "button", id: "gr-pharaoh-save"}, "Download .txt");
  phBox.appendChild(phText); phBox.appendChild(phSave); root.appendChild(phBox);
  var meta = el("p", {"class": "gr-muted", id: "gr-meta"});
  root.appendChild(meta);

  function pharaoh() {
    return links.slice().sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; })
      .map(function (l) { return l[0] + "-" + l[1]; }).join(" ");
  }
  phBtn.addEventListener("click", function () {
    phText.value = pharaoh(); phBox.hidden = false; phText.select();
  });
  phSave.addEventListener("click", function () {
    var lines = D.pairs.map(function (p, i) {
      return i === state.pair ? pharaoh() : extract(p.matrices[state.variant], state.extraction, cutoff())
        .sort(function (a, b) { return a[0] - b[0] || a[1] - b[1]; }).map(function (l) { return l[0] + "-" + l[1]; }).join(" ");
    });
    var blob = new Blob([lines.join("\n") + "\n"], {type: "text/plain"});
    var a = el("a", {download: "alignment.txt"});
    a.href = URL.createObjectURL(blob); document.body.appendChild(a); a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 0);
  });

  function matrix() { return D.pairs[state.pair].matrices[state.variant]; }
  function fmt(v) { return (Math.round(v * 1000) / 1000).toFixed(3); }

  function render() {
    syncSelects();
    var p = D.pairs[state.pair], m = matrix(), v = V[state.variant];
    thLab.style.display = cutoff() === undefined ? "none" : "";
    if (cutoff() !== undefined && document.activeElement !== th) th.value = String(cutoff());
    links = extract(m, state.extraction, cutoff());
    linkView.style.display = state.view === "matrix" ? "none" : "";
    matrixView.style.display = state.view === "links" ? "none" : "";
    // links view
    linkView.innerHTML = "";
    linkView.appendChild(el("div", {"class": "gr-side"}, "source"));
    var srcRow = el("div", {"class": "gr-words gr-src"}), tgtRow = el("div", {"class": "gr-words gr-tgt"});
    p.src.forEach(function (w, i) { srcRow.appendChild(el("span", {"class": "gr-word", "data-side": "src", "data-i": i}, w)); });
    p.tgt.forEach(function (w, i) { tgtRow.appendChild(el("span", {"class": "gr-word", "data-side": "tgt", "data-i": i}, w)); });
    linkView.appendChild(srcRow); linkView.appendChild(tgtRow);
    linkView.appendChild(el("div", {"class": "gr-side"}, "target"));
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "gr-svg");
    linkView.appendChild(svg);
    var base = linkView.getBoundingClientRect();
    var top = 0;
    links.forEach(function (l) { top = Math.max(top, m[l[1]][l[0]]); });
    links.forEach(function (l) {
      var a = srcRow.children[l[0]].getBoundingClientRect(), b = tgtRow.children[l[1]].getBoundingClientRect();
      var line = document.createElementNS(SVG_NS, "line");
      line.setAttribute("class", "gr-link");
      line.setAttribute("data-s", l[0]); line.setAttribute("data-t", l[1]);
      line.setAttribute("x1", a.left + a.width / 2 - base.left + linkView.scrollLeft);
      line.setAttribute("y1", a.bottom - base.top);
      line.setAttribute("x2", b.left + b.width / 2 - base.left + linkView.scrollLeft);
      line.setAttribute("y2", b.top - base.top);
      line.setAttribute("stroke-width", (1 + 3 * (top > 0 ? m[l[1]][l[0]] / top : 0)).toFixed(2));
      var tip = document.createElementNS(SVG_NS, "title");
      tip.textContent = p.src[l[0]] + " – " + p.tgt[l[1]] + ": " + fmt(m[l[1]][l[0]]);
      line.appendChild(tip);
      svg.appendChild(line);
    });
    // matrix view
    matrixView.innerHTML = "";
    var table = el("table", {"class": "gr-matrix"}), hr = el("tr");
    hr.appendChild(el("th"));
    p.src.forEach(function (w, i) { hr.appendChild(el("th", {"class": "gr-col", "data-side": "src", "data-i": i}, w)); });
    table.appendChild(hr);
    var mx = 0;
    m.forEach(function (row) { row.forEach(function (x) { mx = Math.max(mx, x); }); });
    var linked = {};
    links.forEach(function (l) { linked[l[0] + "," + l[1]] = true; });
    p.tgt.forEach(function (w, t) {
      var tr = el("tr");
      tr.appendChild(el("th", {"class": "gr-row", "data-side": "tgt", "data-i": t}, w));
      p.src.forEach(function (_, s) {
        var x = m[t][s], shade = mx > 0 ? Math.max(0, Math.min(1, x / mx)) : 0;
        var td = el("td", {"data-s": s, "data-t": t, title: p.src[s] + " – " + w + ": " + fmt(x)});
        td.style.background = "rgba(31,119,180," + shade.toFixed(3) + ")";
        if (linked[s + "," + t]) td.classList.add("gr-linked");
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    matrixView.appendChild(table);
    meta.textContent = v.label + " · extraction " + state.extraction +
      (cutoff() === undefined ? "" : " > " + cutoff()) + " · " + links.length + " links" +
      (D.pairs.length > 1 ? " · pair " + (state.pair + 1) + " of " + D.pairs.length : "");
    if (!phBox.hidden) phText.value = pharaoh();
    bindWords();
    highlight(state.pinned);
  }

  function highlight(sel) {
    var nodes = root.querySelectorAll(".gr-hl, .gr-dim, .gr-pinned");
    for (var i = 0; i < nodes.length; i++) nodes[i].classList.remove("gr-hl", "gr-dim", "gr-pinned");
    if (!sel) { scores.textContent = "Hover or click a word to see its links and scores."; return; }
    var side = sel.side, idx = sel.i, other = side === "src" ? "tgt" : "src";
    var p = D.pairs[state.pair], m = matrix();
    if (idx >= (side === "src" ? p.src.length : p.tgt.length)) return;
    var mine = links.filter(function (l) { return side === "src" ? l[0] === idx : l[1] === idx; });
    var partners = mine.map(function (l) { return side === "src" ? l[1] : l[0]; });
    root.querySelectorAll("line.gr-link").forEach(function (line) {
      var s = +line.getAttribute("data-s"), t = +line.getAttribute("data-t");
      var hit = side === "src" ? s === idx : t === idx;
      line.classList.add(hit ? "gr-hl" : "gr-dim");
    });
    root.querySelectorAll('[data-side="' + side + '"][data-i="' + idx + '"]').forEach(function (n) {
      n.classList.add("gr-hl"); if (state.pinned) n.classList.add("gr-pinned");
    });
    partners.forEach(function (j) {
      root.querySelectorAll('[data-side="' + other + '"][data-i="' + j + '"]').forEach(function (n) { n.classList.add("gr-hl"); });
    });
    root.querySelectorAll("td[data-s]").forEach(function (td) {
      var s = +td.getAttribute("data-s"), t = +td.getAttribute("data-t");
      if (side === "src" ? s === idx : t === idx) td.classList.add("gr-hl");
    });
    // scores of the hovered word against every word on the other side, best first
    var row = (side === "tgt") ? m[idx].map(function (x, j) { return [j, x]; })
                                : m.map(function (r, j) { return [j, r[idx]]; });
    row.sort(function (a, b) { return b[1] - a[1]; });
    var words = side === "tgt" ? p.src : p.tgt, word = side === "tgt" ? p.tgt[idx] : p.src[idx];
    scores.innerHTML = "";
    scores.appendChild(el("span", {}, (side === "tgt" ? "target " : "source ") + "“" + word + "”: "));
    row.slice(0, 12).forEach(function (r, k) {
      var item = partners.indexOf(r[0]) >= 0 ? el("b", {}, words[r[0]] + " " + fmt(r[1])) : el("span", {}, words[r[0]] + " " + fmt(r[1]));
      if (k) scores.appendChild(document.createTextNode(" · "));
      scores.appendChild(item);
    });
  }

  function bindWords() {
    root.querySelectorAll("[data-side][data-i]").forEach(function (n) {
      var sel = {side: n.getAttribute("data-side"), i: +n.getAttribute("data-i")};
      if (n.classList.contains("gr-word")) n.setAttribute("tabindex", "0");
      n.addEventListener("mouseenter", function () { if (!state.pinned) highlight(sel); });
      n.addEventListener("mouseleave", function () { if (!state.pinned) highlight(null); });
      n.addEventListener("focus", function () { if (!state.pinned) highlight(sel); });
      n.addEventListener("blur", function () { if (!state.pinned) highlight(null); });
      n.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); n.click(); }
      });
      n.addEventListener("click", function () {
        var same = state.pinned && state.pinned.side === sel.side && state.pinned.i === sel.i;
        state.pinned = same ? null : sel; highlight(state.pinned || sel);
      });
    });
  }

  window.addEventListener("resize", function () { render(); });
  window.groundroll = {
    links: function () { return links.map(function (l) { return l.slice(); }); },
    extract: extract, pharaoh: pharaoh, state: state,
    select: function (v) { state.variant = v; render(); }
  };
  render();
  document.body.setAttribute("data-ready", "1");
})();
