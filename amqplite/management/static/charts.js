/* Time-series charts in plain SVG: a time axis, a value axis with its unit, a legend. */
"use strict";

const Charts = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const W = 520, H = 200, L = 56, R = 12, T = 10, B = 28;

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceStep(span, count) {
    const raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  function formatValue(v) {
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
    if (Math.abs(v) >= 1e3) return (v / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    return String(Math.round(v * 100) / 100);
  }

  function formatTime(ms, span) {
    const d = new Date(ms), p = (n) => String(n).padStart(2, "0");
    const hm = p(d.getHours()) + ":" + p(d.getMinutes());
    return span > 3600e3 ? hm : hm + ":" + p(d.getSeconds());
  }

  /* History: samples {t: ms, values: {series: number}} kept for the longest range. */
  class History {
    constructor(keepMs) { this.keepMs = keepMs || 3600e3; this.samples = []; }
    add(values, t) {
      const now = t || Date.now();
      this.samples.push({ t: now, values });
      while (this.samples.length && this.samples[0].t < now - this.keepMs) this.samples.shift();
    }
  }

  /* Render into `box`: spec {id, title, unit, series: [{key, label, color}]}. */
  function render(box, spec, history, rangeMs) {
    const now = Date.now(), from = now - rangeMs;
    const shown = history.samples.filter((s) => s.t >= from);
    let max = 0;
    for (const s of shown) for (const line of spec.series) max = Math.max(max, s.values[line.key] || 0);
    const step = niceStep(max > 0 ? max : 1, 4), top = step * Math.ceil((max > 0 ? max : 1) / step);
    const x = (t) => L + ((t - from) / rangeMs) * (W - L - R);
    const y = (v) => H - B - (v / top) * (H - T - B);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
    svg.appendChild(el("text", { x: 4, y: T + 4, "text-anchor": "start" }, spec.unit));
    for (let v = 0; v <= top + step / 2; v += step) {
      svg.appendChild(el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e7ec" }));
      svg.appendChild(el("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, formatValue(v)));
    }
    const tstep = niceStep(rangeMs / 1000, 5) * 1000;
    for (let t = Math.ceil(from / tstep) * tstep; t <= now; t += tstep) {
      svg.appendChild(el("line", { x1: x(t), x2: x(t), y1: T, y2: H - B, stroke: "#eef1f4" }));
      svg.appendChild(el("text", { x: x(t), y: H - B + 14, "text-anchor": "middle" },
        formatTime(t, rangeMs)));
    }
    svg.appendChild(el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#9aa3ad" }));
    svg.appendChild(el("line", { x1: L, x2: L, y1: T, y2: H - B, stroke: "#9aa3ad" }));
    svg.appendChild(el("text", { x: W - R, y: H - 2, "text-anchor": "end" }, "time"));
    for (const line of spec.series) {
      const pts = shown.map((s) => `${x(s.t).toFixed(1)},${y(s.values[line.key] || 0).toFixed(1)}`);
      svg.appendChild(el("polyline", { points: pts.join(" "), fill: "none", stroke: line.color,
        "stroke-width": 2, "data-series": line.key }));
    }
    const last = shown.length ? shown[shown.length - 1].values : {};
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const line of spec.series) {
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${line.color}"></i>`;
      item.append(`${line.label}: ${formatValue(last[line.key] || 0)} ${spec.unit}`);
      legend.appendChild(item);
    }
    box.replaceChildren();
    const heading = document.createElement("h3");
    heading.textContent = spec.title;
    box.className = "chart";
    box.dataset.chart = spec.id;
    box.dataset.samples = String(shown.length);
    box.dataset.max = String(max);
    box.append(heading, svg, legend);
  }

  return { History, render, formatValue };
})();
