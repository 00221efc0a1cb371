/**
 * Something cannot start (the embedded PostgreSQL server, `npm start`). The
 * message names the cause; `remedy` says what to do about it.
 */
export class StartError extends Error {
  override name = "StartError";
  /** What the user can do about it. */
  readonly remedy: string;

  constructor(message: string, remedy: string) {
    super(message);
    this.remedy = remedy;
  }
}
