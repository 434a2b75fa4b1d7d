// The listing page: patients with their studies, through Envoy over
// grpc-web, with the caller's token on every call.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { GatewayService, type PatientWithStudies } from "./gen/clinic/gateway/v1/gateway_pb";
import { BodyPart, StudyType, UrgencyLevel } from "./gen/clinic/studies/v1/studies_pb";

const TOKEN_KEY = "clinic.token";
const PAGE_SIZE = 10;

/** The token from the address (`#token=…`, kept out of history and never
 * sent to the server as part of the URL), else the one pasted earlier in
 * this tab. */
function token(): string | null {
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

const bearer: Interceptor = (next) => async (req) => {
  const current = token();
  if (current) req.header.set("authorization", `Bearer ${current}`);
  return next(req);
};

const gateway = createClient(
  GatewayService,
  createGrpcWebTransport({ baseUrl: location.origin, interceptors: [bearer] }),
);

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** Page tokens of the pages seen so far; the last is the current page's. */
let pages: string[] = [""];
let next = "";
/** The listing's filter: patients whose first or last name starts with
 * what was typed (case and accents ignored by the server). */
let filter = "";

/** `text` as a filter string literal. */
const quoted = (text: string) => `"${text.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;

function nameFilter(typed: string): string {
  const words = typed.trim().split(/\s+/).filter(Boolean);
  // Every word must start a first or last name: "jos trev" finds José Treviño.
  return words.map((w) => `(first_name = ${quoted(w + "*")} OR last_name = ${quoted(w + "*")})`).join(" AND ");
}

function subject(jwt: string): string | null {
  try {
    const payload = JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return `${payload.sub} (${(payload.roles ?? []).join(", ")})`;
  } catch {
    return null;
  }
}

function show(message: string | null, askForToken = false) {
  const box = $("message");
  box.hidden = message === null;
  box.textContent = message ?? "";
  $("token-form").hidden = !askForToken;
}

/** What a failed call means to the person looking at the page. */
function explain(error: ConnectError): { text: string; askForToken: boolean } {
  switch (error.code) {
    case Code.Unauthenticated:
      return { text: `Your token was refused (${error.rawMessage}). Paste a new one below.`, askForToken: true };
    case Code.PermissionDenied:
      return { text: "Your token does not allow viewing patients: it needs the role viewer, clinician or admin.", askForToken: true };
    case Code.Unavailable:
      return { text: `A service is down, so the list cannot be shown: ${error.rawMessage}. Try again in a moment.`, askForToken: false };
    case Code.DeadlineExceeded:
      return { text: "The system took too long to answer. Try again in a moment.", askForToken: false };
    default:
      return { text: `The list cannot be shown (${Code[error.code]}): ${error.rawMessage}`, askForToken: false };
  }
}

function cell(row: HTMLTableRowElement, text: string, className?: string) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
}

function render(entries: PatientWithStudies[]) {
  const list = $("patients");
  list.replaceChildren();
  for (const entry of entries) {
    const patient = entry.patient;
    if (!patient) continue;
    const item = document.createElement("li");
    item.className = "patient";
    item.dataset.patientId = patient.id.toString();
    const name = document.createElement("h2");
    name.textContent = `${patient.firstName} ${patient.lastName}`;
    const meta = document.createElement("p");
    meta.className = "meta";
    meta.textContent = `born ${patient.birthDate} · ${patient.email} · #${patient.id}`;
    item.append(name, meta);
    if (entry.studies.length === 0) {
      const none = document.createElement("p");
      none.className = "none";
      none.textContent = "No studies.";
      item.append(none);
    } else {
      const table = document.createElement("table");
      table.className = "studies";
      const head = table.createTHead().insertRow();
      for (const title of ["Type", "Body part", "Urgency", "Description"]) {
        const th = document.createElement("th");
        th.textContent = title;
        head.append(th);
      }
      const body = table.createTBody();
      for (const study of entry.studies) {
        const row = body.insertRow();
        row.className = "study";
        cell(row, StudyType[study.studyType]);
        cell(row, BodyPart[study.bodyPart]);
        cell(row, UrgencyLevel[study.urgencyLevel], `urgency-${UrgencyLevel[study.urgencyLevel]}`);
        cell(row, study.description, "description");
      }
      item.append(table);
      if (entry.nextStudiesPageToken) {
        const more = document.createElement("p");
        more.className = "more";
        more.textContent = "More studies than shown here.";
        item.append(more);
      }
    }
    list.append(item);
  }
  if (entries.length === 0) {
    const empty = document.createElement("li");
    empty.className = "none";
    empty.textContent = filter ? "No patients match the search." : "No patients.";
    list.append(empty);
  }
}

async function load() {
  const current = token();
  $("who").textContent = current ? `Signed in as ${subject(current) ?? "an unreadable token"}` : "";
  if (!current) {
    show("This page needs a token to show patients.", true);
    return;
  }
  document.body.setAttribute("aria-busy", "true");
  try {
    const page = await gateway.listPatientsWithStudies(
      { pageSize: PAGE_SIZE, pageToken: pages[pages.length - 1], filter },
      { timeoutMs: 15_000 },
    );
    show(null);
    render(page.patients);
    next = page.nextPageToken;
  } catch (e) {
    const { text, askForToken } = explain(ConnectError.from(e));
    show(text, askForToken);
    $("patients").replaceChildren();
    next = "";
  } finally {
    document.body.removeAttribute("aria-busy");
    $("page").textContent = `Page ${pages.length}`;
    $<HTMLButtonElement>("back").disabled = pages.length === 1;
    $<HTMLButtonElement>("next").disabled = next === "";
  }
}

$("next").addEventListener("click", () => {
  if (next) {
    pages.push(next);
    void load();
  }
});
$("back").addEventListener("click", () => {
  if (pages.length > 1) {
    pages.pop();
    void load();
  }
});
$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  filter = nameFilter($<HTMLInputElement>("search").value);
  pages = [""];
  void load();
});
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const pasted = $<HTMLTextAreaElement>("token").value.trim();
  if (pasted) {
    sessionStorage.setItem(TOKEN_KEY, pasted);
    $<HTMLTextAreaElement>("token").value = "";
    void load();
  }
});
void load();
