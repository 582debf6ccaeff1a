"""The stylesheet and the script of `report --html`, inlined into the page (nothing is fetched).

The script draws the treemap that `html_report.py` laid out in Python: it reads the nodes from the
page's JSON (pre-order, each with its rectangle and the index past its subtree), draws the children of
the node in view, shows a tile's path, size, digest and status on hover, zooms into a repo or folder on
a click (and out through the path above the picture), and lists the node in view ncdu-style. It makes
no request of any kind.
"""

from __future__ import annotations

from .space import Status

# Each status's colour: second copies and garbage warm and loud, what is fine cool and quiet.
COLOURS = {
    Status.GARBAGE: "#8e44ad",
    Status.PRUNE: "#d63384",
    Status.FREED: "#e4572e",
    Status.LEFT: "#f39c12",
    Status.PARTIAL: "#c8b560",
    Status.SHARED: "#2e9e62",
    Status.KEPT: "#2f6db5",
    Status.METADATA: "#c9ced6",
    Status.CACHE: "#9aa0a8",
    Status.UNIQUE: "#8fb0d6",
}


def stylesheet() -> str:
    fills = "".join(f".s-{s.value}{{fill:{c};background:{c}}}" for s, c in COLOURS.items())
    highlight = "".join(f'#treemap[data-hl="{s.value}"] rect.s-{s.value}{{opacity:1}}' for s in Status)
    return (
        """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header,main{padding:12px 20px}
header{background:#1d2330;color:#f6f7f9}
header h1{font-size:20px;margin:0 0 4px}
header .where{font-size:12px;color:#b9c0cc;word-break:break-all}
h2{font-size:15px;margin:14px 0 6px}
.figures{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;min-width:260px;max-width:560px}
.card table td{padding:1px 8px 1px 0}
.card td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.card .big{font-size:22px;font-weight:600}
.waste{color:#c0392b;font-weight:600}
.legend{display:flex;flex-wrap:wrap;gap:6px;margin:10px 0}
.legend button{border:1px solid #ccd2da;background:#fff;border-radius:4px;padding:3px 8px;cursor:pointer;font:inherit}
.legend button[aria-pressed="true"]{outline:2px solid #1d2330}
.sw{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.layout{display:grid;grid-template-columns:minmax(480px,3fr) minmax(360px,2fr);gap:16px;align-items:start}
@media (max-width:1100px){.layout{grid-template-columns:1fr}}
#crumbs{margin:4px 0;font-size:13px}
#crumbs a{cursor:pointer;color:#2f6db5}
#treemap{width:100%;height:auto;background:#fff;border:1px solid #dde1e7;display:block;cursor:zoom-in}
#treemap rect{stroke:#fff;stroke-width:.4}
#treemap rect.l1{stroke-width:2}
#treemap rect.l2{stroke-width:1}
#treemap text{font-size:11px;pointer-events:none;fill:#11151c}
#treemap text.d1{font-weight:700;paint-order:stroke;stroke:#fff;stroke-width:3px}
#treemap[data-hl] rect{opacity:.15}
#tile-info{min-height:5.6em;background:#fff;border:1px solid #dde1e7;border-top:0;padding:6px 10px;font-size:12px;
word-break:break-all}
#tile-info b{font-size:13px}
table.sizes{border-collapse:collapse;width:100%;background:#fff;font-size:12.5px}
table.sizes th{text-align:left;background:#eef0f3;position:sticky;top:0}
table.sizes td,table.sizes th{padding:3px 6px;border-bottom:1px solid #eceef1;vertical-align:top}
table.sizes td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
table.sizes tr[data-i]{cursor:zoom-in}
table.sizes tr[data-i]:hover{background:#f0f4fa}
.bar{display:flex;width:120px;height:10px;background:#eef0f3;margin-top:3px}
.bar span{display:block;height:10px}
.path{color:#5c6573;font-size:11px;word-break:break-all}
.scroll{max-height:720px;overflow:auto;border:1px solid #dde1e7}
.note{color:#5c6573;font-size:12px}
"""
        + fills
        + highlight
    )


SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("space-data").textContent);
  var N = D.nodes, S = D.statuses, T = D.titles, SHORT = D.short, W = D.width, H = D.height;
  // a node: [parent, level, x, y, w, h, status, name, size, path, digest, proven, names, count, end,
  //          bytes by status of an inner node: [status, bytes, status, bytes, ...]]
  var svg = document.getElementById("treemap"), info = document.getElementById("tile-info");
  var crumbs = document.getElementById("crumbs"), inView = document.getElementById("in-view");
  var view = 0;

  function size(n) {
    if (n < 1000) return n + "B";
    var units = ["KB", "MB", "GB", "TB", "PB"], v = n, u = 0;
    for (v = n / 1000; v >= 999.95 && u < units.length - 1; u++) v /= 1000;
    return v.toFixed(1) + units[u];
  }
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c];
    });
  }
  function fullPath(i) {
    var p = N[i][9];
    if (p.charAt(0) !== "+") return p;
    var a = i;
    while (N[a][1] > 2) a = N[a][0];
    if (p === "+#") return N[a][9] + "/blobs/" + N[i][10].split(":")[1];
    return N[a][9] + "/" + p.slice(1);
  }
  function ancestorAt(i, level) {
    while (N[i][1] > level) i = N[i][0];
    return i;
  }
  function children(v) {
    var out = [], i = v + 1;
    while (i < N[v][14]) { out.push(i); i = N[i][14]; }
    return out.sort(function (a, b) { return N[b][8] - N[a][8]; });
  }

  function draw(v) {
    view = v;
    var r = N[v], sx = W / r[4], sy = H / r[5], rects = [], labels = [];
    for (var i = v + 1; i < r[14];) {
      var n = N[i], w = n[4] * sx, h = n[5] * sy;
      if (w < 0.4 || h < 0.4) { i = n[14]; continue; }  // too small to see: its parent's colour shows
      var x = (n[2] - r[2]) * sx, y = (n[3] - r[3]) * sy, depth = n[1] - r[1];
      rects.push('<rect x="' + x.toFixed(2) + '" y="' + y.toFixed(2) + '" width="' + w.toFixed(2) +
        '" height="' + h.toFixed(2) + '" class="s-' + S[n[6]] + " l" + depth + '" data-i="' + i + '"/>');
      // Labels: the children of the view at their bottom left (bold), their children at their top left.
      var deep = depth === 1 && n[14] > i + 1;
      if (depth <= 2 && w > 50 && h > (deep ? 30 : 15)) {
        var text = n[7] + (depth === 1 ? " " + size(n[8]) : ""), room = Math.floor(w / 6.4);
        if (text.length > room) text = text.slice(0, room - 1) + "\u2026";
        var ly = deep ? y + h - 5 : y + 12;
        labels.push('<text class="d' + depth + '" x="' + (x + 3).toFixed(1) + '" y="' + ly.toFixed(1) + '">' +
          esc(text) + "</text>");
      }
      i++;
    }
    svg.innerHTML = rects.join("") + labels.join("");
    svg.setAttribute("data-view", r[9] || "");
    var chain = [], a = v;
    for (;;) { chain.unshift(a); if (a === 0) break; a = N[a][0]; }
    crumbs.innerHTML = chain.map(function (c) {
      return c === v ? "<b>" + esc(N[c][7]) + "</b> (" + size(N[c][8]) + ")" :
        '<a data-i="' + c + '">' + esc(N[c][7]) + "</a>";
    }).join(" \u203a ");
    listView(v);
  }

  function parts(n) {  // [[status, bytes], ...], largest first
    var p = [], b = n[15];
    if (!b.length) return [[n[6], n[8]]];
    for (var k = 0; k < b.length; k += 2) p.push([b[k], b[k + 1]]);
    return p.sort(function (x, y) { return y[1] - x[1]; });
  }
  function listView(v) {
    var kids = children(v), top = kids.length ? N[kids[0]][8] : 0, rows = [];
    kids.slice(0, 300).forEach(function (c) {
      var n = N[c], p = parts(n);
      var bar = p.map(function (x) {
        return '<span class="s-' + S[x[0]] + '" style="width:' + (top ? 100 * x[1] / top : 0).toFixed(2) + '%"></span>';
      }).join("");
      var what = p.length === 1 ? T[p[0][0]] : p.slice(0, 3).map(function (x) {
        return SHORT[x[0]] + " " + size(x[1]);
      }).join(", ");
      rows.push('<tr data-i="' + c + '"><td class="n">' + size(n[8]) + '</td><td><div class="bar">' + bar +
        "</div></td><td>" + esc(n[7]) + "</td><td>" + esc(what) + "</td></tr>");
    });
    if (kids.length > 300) rows.push('<tr><td></td><td></td><td>' + (kids.length - 300) + " more</td><td></td></tr>");
    inView.innerHTML = rows.join("");
  }

  function show(i) {
    var n = N[i], lines = ["<b>" + esc(n[7]) + "</b>"];
    if (n[9]) lines.push(esc(fullPath(i)));
    lines.push(size(n[8]) + " (" + n[8].toLocaleString("en-US") + " bytes)" +
      (n[13] > 1 ? ", " + n[13].toLocaleString("en-US") + " files" : ""));
    if (n[15].length) {
      lines.push(parts(n).map(function (x) { return esc(T[x[0]]) + " " + size(x[1]); }).join("; "));
    } else {
      lines.push("status: " + esc(T[n[6]]) + (n[12] > 1 ? "; " + n[12] + " names (hard links) of one file" : ""));
    }
    if (n[10]) lines.push("digest: " + esc(n[10]) + (n[11] ? " (proven by its bytes)" : " (claimed by its name)"));
    info.innerHTML = lines.join("<br>");
  }

  function zoomFrom(i) {
    var target = ancestorAt(i, Math.max(N[view][1] + 1, 2));
    if (target !== view && N[target][14] > target + 1) draw(target);
  }

  svg.addEventListener("mousemove", function (e) {
    var i = e.target.getAttribute && e.target.getAttribute("data-i");
    if (i !== null && i !== undefined) show(+i);
  });
  svg.addEventListener("click", function (e) {
    var i = e.target.getAttribute && e.target.getAttribute("data-i");
    if (i !== null && i !== undefined) zoomFrom(+i);
  });
  crumbs.addEventListener("click", function (e) {
    var i = e.target.getAttribute("data-i");
    if (i !== null) draw(+i);
  });
  function rowClick(e) {
    var tr = e.target.closest ? e.target.closest("tr[data-i]") : null;
    if (!tr || e.target.closest("a")) return;
    var i = +tr.getAttribute("data-i");
    if (N[i][14] > i + 1) draw(i); else show(i);
    svg.scrollIntoView({block: "nearest"});
  }
  document.getElementById("repos").addEventListener("click", rowClick);
  inView.addEventListener("click", rowClick);
  Array.prototype.forEach.call(document.querySelectorAll(".legend button"), function (b) {
    b.addEventListener("click", function () {
      var on = b.getAttribute("aria-pressed") !== "true";
      Array.prototype.forEach.call(document.querySelectorAll(".legend button"), function (o) {
        o.setAttribute("aria-pressed", "false");
      });
      if (on) { b.setAttribute("aria-pressed", "true"); svg.setAttribute("data-hl", b.getAttribute("data-s")); }
      else svg.removeAttribute("data-hl");
    });
  });
  draw(0);
})();
"""
