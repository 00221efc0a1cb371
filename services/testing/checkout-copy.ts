import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, link, mkdir, readdir } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));

/**
 * Copies entries of this checkout (files or folders, from the repository
 * root) to `dir` and links its installed packages there file by file: as
 * fast as a copy can be, and at a path of their own, so that what is inside
 * `dir` is out of other users' reach.
 */
export async function copyCheckout(dir: string, entries: readonly string[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const entry of entries) {
    await cp(path.join(root, entry), path.join(dir, entry), { recursive: true });
  }
  await linkTree(path.join(root, "node_modules"), path.join(dir, "node_modules"));
}

/**
 * The whole checkout at `dir` as it is now, changes not committed included
 * (every file git tracks or would track), made a git repository of one
 * commit on branch main: `git status` there then shows what was done to it
 * since, and npm run check judges contracts against that commit.
 */
export async function copyWholeCheckout(dir: string): Promise<void> {
  const files = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "-z"], { cwd: root, encoding: "utf8" })
    .split("\0")
    .filter((file) => file !== "" && !file.startsWith("node_modules/"));
  // A file deleted but not yet committed is listed, and not copied.
  await copyCheckout(dir, files.filter((file) => existsSync(path.join(root, file))));
  const git = (...args: string[]) =>
    execFileSync("git", args, {
      cwd: dir,
      env: { ...process.env, GIT_AUTHOR_NAME: "Tenantry", GIT_AUTHOR_EMAIL: "tenantry@example.com", GIT_COMMITTER_NAME: "Tenantry", GIT_COMMITTER_EMAIL: "tenantry@example.com" },
      stdio: "ignore",
    });
  git("init", "--quiet", "--initial-branch=main");
  git("add", "--all");
  git("commit", "--quiet", "--no-verify", "--message=the checkout as copied");
}

async function linkTree(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) {
      await linkTree(source, target);
    } else if (entry.isSymbolicLink()) {
      await cp(source, target, { verbatimSymlinks: true });
    } else {
      await link(source, target).catch(() => cp(source, target));
    }
  }
}
