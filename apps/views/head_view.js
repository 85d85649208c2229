// attnlab head view: token-to-token attention links, drawn as SVG from embedded JSON.
//
// Runs as Gradio 6 `gr.HTML(..., js_on_load=...)` code, where `element` is the component's
// root and `watch` re-runs a callback after the value re-renders; standalone pages define
// both before this file. No libraries, no network. Data (built by head_view.py) is reduced
// server-side: per layer, per head, the top-k keys of each query row, weights in thousandths.
// Idea and layout follow BertViz's head view (Vig, 2019).
(function (root, watchFn) {
  "use strict";
  const SVGNS = "http://www.w3.org/2000/svg";
  const ROW = 18;
  const HEAD = 8;

  function el(tag, attrs, parent) {
    const node = document.createElementNS(SVGNS, tag);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function html(tag, cls, parent, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function build(box) {
    const data = JSON.parse(box.getAttribute("data-attn-hv"));
    const mount = box.querySelector(".attn-hv-mount") || html("div", "attn-hv-mount", box);
    mount.replaceChildren();
    const nq = data.q.length, nk = data.k.length, kk = data.topk;
    const state = { layer: 0, heads: new Set(data.heads.map((_, i) => i)), focus: null,
                    side: "q", pinned: false };

    // Controls: layer choice, one swatch per head (click toggles, double-click solos).
    const bar = html("div", "attn-hv-bar", mount);
    if (data.layers.length > 1) {
      html("span", "attn-hv-label", bar, "layer");
      const sel = html("select", "attn-hv-layer", bar);
      data.layers.forEach((name, i) => {
        const opt = html("option", "", sel, name);
        opt.value = String(i);
      });
      sel.addEventListener("change", () => { state.layer = Number(sel.value); draw(); });
    }
    html("span", "attn-hv-label", bar, "heads");
    const swatches = data.heads.map((name, h) => {
      const sw = html("button", "attn-hv-head", bar, name);
      sw.type = "button";
      sw.style.setProperty("--c", data.colors[h]);
      sw.dataset.head = String(h);
      sw.addEventListener("click", () => {
        if (state.heads.has(h)) state.heads.delete(h); else state.heads.add(h);
        draw();
      });
      sw.addEventListener("dblclick", () => { state.heads = new Set([h]); draw(); });
      return sw;
    });
    const allBtn = html("button", "attn-hv-btn", bar, "all");
    allBtn.type = "button";
    allBtn.addEventListener("click", () => {
      state.heads = new Set(state.heads.size === data.heads.length ? [] : data.heads.map((_, i) => i));
      draw();
    });
    const info = html("div", "attn-hv-info", mount, data.note || "");

    const scroller = html("div", "attn-hv-scroll", mount);
    scroller.style.maxHeight = data.height + "px";
    const colW = data.labelWidth, gapW = 170;
    const width = 2 * colW + gapW, height = Math.max(nq, nk) * ROW + HEAD + 4;
    const svg = el("svg", { width: width, height: height, viewBox: `0 0 ${width} ${height}`,
                            class: "attn-hv-svg" }, scroller);
    const linkLayer = el("g", { class: "attn-hv-links" }, svg);
    const xq = colW, xk = colW + gapW;
    const yOf = (i) => HEAD + i * ROW + ROW / 2;

    function tokenColumn(labels, side) {
      const group = el("g", { class: "attn-hv-col" }, svg);
      return labels.map((text, i) => {
        const g = el("g", { class: "attn-hv-tok", "data-side": side, "data-i": String(i) }, group);
        const x = side === "q" ? 0 : xk + 4;
        const bg = el("rect", { x: x, y: HEAD + i * ROW + 1, width: colW - 4, height: ROW - 2,
                                rx: 3, class: "attn-hv-bg" }, g);
        bg.style.fillOpacity = "0";
        const t = el("text", { x: side === "q" ? colW - 8 : xk + 10, y: yOf(i),
                               "text-anchor": side === "q" ? "end" : "start",
                               "dominant-baseline": "central" }, g);
        t.textContent = text;
        const enter = () => { if (!state.pinned) { state.focus = i; state.side = side; draw(); } };
        g.addEventListener("mouseenter", enter);
        g.addEventListener("click", () => {
          state.pinned = !(state.pinned && state.focus === i && state.side === side);
          state.focus = i; state.side = side; draw();
        });
        return bg;
      });
    }
    const qBg = tokenColumn(data.q, "q");
    const kBg = tokenColumn(data.k, "k");
    svg.addEventListener("mouseleave", () => { if (!state.pinned) { state.focus = null; draw(); } });

    // entries(h): [query, key, weight] triples of head h in the current layer.
    function entries(h, q) {
      const base = (state.layer * data.heads.length + h) * nq * kk;
      const out = [];
      const q0 = q === undefined ? 0 : q, q1 = q === undefined ? nq : q + 1;
      for (let i = q0; i < q1; i++) {
        for (let j = 0; j < kk; j++) {
          const v = data.val[base + i * kk + j];
          if (v > 0) out.push([i, data.idx[base + i * kk + j], v / data.scale]);
        }
      }
      return out;
    }

    function draw() {
      swatches.forEach((sw, h) => sw.classList.toggle("off", !state.heads.has(h)));
      linkLayer.replaceChildren();
      qBg.forEach((r) => { r.style.fillOpacity = "0"; });
      kBg.forEach((r) => { r.style.fillOpacity = "0"; });
      const heads = [...state.heads].sort((a, b) => a - b);
      const focused = state.focus !== null;
      const total = heads.length * nq * kk;
      if (!focused && total > data.maxLinks) {
        info.textContent = (data.note ? data.note + " " : "") +
          "Hover or click a token to see its links.";
        return;
      }
      const mass = new Float64Array(state.side === "q" ? nk : nq);
      for (const h of heads) {
        let list = focused && state.side === "q" ? entries(h, state.focus) : entries(h);
        if (focused && state.side === "k") list = list.filter((e) => e[1] === state.focus);
        for (const [i, j, v] of list) {
          el("line", { x1: xq, y1: yOf(i), x2: xk, y2: yOf(j), stroke: data.colors[h],
                       "stroke-opacity": Math.min(1, 0.08 + v), "stroke-width": focused ? 2.5 : 1.5 },
             linkLayer);
          if (focused) mass[state.side === "q" ? j : i] += v / heads.length;
        }
      }
      if (!focused) {
        info.textContent = (data.note ? data.note + " " : "") +
          "Hover a token (click to pin); click a head to toggle it, double-click to solo.";
        return;
      }
      const own = state.side === "q" ? qBg : kBg, other = state.side === "q" ? kBg : qBg;
      own[state.focus].style.fillOpacity = "0.35";
      let top = [];
      mass.forEach((m, j) => {
        if (m > 0) {
          other[j].style.fillOpacity = String(Math.min(0.85, 0.1 + m));
          top.push([m, j]);
        }
      });
      top.sort((a, b) => b[0] - a[0]);
      const labels = state.side === "q" ? data.k : data.q;
      const who = (state.side === "q" ? data.q : data.k)[state.focus];
      info.textContent = (state.side === "q" ? `"${who}" attends to: ` : `attending to "${who}": `) +
        top.slice(0, 6).map(([m, j]) => `${labels[j]} ${m.toFixed(2)}`).join(", ") +
        (heads.length > 1 ? ` (mean of ${heads.length} heads)` : "") +
        (state.pinned ? " [pinned]" : "");
    }
    draw();
  }

  function initAll() {
    const boxes = root.matches && root.matches(".attn-hv") ? [root]
      : Array.from(root.querySelectorAll(".attn-hv"));
    for (const box of boxes) {
      const payload = box.getAttribute("data-attn-hv");
      if (!payload || box.__attnHvPayload === payload) continue;
      box.__attnHvPayload = payload;
      try {
        build(box);
      } catch (err) {
        const mount = box.querySelector(".attn-hv-mount");
        if (mount) mount.textContent = "attention view failed: " + err;
      }
    }
  }

  initAll();
  if (typeof watchFn === "function") watchFn("value", initAll);
})(typeof element !== "undefined" ? element : document.body,
   typeof watch !== "undefined" ? watch : null);
