/**
 * The embedded PostgreSQL server could not start. The message names the
 * cause; `remedy` says what to do about it.
 */
export class EmbeddedDatabaseError extends Error {
  override name = "EmbeddedDatabaseError";
  /** What the user can do about it. */
  readonly remedy: string;

  constructor(message: string, remedy: string) {
    super(message);
    this.remedy = remedy;
  }
}
