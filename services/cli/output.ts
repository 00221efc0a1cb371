import { toJson, type DescMessage, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import Table from "cli-table3";

/** Options of {@link Output}. */
export interface OutputOptions {
  /** Machine-readable output: proto JSON on stdout, errors as JSON on stderr. */
  json: boolean;
  /** Where results go; process.stdout by default. */
  stdout?: NodeJS.WritableStream;
  /** Where progress and errors go; process.stderr by default. */
  stderr?: NodeJS.WritableStream;
}

/** A table without borders, so that its lines can be read, grepped and cut like `ps` output. */
const plain = {
  chars: {
    top: "", "top-mid": "", "top-left": "", "top-right": "",
    bottom: "", "bottom-mid": "", "bottom-left": "", "bottom-right": "",
    left: "", "left-mid": "", mid: "", "mid-mid": "", right: "", "right-mid": "",
    middle: "  ",
  },
  style: { "padding-left": 0, "padding-right": 0, head: [], border: [] },
};

/**
 * What a command prints: results on stdout, either for people (tables,
 * `key: value` lines) or, with --json, as the response messages' proto JSON;
 * progress and errors on stderr.
 */
export class Output {
  readonly json: boolean;
  readonly #stdout: NodeJS.WritableStream;
  readonly #stderr: NodeJS.WritableStream;

  constructor(options: OutputOptions) {
    this.json = options.json;
    this.#stdout = options.stdout ?? process.stdout;
    this.#stderr = options.stderr ?? process.stderr;
  }

  /** Prints a response message: its proto JSON with --json, else what `human` prints. */
  result<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>, human: () => void): void {
    if (this.json) {
      this.value(toJson(schema, message, { alwaysEmitImplicit: true }));
    } else {
      human();
    }
  }

  /** Prints a JSON value on stdout. */
  value(value: JsonValue): void {
    this.#stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** Prints `key: value` lines, aligned; empty values are left out. */
  record(fields: [string, string][]): void {
    const shown = fields.filter(([, value]) => value !== "");
    const width = Math.max(...shown.map(([key]) => key.length)) + 2;
    this.line(shown.map(([key, value]) => `${key}:`.padEnd(width) + value).join("\n"));
  }

  /** Prints a table with a header row, or `empty` when there are no rows. */
  table(head: string[], rows: string[][], empty: string): void {
    if (rows.length === 0) {
      this.line(empty);
      return;
    }
    const table = new Table({ head, ...plain });
    table.push(...rows);
    this.line(table.toString().replace(/ +$/gm, ""));
  }

  /** Prints a line on stdout. */
  line(text: string): void {
    this.#stdout.write(`${text}\n`);
  }

  /** Prints a line on stderr: progress and notes that are not the result. */
  note(text: string): void {
    this.#stderr.write(`${text}\n`);
  }

  /** Prints an error on stderr, naming its gRPC code: `error: NOT_FOUND: …`, or JSON with --json. */
  error(error: unknown): void {
    const { code, message } = describeError(error);
    if (this.json) {
      this.#stderr.write(`${JSON.stringify({ error: { code, message } })}\n`);
    } else {
      this.#stderr.write(`error: ${code}: ${message}\n`);
    }
  }
}

/** An error's gRPC code name (such as "NOT_FOUND") and message. */
export function describeError(error: unknown): { code: string; message: string } {
  const connectError = ConnectError.from(error);
  return { code: codeName(connectError.code), message: connectError.rawMessage };
}

/** The gRPC name of a code: Code.NotFound is "NOT_FOUND". */
export function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** A generated enum's value as a lower-case name: Tier.PREMIUM is "premium". */
export function enumLabel(values: Record<number, string>, value: number): string {
  return values[value]?.toLowerCase() ?? String(value);
}

/** A timestamp as ISO 8601 in UTC; empty when unset. */
export function timeLabel(time: Timestamp | undefined): string {
  return time === undefined ? "" : timestampDate(time).toISOString();
}

const byteUnits = ["kB", "MB", "GB", "TB"];

/** A size in bytes for people, in powers of 1000: "812 B", "56.3 kB", "1.2 GB". */
export function byteLabel(bytes: bigint | number): string {
  let value = Number(bytes);
  if (value < 1000) {
    return `${value} B`;
  }
  let unit = -1;
  while (value >= 1000 && unit < byteUnits.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(1)} ${byteUnits[unit]}`;
}

/** The time from one timestamp to another as seconds, such as "0.4s" or "75.0s"; empty when either is unset. */
export function durationLabel(from: Timestamp | undefined, to: Timestamp | undefined): string {
  if (from === undefined || to === undefined) {
    return "";
  }
  return `${((timestampDate(to).getTime() - timestampDate(from).getTime()) / 1000).toFixed(1)}s`;
}

/** `count` and the noun, plural unless the count is 1: "1 tenant", "3 tenants". */
export function counted(count: number, noun: string, plural = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : plural}`;
}
