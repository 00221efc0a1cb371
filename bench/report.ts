// How the benchmarks print: Markdown tables, and one table per goal that
// puts each figure beside its goal and says whether it holds.

/** A Markdown table with its columns padded; `align` right-aligns the columns marked true. */
export function table(header: string[], rows: string[][], align: boolean[] = header.map((_, i) => i > 0)): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (align[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(" | ")} |`;
  return [line(header), `|${widths.map((w, i) => (align[i] ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`, ...rows.map(line)].join("\n");
}

/** One measured figure against its goal. */
export interface GoalRow {
  /** What is measured. */
  measure: string;
  figure: number;
  /** The figure as printed. */
  shown: string;
  /** The goal: the figure at least or at most this. */
  atLeast?: number;
  atMost?: number;
  /** The goal as printed, such as "≥ 0.80"; by default from `atLeast` or `atMost`. */
  goal?: string;
}

/** Whether a figure meets its goal. */
export function met(row: GoalRow): boolean {
  return (row.atLeast === undefined || row.figure >= row.atLeast) && (row.atMost === undefined || row.figure <= row.atMost);
}

/** A goal's table: each figure, its goal and whether it holds. */
export function goalTable(rows: GoalRow[]): string {
  return table(
    ["measure", "figure", "goal", "holds"],
    rows.map((r) => [r.measure, r.shown, r.goal ?? (r.atLeast !== undefined ? `≥ ${r.atLeast}` : `≤ ${r.atMost}`), met(r) ? "yes" : "NO"]),
    [false, true, true, false],
  );
}
