import { Migration } from "@mikro-orm/migrations";

/**
 * Users, roles, permissions, refresh tokens and signing keys of the tenant.
 * The permissions themselves are the services' declarations, merged into
 * the catalog by BootstrapTenant and Migrate (see permission-catalog.ts).
 */
export class CreateIdentity extends Migration {
  override up(): void {
    this.addSql(`create table users (
      id uuid primary key,
      email varchar(320) not null,
      display_name varchar(200) not null default '',
      password_hash text not null,
      created_at timestamptz(3) not null default now(),
      updated_at timestamptz(3) not null default now()
    )`);
    this.addSql(`create unique index users_email on users (lower(email))`);
    this.addSql(`create table permissions (
      name varchar(100) primary key,
      description text not null
    )`);
    this.addSql(`create table roles (
      id uuid primary key,
      name varchar(60) not null unique,
      description text not null default '',
      builtin boolean not null default false,
      created_at timestamptz(3) not null default now()
    )`);
    this.addSql(`create table role_permissions (
      role_id uuid not null references roles (id) on delete cascade,
      permission varchar(100) not null references permissions (name),
      primary key (role_id, permission)
    )`);
    this.addSql(`create table user_roles (
      user_id uuid not null references users (id) on delete cascade,
      role_id uuid not null references roles (id) on delete cascade,
      primary key (user_id, role_id)
    )`);
    this.addSql(`create table refresh_tokens (
      id uuid primary key,
      family uuid not null,
      user_id uuid not null references users (id) on delete cascade,
      token_hash bytea not null unique,
      expires_at timestamptz(3) not null,
      created_at timestamptz(3) not null default now(),
      used_at timestamptz(3),
      revoked_at timestamptz(3)
    )`);
    this.addSql(`create index refresh_tokens_family on refresh_tokens (family)`);
    this.addSql(`create table signing_keys (
      kid varchar(40) primary key,
      public_jwk jsonb not null,
      private_key bytea not null,
      created_at timestamptz(3) not null default now(),
      retired_at timestamptz(3)
    )`);
  }
}
