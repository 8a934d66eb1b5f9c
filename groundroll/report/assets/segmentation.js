(function () {
  "use strict";
  var D = GR.data, root = GR.root, el = GR.el;
  var controls = el("div", {"class": "gr-controls"});
  var opLab = el("label", {}, "layer opacity ");
  var opacity = el("input", {type: "range", id: "gr-opacity", min: "0", max: "100", value: String(Math.round(100 * D.opacity))});
  var opVal = el("span", {"class": "gr-muted"}, opacity.value + "%");
  opLab.appendChild(opacity); opLab.appendChild(opVal); controls.appendChild(opLab);
  var allMasks = el("button", {type: "button", id: "gr-all-masks"}, "all masks");
  var allHeat = el("button", {type: "button", id: "gr-all-heatmaps"}, "all heatmaps");
  var none = el("button", {type: "button", id: "gr-none"}, "none");
  controls.appendChild(allMasks); controls.appendChild(allHeat); controls.appendChild(none);
  root.appendChild(controls);

  var wrap = el("div", {"class": "gr-seg"});
  var stage = el("div", {"class": "gr-stage", id: "gr-stage"});
  var base = el("img", {"class": "gr-base", alt: "image", src: D.image, width: D.width, height: D.height});
  stage.appendChild(base);
  var layers = [];
  function addLayer(src, attrs) {
    var img = el("img", attrs);
    img.src = src; img.className = "gr-layer"; img.alt = attrs["data-kind"] || "layer";
    img.style.display = "none";
    stage.appendChild(img); layers.push(img);
    return img;
  }
  D.prompts.forEach(function (p, k) {
    addLayer(p.heatmap, {"data-prompt": k, "data-kind": "heatmap", id: "gr-heatmap-" + k});
    addLayer(p.mask, {"data-prompt": k, "data-kind": "mask", id: "gr-mask-" + k});
  });
  var layerImg = D.layers ? addLayer(D.layers.maps[D.layers.maps.length - 1].src, {"data-kind": "layer-map", id: "gr-layer-overlay"}) : null;
  wrap.appendChild(stage);

  var side = el("div");
  var table = el("table", {"class": "gr-prompts", id: "gr-prompts"});
  var head = el("tr");
  ["prompt", "score", "area", "mask", "heatmap"].forEach(function (h) { head.appendChild(el("th", {}, h)); });
  table.appendChild(head);
  D.prompts.forEach(function (p, k) {
    var tr = el("tr", {"data-prompt": k});
    var name = el("td");
    var sw = el("span", {"class": "gr-swatch"}); sw.style.background = p.colour;
    name.appendChild(sw); name.appendChild(document.createTextNode(p.name));
    tr.appendChild(name);
    tr.appendChild(el("td", {}, p.score.toFixed(3)));
    tr.appendChild(el("td", {}, (100 * p.area).toFixed(1) + "%"));
    ["mask", "heatmap"].forEach(function (kind) {
      var td = el("td");
      var box = el("input", {type: "checkbox", "class": "gr-toggle", id: "gr-toggle-" + kind + "-" + k, "data-prompt": k, "data-kind": kind, "aria-label": kind + " " + p.name});
      box.checked = kind === "mask";
      box.addEventListener("change", apply);
      td.appendChild(box); tr.appendChild(td);
    });
    table.appendChild(tr);
  });
  side.appendChild(table);
  if (D.best !== undefined && D.prompts.length) {
    side.appendChild(el("p", {"class": "gr-muted"}, "Best image-text score: " + D.prompts[D.best].name + ". Area: share of the image in the mask."));
  }
  wrap.appendChild(side);
  root.appendChild(wrap);

  if (D.layers) {
    root.appendChild(el("h2", {}, D.layers.title));
    var lc = el("div", {"class": "gr-controls"});
    var show = el("input", {type: "checkbox", id: "gr-toggle-layer-map"});
    var sl = el("label", {}, " show on the image"); sl.insertBefore(show, sl.firstChild);
    var range = el("input", {type: "range", id: "gr-layer-select", min: "0", max: String(D.layers.maps.length - 1), value: String(D.layers.maps.length - 1)});
    var rl = el("label", {}, "layer "); rl.appendChild(range);
    var rv = el("span", {"class": "gr-muted", id: "gr-layer-name"});
    rl.appendChild(rv); lc.appendChild(rl); lc.appendChild(sl);
    root.appendChild(lc);
    var grid = el("div", {"class": "gr-layers", id: "gr-layer-grid"});
    D.layers.maps.forEach(function (m, i) {
      var fig = el("figure", {"data-layer": i});
      var img = el("img", {alt: m.name}); img.src = m.thumb;
      fig.appendChild(img); fig.appendChild(el("figcaption", {}, m.name));
      fig.addEventListener("click", function () { range.value = String(i); pick(); });
      grid.appendChild(fig);
    });
    root.appendChild(grid);
    var pick = function () {
      var i = parseInt(range.value, 10);
      layerImg.src = D.layers.maps[i].src;
      rv.textContent = " " + D.layers.maps[i].name;
      grid.querySelectorAll("figure").forEach(function (f, j) { f.classList.toggle("gr-sel", j === i); });
      apply();
    };
    range.addEventListener("input", pick);
    show.addEventListener("change", apply);
    setTimeout(pick, 0);
  }
  if (D.settings) {
    root.appendChild(el("h2", {}, "Settings"));
    root.appendChild(el("pre", {"class": "gr-json"}, JSON.stringify(D.settings, null, 2)));
  }

  function apply() {
    var op = parseInt(opacity.value, 10) / 100;
    opVal.textContent = opacity.value + "%";
    root.querySelectorAll("input.gr-toggle").forEach(function (box) {
      var img = document.getElementById("gr-" + box.getAttribute("data-kind") + "-" + box.getAttribute("data-prompt"));
      img.style.display = box.checked ? "" : "none";
      img.style.opacity = String(op);
    });
    if (layerImg) {
      var on = document.getElementById("gr-toggle-layer-map").checked;
      layerImg.style.display = on ? "" : "none";
      layerImg.style.opacity = String(op);
    }
  }
  function setAll(kind, on) {
    root.querySelectorAll("input.gr-toggle").forEach(function (box) {
      if (kind === null || box.getAttribute("data-kind") === kind) box.checked = on;
      else if (on) box.checked = false;
    });
    var lm = document.getElementById("gr-toggle-layer-map");
    if (lm && kind === null) lm.checked = false;
    apply();
  }
  opacity.addEventListener("input", apply);
  allMasks.addEventListener("click", function () { setAll("mask", true); });
  allHeat.addEventListener("click", function () { setAll("heatmap", true); });
  none.addEventListener("click", function () { setAll(null, false); });
  apply();
  window.groundroll = {visible: function () {
    return layers.filter(function (i) { return i.style.display !== "none"; }).map(function (i) { return i.id; });
  }};
  document.body.setAttribute("data-ready", "1");
})();
