// Charts, drawn by uPlot (vendored from the npm registry under static/vendor/uplot/).
// A chart keeps its data arrays and redraws only when a point actually changed; its
// element has a fixed height in the CSS, so drawing it shifts nothing.

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { integer } from "./format.js";

const LEGEND_PX = 34;
const COLOURS = ["#2f6b4f", "#c0792b", "#3b6fb6", "#8e44ad", "#1d2621"];

function sameData(a, b) {
  if (!a || a.length !== b.length) return false;
  return a.every((series, i) => series.length === b[i].length
    && series.every((value, j) => value === b[i][j]));
}

export class Chart {
  /**
   * series: [{label, colour?, dash?, width?}]; xLabels(i) for category axes (bars);
   * band: [upperIndex, lowerIndex] (1-based series) to shade between two series.
   */
  constructor(element, { series, bars = false, xLabels = null, band = null, xYears = false }) {
    this.element = element;
    this.data = null;
    this.plot = null;
    this.options = {
      width: Math.max(300, element.clientWidth || 600),
      // The legend sits under the plot, inside the element's fixed height.
      height: (element.clientHeight || 260) - (series.length > 1 ? LEGEND_PX : 0),
      legend: { show: series.length > 1, live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false } },
      series: [
        { label: xYears ? "Year" : "" },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.colour || COLOURS[i % COLOURS.length],
          width: s.width || 2,
          dash: s.dash,
          fill: bars ? `${s.colour || COLOURS[i % COLOURS.length]}cc` : undefined,
          paths: bars ? uPlot.paths.bars({ size: [0.7, 60] }) : undefined,
          points: { show: !bars },
          value: (u, v) => integer(v),
        })),
      ],
      axes: [
        {
          values: xLabels
            ? (u, splits) => splits.map((i) => (Number.isInteger(i) ? xLabels(i) : ""))
            : (u, splits) => splits.map((v) => (Number.isInteger(v) ? String(v) : "")),
          rotate: xLabels ? -35 : 0,
          size: xLabels ? 90 : 40,
          space: xLabels ? 14 : 40,
        },
        { size: 70, values: (u, splits) => splits.map((v) => compact(v)) },
      ],
      bands: band ? [{ series: band, fill: "rgba(47, 107, 79, 0.12)" }] : [],
    };
    if (bars) this.options.scales.x.range = (u, min, max) => [min - 0.6, max + 0.6];
    new ResizeObserver(() => {
      if (this.plot) this.plot.setSize({ width: Math.max(300, element.clientWidth), height: this.options.height });
    }).observe(element);
  }

  /** Show `data` ([xs, ys1, ys2, ...]); a no-op when nothing changed. Returns whether
   * anything was redrawn. */
  update(data) {
    if (sameData(this.data, data)) return false;
    this.data = data.map((series) => [...series]);
    if (!this.plot) {
      this.plot = new uPlot(this.options, this.data, this.element);
    } else {
      this.plot.setData(this.data, true);
    }
    this.element.dataset.points = String(this.data[0].length);
    return true;
  }
}

function compact(value) {
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${(value / 1e9).toFixed(1)} Gt`;
  if (abs >= 1e6) return `${(value / 1e6).toFixed(1)} Mt`;
  if (abs >= 1e3) return `${(value / 1e3).toFixed(0)} kt`;
  return `${Math.round(value)} t`;
}
