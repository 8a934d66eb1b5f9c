// Shared by every report page: the embedded data, the root element, an element builder.
var GR = (function () {
  "use strict";
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in (attrs || {})) {
      if (k === "class") e.className = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }
  return {data: JSON.parse(document.getElementById("gr-data").textContent),
          root: document.getElementById("gr-root"), el: el};
})();
