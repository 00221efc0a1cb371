import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { registry } from "../../registry.ts";

const services = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * Statements that change whom a connection acts as or where its names
 * resolve. The mesh alone sets them (see ConnectionBudget): in a pool
 * database, service SQL that ran one could act as a neighbouring tenant.
 */
const sessionChange = /\b(?:set|reset)\s+(?:local\s+|session\s+)?(?:role|search_path|session\s+authorization)\b|\bset_config\s*\(|\bdiscard\s+all\b/i;

async function sourcesUnder(folder: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(folder, { withFileTypes: true, recursive: true })) {
    const file = path.join(entry.parentPath, entry.name);
    if (entry.isFile() && /\.ts(\.tmpl)?$/.test(entry.name) && !/\.spec\.ts(\.tmpl)?$/.test(entry.name)) {
      files.push(file);
    }
  }
  return files;
}

describe("tenant services' SQL", () => {
  it("is searched for every way of changing the session", () => {
    for (const sql of ["SET ROLE tenant_b", "set local role x", "reset role", "set search_path to t_b_backend", "SET SESSION search_path = x", "select set_config('role', 'x', false)", "DISCARD ALL", "set session authorization x"]) {
      expect(sessionChange.test(sql), sql).toBe(true);
    }
    expect(sessionChange.test("select title from entries where role_id = ?")).toBe(false);
  });

  it("never changes its connection's role or search_path, nor discards its session: only the mesh does", async () => {
    const folders = registry.filter((s) => s.schema !== undefined).map((s) => path.join(services, s.name));
    folders.push(path.join(services, "cli/new-service/templates"));
    const offending: string[] = [];
    for (const folder of folders) {
      for (const file of await sourcesUnder(folder)) {
        const text = await readFile(file, "utf8");
        text.split("\n").forEach((line, i) => {
          if (sessionChange.test(line)) {
            offending.push(`${path.relative(services, file)}:${i + 1}: ${line.trim()}`);
          }
        });
      }
    }
    expect(folders.length).toBeGreaterThan(2);
    expect(offending).toEqual([]);
  });
});
