/// <reference lib="dom" />
// Tenantry's browser client. It is served from an origin of its own, so every
// call it makes is cross-origin and must be allowed by TENANTRY_CORS_ORIGINS.
import { Code, ConnectError, createClient, type CallOptions, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "../../../gen/tenantry/auth/v1/auth_service_pb.js";
import { EntryService, type Entry } from "../../../gen/tenantry/backend/v1/entry_service_pb.js";

const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const authUrl = byId<HTMLInputElement>("auth-url");
const backendUrl = byId<HTMLInputElement>("backend-url");
const loginForm = byId<HTMLFormElement>("login");
const tenantIdInput = byId<HTMLInputElement>("tenant-id");
const emailInput = byId<HTMLInputElement>("email");
const passwordInput = byId<HTMLInputElement>("password");
const status = byId<HTMLParagraphElement>("status");
const errorBox = byId<HTMLParagraphElement>("error");
const entryForm = byId<HTMLFormElement>("create-entry");
const entryFields = entryForm.querySelector("fieldset")!;
const titleInput = byId<HTMLInputElement>("title");
const bodyInput = byId<HTMLTextAreaElement>("body");
const tagsInput = byId<HTMLInputElement>("tags");
const entryList = byId<HTMLUListElement>("entries");

// Without a query string, the API is where `npm start` puts it, on this page's host.
const query = new URLSearchParams(location.search);
authUrl.value = query.get("auth") ?? `${location.protocol}//${location.hostname}:8082`;
backendUrl.value = query.get("backend") ?? `${location.protocol}//${location.hostname}:8083`;

let session: { tenantId: string; accessToken: string } | undefined;

function transport(baseUrl: string): Transport {
  const protocol = document.querySelector<HTMLInputElement>('input[name="protocol"]:checked')?.value;
  return protocol === "grpc-web" ? createGrpcWebTransport({ baseUrl }) : createConnectTransport({ baseUrl });
}

function entryClient() {
  if (session === undefined) {
    throw new Error("log in first");
  }
  const options: CallOptions = { headers: { "x-tenant-id": session.tenantId, authorization: `Bearer ${session.accessToken}` } };
  return { client: createClient(EntryService, transport(backendUrl.value)), options };
}

/** Shows a failed call as the Connect protocol names its code, e.g. `not_found: tenant "x" not found`. */
function describeError(error: unknown): string {
  const e = ConnectError.from(error);
  const code = Code[e.code].replace(/[A-Z]/g, (c, at: number) => (at === 0 ? "" : "_") + c.toLowerCase());
  // fetch hides why it failed: a service that is down and one that refuses this origin look the same.
  const hint = e.cause instanceof TypeError ? ` (is the service running, and does its TENANTRY_CORS_ORIGINS allow ${location.origin}?)` : "";
  return `${code}: ${e.rawMessage}${hint}`;
}

function submit(form: HTMLFormElement, action: () => Promise<void>) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void run(action);
  });
}

async function run(action: () => Promise<void>) {
  errorBox.hidden = true;
  errorBox.textContent = "";
  try {
    await action();
  } catch (error) {
    errorBox.textContent = describeError(error);
    errorBox.hidden = false;
  }
}

function render(entries: Entry[]) {
  entryList.replaceChildren(
    ...entries.map((entry) => {
      const item = document.createElement("li");
      const title = document.createElement("strong");
      title.className = "title";
      title.textContent = entry.title;
      item.append(title);
      if (entry.body !== "") {
        item.append(document.createElement("br"), entry.body);
      }
      if (entry.tags.length > 0) {
        const tags = document.createElement("div");
        tags.className = "tags";
        tags.textContent = entry.tags.map((tag) => `#${tag}`).join(" ");
        item.append(tags);
      }
      return item;
    }),
  );
}

async function listEntries() {
  const { client, options } = entryClient();
  render((await client.listEntries({}, options)).entries);
}

submit(loginForm, async () => {
  session = undefined;
  entryFields.disabled = true;
  render([]);
  status.textContent = "Not logged in.";
  const tenantId = tenantIdInput.value.trim();
  const auth = createClient(AuthService, transport(authUrl.value));
  const { accessToken } = await auth.login(
    { email: emailInput.value, password: passwordInput.value },
    { headers: { "x-tenant-id": tenantId } },
  );
  session = { tenantId, accessToken };
  passwordInput.value = "";
  status.textContent = `Logged in to ${tenantId} as ${emailInput.value}.`;
  entryFields.disabled = false;
  await listEntries();
});

submit(entryForm, async () => {
  const { client, options } = entryClient();
  const tags = tagsInput.value.split(",").map((tag) => tag.trim()).filter((tag) => tag !== "");
  await client.createEntry({ title: titleInput.value, body: bodyInput.value, tags }, options);
  titleInput.value = bodyInput.value = tagsInput.value = "";
  await listEntries();
});

byId<HTMLButtonElement>("refresh").addEventListener("click", () => void run(listEntries));
