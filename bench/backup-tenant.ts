// The data of bench:backup's tenant: entries with titles, bodies and tags
// of word-like text, Backend's request ids with their responses, and Auth
// users with their roles, loaded straight into the tenant's database.
import { randomBytes, randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";

/** What {@link fillTenant} loads. */
export interface TenantData {
  /** Rows of backend.entries; one in four also has its create's row in backend.request_ids. */
  entries: number;
  /** Users in auth.users, each a member, signing in with the password of the user `passwordOf`. */
  users: number;
  /** The email of an existing user (the owner) whose password hash the users get. */
  passwordOf: string;
}

/** Deterministic pseudo-random numbers (mulberry32), so that every run loads the same data. */
function randomSource(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const random = randomSource(12);
const syllables = ["ka", "lo", "mi", "ten", "ar", "est", "ion", "re", "pa", "ul", "shi", "vo", "den", "tra", "qu", "el", "or", "fa", "ni", "sto"];
/** Words with a natural text's spread: a few very common, a long tail of rare ones (log-uniform ranks). */
const vocabulary = Array.from({ length: 4000 }, () => Array.from({ length: 1 + Math.floor(random() * 4) }, () => syllables[Math.floor(random() * syllables.length)]).join(""));
const word = () => vocabulary[Math.floor(Math.exp(random() * Math.log(vocabulary.length)))] ?? vocabulary[0]!;

/** `n` words of text. */
export function words(n: number): string {
  return Array.from({ length: n }, word).join(" ");
}

const tagNames = Array.from({ length: 60 }, (_, i) => `${word()}-${i}`);
const yearAgo = Date.now() - 365 * 24 * 3600 * 1000;
const timestamp = (ms: number) => new Date(ms).toISOString().replace("T", " ").replace("Z", "+00");

/** Rows of backend.entries in COPY's text format; the request ids of one in four go to `ledger`. */
function* entryRows(count: number, ledger: string[]): Generator<string> {
  const method = "/tenantry.backend.v1.EntryService/CreateEntry";
  let batch = "";
  for (let i = 0; i < count; i++) {
    const id = randomUUID();
    const title = words(3 + Math.floor(random() * 8)).slice(0, 200);
    // Bodies from a line to a few paragraphs: ~400 characters on average.
    const body = words(Math.floor(-Math.log(1 - random()) * 70) + 2);
    const tags = new Set(Array.from({ length: Math.floor(random() * 4) }, () => tagNames[Math.floor(random() * tagNames.length)]));
    const created = yearAgo + Math.floor(random() * 365 * 24 * 3600 * 1000);
    const updated = random() < 0.3 ? created + Math.floor(random() * 30 * 24 * 3600 * 1000) : created;
    batch += `${id}\t${title}\t${body}\t{${[...tags].join(",")}}\t${1 + Math.floor(random() * 3)}\t${timestamp(created)}\t${timestamp(updated)}\n`;
    if (i % 4 === 0) {
      const response = Buffer.from(`${id}${title}${body}`.slice(0, 600)).toString("hex");
      ledger.push(`${randomUUID()}\t${method}\t\\\\x${randomBytes(32).toString("hex")}\t\\\\x${response}\t${timestamp(created)}\n`);
    }
    if (batch.length > 1 << 16) {
      yield batch;
      batch = "";
    }
  }
  yield batch;
}

/** Loads `rows` into `table` with COPY FROM (text format). */
async function copyInto(client: pg.Client, table: string, rows: Iterable<string>): Promise<void> {
  await pipeline(Readable.from(rows), client.query(copyFrom(`copy ${table} from stdin`)));
}

/**
 * Loads the data into a tenant's database (`client`, a superuser's
 * connection to it), then VACUUM ANALYZE, so that what reads it next finds
 * it settled.
 */
export async function fillTenant(client: pg.Client, data: TenantData): Promise<void> {
  const ledger: string[] = [];
  await copyInto(client, "backend.entries (id, title, body, tags, version, created_at, updated_at)", entryRows(data.entries, ledger));
  await copyInto(client, "backend.request_ids (request_id, method, fingerprint, response, created_at)", ledger);
  await client.query(
    `insert into auth.users (id, email, display_name, password_hash, created_at, updated_at)
     select gen_random_uuid(), 'user' || i || '@example.com', 'User ' || i, u.password_hash, now() - i * interval '17 minutes', now() - i * interval '3 minutes'
     from generate_series(1, $1::int) i, (select password_hash from auth.users where email = $2) u`,
    [data.users, data.passwordOf],
  );
  await client.query(`insert into auth.user_roles (user_id, role_id) select u.id, r.id from auth.users u, auth.roles r where r.name = 'member' and u.email like 'user%@example.com'`);
  await client.query("vacuum analyze");
}
