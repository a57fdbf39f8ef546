/** Number formats shared by the text table and the HTML report. */
import type { Spread } from "../stats.ts";

/** Transactions per second: whole numbers from 100 up, one decimal below; "-" when unknown. */
export function fmtTps(x: number): string {
  if (!Number.isFinite(x)) return "-";
  return x >= 100 ? Math.round(x).toString() : x.toFixed(1);
}

/** Milliseconds with two decimals below 10 ms, one below 1 s, none above; "-" when unknown. */
export function fmtMs(x: number): string {
  if (!Number.isFinite(x)) return "-";
  return x < 10 ? x.toFixed(2) : x < 1000 ? x.toFixed(1) : Math.round(x).toString();
}

/** `12345 (12001–12800)`, or just the median when there was one round. */
export function fmtSpread(s: Spread, f: (x: number) => string): string {
  if (!Number.isFinite(s.median)) return "-";
  return s.min === s.max ? f(s.median) : `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
}

/** A share as a percentage: `87 %`, with the range when rounds differ by a point or more. */
export function fmtShare(s: Spread | null): string {
  if (!s || !Number.isFinite(s.median)) return "-";
  const p = (x: number) => Math.round(x * 100).toString();
  return p(s.min) === p(s.max) ? `${p(s.median)} %` : `${p(s.median)} % (${p(s.min)}–${p(s.max)})`;
}

/** `0.83×`, or "-" without a direct target. */
export function fmtRatio(x: number | null): string {
  return x === null || !Number.isFinite(x) ? "-" : `${x.toFixed(2)}×`;
}
