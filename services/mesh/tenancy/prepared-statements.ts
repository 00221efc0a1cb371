import type pg from "pg";

/** Statements a connection prepares at most; further texts run unprepared. */
const maxStatementsPerConnection = 100;

/** SQLSTATE of "cached plan must not change result type": a statement prepared before its table changed. */
const featureNotSupported = "0A000";

/**
 * Runs a connection's parameterized queries (text with `$1`… and values,
 * as Kysely sends them) as prepared statements of that connection: the
 * first run of a text parses and plans it, later runs on the same
 * connection bind and execute it, which costs PostgreSQL about a third of
 * the CPU for a small read. Queries without values (MikroORM's, which
 * inlines them) run as before.
 *
 * A statement prepared before a migration changed its result's columns is
 * refused once by PostgreSQL; it is then prepared again under a new name
 * and run again (outside a transaction; inside one, the error stands and
 * the next run prepares afresh).
 */
export function prepareParameterizedQueries(client: pg.Client): void {
  const names = new Map<string, string>();
  let next = 0;
  const nameOf = (text: string, fresh: boolean): string | undefined => {
    let name = fresh ? undefined : names.get(text);
    if (name === undefined && (names.size < maxStatementsPerConnection || names.has(text))) {
      name = `tenantry_${++next}`;
      names.set(text, name);
    }
    return name;
  };
  const query = client.query.bind(client) as (config: unknown, values?: unknown, callback?: unknown) => Promise<pg.QueryResult>;
  const prepared = async (text: string, values: unknown[]): Promise<pg.QueryResult> => {
    const name = nameOf(text, false);
    if (name === undefined) {
      return query(text, values);
    }
    try {
      return await query({ name, text, values });
    } catch (error) {
      if ((error as { code?: string }).code !== featureNotSupported || !/cached plan/.test((error as Error).message)) {
        throw error;
      }
      return query({ name: nameOf(text, true), text, values });
    }
  };
  client.query = ((config: unknown, values?: unknown, callback?: unknown) => {
    if (typeof config === "string" && Array.isArray(values) && values.length > 0 && callback === undefined) {
      return prepared(config, values);
    }
    return query(config, values, callback);
  }) as typeof client.query;
}
