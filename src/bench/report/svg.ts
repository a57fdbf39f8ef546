/**
 * The report's two charts as inline SVG, drawn here rather than by a chart library: the report stays one
 * self-contained file that needs no network and no script, and the compiled binary carries no extra bundle.
 * Every mark carries a `<title>` (the browser's tooltip) and data attributes naming its series.
 */

export const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

/** Text for SVG/HTML content and attribute values. */
export function esc(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;");
}

const W = 720;
const H = 300;
const M = { top: 30, right: 16, bottom: 44, left: 64 };
const PW = W - M.left - M.right;
const PH = H - M.top - M.bottom;

/** About five round steps (1, 2, 2.5, 5 × 10^k) from 0 up to at least `max`. */
export function niceTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / 5;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * pow).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = 0; v < max + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function fmtTick(v: number): string {
  if (v === 0) return "0";
  if (v >= 1000) return `${Number((v / 1000).toPrecision(3))}k`;
  return Number(v.toPrecision(3)).toString();
}

function frame(title: string, body: string[], xLabel: string, yLabel: string, legend: string[]): string {
  const legendItems = legend.map(
    (name, i) =>
      `<g class="legend-item" transform="translate(${M.left + i * 120},8)"><rect width="10" height="10" fill="${PALETTE[i % PALETTE.length]}"/><text x="14" y="9" font-size="11">${esc(name)}</text></g>`,
  );
  return [
    `<svg class="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">`,
    `<title>${esc(title)}</title>`,
    `<rect x="${M.left}" y="${M.top}" width="${PW}" height="${PH}" fill="#fff" stroke="#d4d4d8"/>`,
    ...body,
    `<text x="${M.left + PW / 2}" y="${H - 8}" text-anchor="middle" font-size="12">${esc(xLabel)}</text>`,
    `<text transform="translate(14,${M.top + PH / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(yLabel)}</text>`,
    ...legendItems,
    "</svg>",
  ].join("\n");
}

function yAxis(ticks: number[], top: number, fmt: (v: number) => string): string[] {
  return ticks.map((v) => {
    const y = M.top + PH - (v / top) * PH;
    return `<g class="tick"><line x1="${M.left}" x2="${M.left + PW}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#f4f4f5"/><text x="${M.left - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end" font-size="11">${fmt(v)}</text></g>`;
  });
}

/** One latency distribution: `[lower ms, upper ms, count]` bins (log-spaced). */
export interface LatencySeries {
  name: string;
  bins: readonly (readonly [number, number, number])[];
}

/**
 * Latency distribution per target: the share of transactions in each log-spaced latency bin, one line per target,
 * on a logarithmic latency axis.
 */
export function latencyChart(title: string, series: readonly LatencySeries[]): string {
  const all = series.flatMap((s) => s.bins);
  if (all.length === 0) return frame(title, [`<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no transactions</text>`], "latency (ms, log scale)", "% of transactions", []);
  const lo = Math.log10(Math.min(...all.map((b) => b[0])));
  const hi = Math.log10(Math.max(...all.map((b) => b[1])));
  const x = (ms: number) => M.left + ((Math.log10(ms) - lo) / (hi - lo || 1)) * PW;
  const shares = series.map((s) => {
    const total = s.bins.reduce((n, b) => n + b[2], 0);
    return s.bins.map((b) => ({ lo: b[0], hi: b[1], count: b[2], pct: total > 0 ? (b[2] / total) * 100 : 0 }));
  });
  const yTicks = niceTicks(Math.max(...shares.flat().map((p) => p.pct)));
  const top = yTicks[yTicks.length - 1]!;
  const y = (pct: number) => M.top + PH - (pct / top) * PH;
  const body = yAxis(yTicks, top, fmtTick);
  for (let d = Math.ceil(lo); d <= Math.floor(hi); d++) {
    const px = x(10 ** d).toFixed(1);
    body.push(
      `<g class="tick"><line x1="${px}" x2="${px}" y1="${M.top}" y2="${M.top + PH}" stroke="#f4f4f5"/><text x="${px}" y="${M.top + PH + 16}" text-anchor="middle" font-size="11">${fmtTick(10 ** d)}</text></g>`,
    );
  }
  shares.forEach((points, i) => {
    const color = PALETTE[i % PALETTE.length];
    const name = esc(series[i]!.name);
    const xy = points.map((p) => [x(Math.sqrt(p.lo * p.hi)), y(p.pct)] as const);
    body.push(
      `<polyline class="series" data-target="${name}" fill="none" stroke="${color}" stroke-width="2" points="${xy.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ")}"/>`,
    );
    points.forEach((p, j) => {
      body.push(
        `<circle class="point" data-target="${name}" cx="${xy[j]![0].toFixed(1)}" cy="${xy[j]![1].toFixed(1)}" r="2.5" fill="${color}"><title>${name}: ${p.count} transactions (${p.pct.toFixed(2)} %) at ${fmtTick(p.lo)}–${fmtTick(p.hi)} ms</title></circle>`,
      );
    });
  });
  return frame(title, body, "latency (ms, log scale)", "% of transactions", series.map((s) => s.name));
}

/** Throughput of each round, one bar per target, grouped by round. */
export function tpsChart(title: string, series: readonly { name: string; tps: readonly number[] }[]): string {
  const rounds = Math.max(0, ...series.map((s) => s.tps.length));
  const ticks = niceTicks(Math.max(0, ...series.flatMap((s) => s.tps.filter(Number.isFinite))));
  const top = ticks[ticks.length - 1]!;
  const body = yAxis(ticks, top, fmtTick);
  const group = PW / Math.max(1, rounds);
  const bar = (group * 0.8) / Math.max(1, series.length);
  for (let r = 0; r < rounds; r++) {
    body.push(`<text x="${(M.left + group * (r + 0.5)).toFixed(1)}" y="${M.top + PH + 16}" text-anchor="middle" font-size="11">round ${r + 1}</text>`);
    series.forEach((s, i) => {
      const v = s.tps[r];
      if (v === undefined || !Number.isFinite(v)) return;
      const h = (v / top) * PH;
      const bx = M.left + group * r + group * 0.1 + bar * i;
      const name = esc(s.name);
      body.push(
        `<rect class="bar" data-target="${name}" data-round="${r + 1}" x="${bx.toFixed(1)}" y="${(M.top + PH - h).toFixed(1)}" width="${(bar * 0.9).toFixed(1)}" height="${h.toFixed(1)}" fill="${PALETTE[i % PALETTE.length]}"><title>${name}, round ${r + 1}: ${Math.round(v)} tps</title></rect>`,
      );
    });
  }
  return frame(title, body, "round (targets interleaved within each round)", "transactions per second", series.map((s) => s.name));
}
