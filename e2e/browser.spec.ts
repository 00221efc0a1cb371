import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { chromium, type BrowserContext, type Locator, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildWebClient } from "../services/backend/web/build.ts";
import { startWebServer, type WebServer } from "../services/backend/web/web-server.ts";
import { freePort } from "../services/testing/free-port.ts";
import { startTestMesh, type TestMesh } from "../services/testing/test-mesh.ts";

let mesh: TestMesh;
let browser: BrowserContext;
let site: WebServer;
let foreignSite: WebServer;
const scratch: string[] = [];
const email = "owner@example.com";
const password = "correct horse battery";

beforeAll(async () => {
  const bundleDir = await mkdtemp(path.join(os.tmpdir(), "tenantry-web-"));
  const profileDir = await mkdtemp(path.join(os.tmpdir(), "tenantry-chromium-"));
  scratch.push(bundleDir, profileDir);
  const sitePort = await freePort();
  const [meshStarted] = await Promise.all([
    startTestMesh({ tenantServiceEnv: { TENANTRY_CORS_ORIGINS: `http://127.0.0.1:${sitePort}` } }),
    buildWebClient(bundleDir),
  ]);
  mesh = meshStarted;
  site = await startWebServer({ dir: bundleDir, host: "127.0.0.1", port: sitePort });
  foreignSite = await startWebServer({ dir: bundleDir, host: "127.0.0.1", port: 0 });
  browser = await chromium.launchPersistentContext(profileDir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  browser.setDefaultTimeout(30_000);
});
afterAll(async () => {
  await browser?.close();
  await Promise.all([site?.close(), foreignSite?.close(), mesh?.stop()]);
  await Promise.all(scratch.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function tenantWithOwner() {
  const tenantId = mesh.uniqueTenantId("web");
  return mesh.createTenant({ tenantId, owner: { email, password } });
}

/** The page as served by `from`, pointed at this mesh's HTTP ports by its query string. */
async function openPage(from: WebServer): Promise<Page> {
  const page = await browser.newPage();
  const api = new URLSearchParams({ auth: `http://127.0.0.1:${mesh.auth.httpPort}`, backend: `http://127.0.0.1:${mesh.backend.httpPort}` });
  await page.goto(`${from.origin}/?${api}`);
  return page;
}

async function logIn(page: Page, protocol: string, tenantId: string) {
  await page.getByLabel(protocol).check();
  await page.getByLabel("Tenant").fill(tenantId);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
}

/** Waits until `shown` appears; if the page shows an error instead, fails with it. */
async function expectShown(page: Page, shown: Locator) {
  const error = page.locator("#error");
  await shown.or(error.filter({ visible: true })).first().waitFor();
  expect((await error.isVisible()) ? await error.textContent() : "").toBe("");
}

async function shownError(page: Page): Promise<string> {
  const error = page.locator("#error");
  await error.waitFor();
  return (await error.textContent()) ?? "";
}

describe.each(["Connect", "gRPC-Web"])("the browser client over %s", (protocol) => {
  it("logs in, creates an entry in the tenant's database and lists it", async () => {
    const tenant = await tenantWithOwner();
    const page = await openPage(site);
    try {
      await logIn(page, protocol, tenant.tenantId);
      await expectShown(page, page.getByText(`Logged in to ${tenant.tenantId} as ${email}.`));
      await page.getByLabel("Title").fill("from the browser");
      await page.getByLabel("Body").fill(`written over ${protocol}`);
      await page.getByLabel("Tags").fill("web, demo");
      await page.getByRole("button", { name: "Create" }).click();
      const item = page.locator("#entries li");
      await expectShown(page, item.filter({ hasText: "from the browser" }));
      expect(await item.allInnerTexts()).toEqual([`from the browser\nwritten over ${protocol}\n#web #demo`]);
      const rows = await mesh.sql(tenant.database, "select title, body, tags from backend.entries");
      expect(rows).toEqual([{ title: "from the browser", body: `written over ${protocol}`, tags: ["web", "demo"] }]);
    } finally {
      await page.close();
    }
  });

  it("shows an unknown tenant's login as not_found with the server's message", async () => {
    const tenantId = mesh.uniqueTenantId("nope");
    const page = await openPage(site);
    try {
      await logIn(page, protocol, tenantId);
      expect(await shownError(page)).toBe(`not_found: tenant "${tenantId}" not found`);
      expect(await page.locator("#status").textContent()).toBe("Not logged in.");
    } finally {
      await page.close();
    }
  });
});

describe("the browser client on an origin the API does not allow", () => {
  it("shows the refused call as an error, and nothing is written", async () => {
    const tenant = await tenantWithOwner();
    const page = await openPage(foreignSite);
    const consoleErrors: string[] = [];
    page.on("console", (message) => consoleErrors.push(message.text()));
    try {
      await logIn(page, "Connect", tenant.tenantId);
      expect(await shownError(page)).toBe(
        `unknown: Failed to fetch (is the service running, and does its TENANTRY_CORS_ORIGINS allow ${foreignSite.origin}?)`,
      );
      expect(consoleErrors.join("\n")).toContain(`from origin '${foreignSite.origin}' has been blocked by CORS policy`);
      expect(await page.getByRole("button", { name: "Create" }).isDisabled()).toBe(true);
      expect(await mesh.sql(tenant.database, "select count(*)::int as n from auth.refresh_tokens")).toEqual([{ n: 0 }]);
      expect(await mesh.sql(tenant.database, "select count(*)::int as n from backend.entries")).toEqual([{ n: 0 }]);
    } finally {
      await page.close();
    }
  });
});
