/** Number formats and plain-text tables shared by the benchmarks' printouts. */

export const int = (x: number): string => Math.round(x).toLocaleString('en-US');
export const fixed = (x: number, d: number): string => (Number.isFinite(x) ? x.toFixed(d) : '—');
/** A ratio as `0.73×`. */
export const ratio = (x: number): string => (Number.isFinite(x) ? `${x.toFixed(2)}×` : '—');

/** One row: the first `leftCols` cells left-aligned (names), the rest right-aligned (numbers). */
export function line(cells: readonly string[], widths: readonly number[], leftCols: number): string {
  return cells.map((c, i) => (i < leftCols ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ').trimEnd();
}

/** A header, a rule and the rows, each column as wide as its widest cell (at least `minWidths`). */
export function table(header: readonly string[], rows: readonly (readonly string[])[], leftCols: number, minWidths: readonly number[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, minWidths[i] ?? 0, ...rows.map((r) => (r[i] ?? '').length)));
  return [line(header, widths, leftCols), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map((r) => line(r, widths, leftCols))].join('\n');
}
