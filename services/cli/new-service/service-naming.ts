import { InvalidArgumentError } from "commander";

/** A service name: lower-case words of letters and digits joined by hyphens, starting with a letter. */
const serviceNamePattern = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

/** An entity name: lower-case words of letters joined by hyphens. */
const entityNamePattern = /^[a-z]+(-[a-z]+)*$/;

/**
 * The longest service name: a pooled tenant's schema of the service is
 * `t_<tenant id>_` (up to 43 characters, a few more for a restore's new
 * generation) followed by it, within PostgreSQL's 63; its Kubernetes objects
 * and `tenantry-<name>` connections' application name stay well within too.
 */
const maxServiceName = 16;

/** The longest entity name (a table name within the service's schema). */
const maxEntityName = 40;

/**
 * Every name a new service's files use, derived from its name and the name
 * of its entity, as the templates' placeholders (`{{key}}`) spell them.
 */
export interface ServiceNaming {
  /** The service: folder, registry entry, schema, Kubernetes objects ("audit-log"). */
  readonly name: string;
  /** In prose ("Audit log"). */
  readonly title: string;
  /** In identifiers: `{{camel}}Env`, `start{{Pascal}}` ("auditLog", "AuditLog"). */
  readonly camel: string;
  readonly Pascal: string;
  /** The proto package's segment and the permissions' prefix ("audit_log"). */
  readonly package: string;
  /** The entity in identifiers, singular and plural ("lineItem", "LineItem", "lineItems", "LineItems"). */
  readonly entity: string;
  readonly Entity: string;
  readonly entities: string;
  readonly Entities: string;
  /** The entity in proto fields and SQL tables ("line_item", "line_items"). */
  readonly entity_snake: string;
  readonly entities_snake: string;
  /** The entity in file names ("line-item", "line-items"). */
  readonly entity_file: string;
  readonly entities_file: string;
  /** The entity in prose ("line item", "line items"). */
  readonly entity_words: string;
  readonly entities_words: string;
}

/**
 * Checks a new service's name (the command's argument): lower-case letters,
 * digits and hyphens, starting with a letter, at most 16 characters.
 */
export function checkServiceName(name: string): string {
  if (!serviceNamePattern.test(name) || name.length > maxServiceName) {
    throw new InvalidArgumentError(
      `use 1 to ${maxServiceName} lower-case letters, digits and single hyphens, starting with a letter and not ending with a hyphen, such as "billing" or "audit-log"`,
    );
  }
  return name;
}

/** Checks an entity's name (the `--entity` option): lower-case words of letters joined by hyphens, singular. */
export function checkEntityName(entity: string): string {
  if (!entityNamePattern.test(entity) || entity.length > maxEntityName) {
    throw new InvalidArgumentError(`use lower-case words of letters joined by single hyphens, singular, such as "invoice" or "line-item"`);
  }
  return entity;
}

/** Every name of a service called `name` whose entity is `entity` (see {@link ServiceNaming}). */
export function serviceNaming(name: string, entity: string): ServiceNaming {
  const words = checkServiceName(name).split("-");
  const entityWords = checkEntityName(entity).split("-");
  const pluralWords = [...entityWords.slice(0, -1), plural(entityWords.at(-1)!)];
  const capital = (word: string) => word.charAt(0).toUpperCase() + word.slice(1);
  const camel = (parts: string[]) => parts[0]! + parts.slice(1).map(capital).join("");
  const pascal = (parts: string[]) => parts.map(capital).join("");
  return {
    name,
    title: capital(words.join(" ")),
    camel: camel(words),
    Pascal: pascal(words),
    package: words.join("_"),
    entity: camel(entityWords),
    Entity: pascal(entityWords),
    entities: camel(pluralWords),
    Entities: pascal(pluralWords),
    entity_snake: entityWords.join("_"),
    entities_snake: pluralWords.join("_"),
    entity_file: entityWords.join("-"),
    entities_file: pluralWords.join("-"),
    entity_words: entityWords.join(" "),
    entities_words: pluralWords.join(" "),
  };
}

/** An English noun's regular plural; an irregular one reads oddly in the names, and is renamed by hand. */
function plural(noun: string): string {
  if (/(s|x|z|ch|sh)$/.test(noun)) {
    return `${noun}es`;
  }
  if (/[^aeiou]y$/.test(noun)) {
    return `${noun.slice(0, -1)}ies`;
  }
  return `${noun}s`;
}
