// The demo page at `/` in a real browser: Debian's Chromium driven by playwright-core.
// Starts buzzer itself (BUZZER_BINARY), then:
//   1. submits a sleep, SIGKILLs the server while the page shows progress, restarts it on the
//      same port and database, and checks that the page's EventSource reconnects by itself and
//      the operation reaches `succeeded` at 100 %, having applied exactly the server's stored
//      events for it (no event missed, none applied twice);
//   2. submits an echo, clicks Result and reads the result JSON on the page;
//   3. submits a long sleep, clicks Cancel and sees `canceled`.
// A screenshot of the page is written to a temp path, printed at the end.
//
//   BUZZER_BINARY=build/buzzer node tests/browser/demo.mjs
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  CheckFailure, Server, buzzerBinary, check, checkEqual, checkIncreasing, json, log, makeTempDir, onCleanup,
  postOperation, replay, runMain, sleep, waitFor,
} from "./lib.mjs";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"];

let page = null;
const shotDir = mkdtempSync(join(tmpdir(), "buzzer-demo-shot-"));  // kept: the screenshot is the output

async function screenshot(name) {
  if (!page) return null;
  const path = join(shotDir, name);
  await page.screenshot({ path, fullPage: true, timeout: 10000 });
  return path;
}

// The page's state for one operation row.
async function row(id) {
  return page.evaluate(id => {
    const el = document.querySelector(`[data-testid=op][data-id="${id}"]`);
    if (!el) return null;
    const q = s => el.querySelector(`[data-testid=${s}]`);
    return {
      status: el.dataset.status,
      badge: q("status").textContent,
      percent: Number(q("progress").dataset.percent),
      message: q("message").textContent,
      error: q("error").hidden ? null : q("error").textContent,
      cancelVisible: !q("cancel").hidden,
      resultVisible: !q("show-result").hidden,
      result: q("result").textContent,
    };
  }, id);
}

const pageEvents = id => page.evaluate(id => window.buzzerEvents.filter(e => e.op === id), id);
const connStates = () => page.evaluate(() => window.__connStates.slice());

async function waitStatus(id, status, timeoutMs) {
  return waitFor(`operation ${id} to show "${status}" on the page`, async () => {
    const r = await row(id);
    if (r && (r.status === status)) return r;
    if (r && ["succeeded", "failed", "canceled"].includes(r.status) && r.status !== status) {
      throw new CheckFailure(`operation ${id} ended as ${r.status} (${r.error || r.message})`);
    }
    return false;
  }, timeoutMs);
}

// Fills the form and submits it with the Submit button; returns the 202's representation.
async function submit(kind, input) {
  await page.getByTestId("kind").selectOption(kind);
  await page.getByTestId("input").fill(JSON.stringify(input));
  const [response] = await Promise.all([
    page.waitForResponse(r => r.request().method() === "POST" && new URL(r.url()).pathname === "/operations", { timeout: 10000 }),
    page.getByTestId("submit").click(),
  ]);
  check(response.status() === 202, `the page's POST /operations got ${response.status()}: ${await response.text()}`);
  const rep = await response.json();
  await waitFor(`the row of operation ${rep.id} on the page`, () => row(rep.id), 5000);
  log(`page submitted ${kind} ${JSON.stringify(input)} → ${rep.id}`);
  return rep;
}

// The events the page applied for an operation must be exactly the server's stored ones.
async function checkEventsMatchServer(base, id, what) {
  const applied = await pageEvents(id);
  const ids = applied.map(e => e.id);
  checkIncreasing(ids, `${what}: window.buzzerEvents ids`);
  const stored = await replay(base, `/operations/${id}/status`);
  const viaEvents = await replay(base, `/events?operation=${id}&last_event_id=0`);
  checkEqual(viaEvents.events.map(e => [e.id, e.type]), stored.events.map(e => [e.id, e.type]),
    `${what}: full replay via /events vs via /operations/ID/status`);
  checkEqual(applied.map(e => [e.id, e.type]), stored.events.map(e => [e.id, e.type]),
    `${what}: events applied by the page [id, type] vs the server's stored events (none missed, none duplicated)`);
  return stored;
}

async function main() {
  const binary = buzzerBinary();
  check(existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install -y chromium; scripts/test installs it)`);
  const dir = makeTempDir("buzzer-demo-");
  const server = new Server({ binary, database: join(dir, "db") });
  const base = await server.start();

  log(`launching ${CHROMIUM}`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30000 });
  onCleanup(() => browser.close());
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(15000);
  const pageErrors = [];
  page.on("pageerror", e => { pageErrors.push(e.message); log(`page error: ${e.message}`); });
  page.on("console", m => {
    if (m.type() === "error" || m.type() === "warning") log(`console ${m.type()}: ${m.text()} (${m.location().url || "?"})`);
  });
  // Every EventSource connection attempt: its URL, the Last-Event-ID it sent, and its outcome.
  const streams = [];
  page.on("request", async req => {
    if (req.resourceType() !== "eventsource") return;
    const entry = { at: Date.now(), url: new URL(req.url()).pathname + new URL(req.url()).search, lastEventId: null, status: null, failure: null };
    streams.push(entry);
    entry.lastEventId = (await req.allHeaders().catch(() => ({})))["last-event-id"] ?? null;
  });
  page.on("response", res => {
    const e = streams.find(s => s.status === null && s.failure === null && res.request().resourceType() === "eventsource" && res.url().endsWith(s.url));
    if (e) e.status = res.status();
  });
  page.on("requestfailed", req => {
    if (req.resourceType() !== "eventsource") return;
    const e = streams.find(s => s.status === null && s.failure === null && req.url().endsWith(s.url));
    if (e) e.failure = req.failure()?.errorText ?? "failed";
  });

  // Every event each EventSource instance delivers, before the page's own de-duplication:
  // within one instance (one stream and its automatic reconnects) ids must strictly increase.
  await page.addInitScript(() => {
    const Native = window.EventSource;
    const types = ["pending", "running", "progress", "completed", "failed", "canceled", "message"];
    window.__rawStreams = [];
    window.EventSource = class extends Native {
      constructor(url, init) {
        super(url, init);
        const rec = { url: String(url), events: [] };
        window.__rawStreams.push(rec);
        for (const t of types) {
          this.addEventListener(t, ev => rec.events.push({ id: ev.lastEventId, type: t, op: (() => { try { return JSON.parse(ev.data).id; } catch { return null; } })() }));
        }
      }
    };
  });
  const nav = await page.goto(base + "/", { waitUntil: "load", timeout: 15000 });
  check(nav && nav.status() === 200, `GET / answered ${nav && nav.status()}`);
  // Record every state the connection indicator goes through.
  await page.evaluate(() => {
    const conn = document.querySelector("[data-testid=conn]");
    window.__connStates = [{ t: Date.now(), state: conn.dataset.state }];
    new MutationObserver(() => window.__connStates.push({ t: Date.now(), state: conn.dataset.state }))
      .observe(conn, { attributes: true, attributeFilter: ["data-state"] });
  });
  await waitFor("the kinds to load into the form", () => page.evaluate(
    () => [...document.querySelectorAll("[data-testid=kind] option")].map(o => o.value).includes("sleep")), 10000);

  // ---- 1. sleep across kill -9 and restart ------------------------------------------------
  const op = await submit("sleep", { seconds: 6, steps: 12 });
  check(op.max_attempts >= 2, `the test needs a sleep with at least 2 attempts to survive kill -9, got ${op.max_attempts}`);
  const moving = await waitFor("progress to advance on the page (data-percent > 0)", async () => {
    const r = await row(op.id);
    return r && r.percent > 0 ? r : false;
  }, 15000);
  const statesBefore = (await connStates()).length;
  const streamsBefore = streams.length;
  log(`page shows ${moving.percent}% (${moving.message}); SIGKILL`);
  await server.kill9();
  await waitFor(`the page to notice the lost connection (conn "reconnecting")`,
    async () => (await page.getByTestId("conn").getAttribute("data-state")) === "reconnecting", 10000);
  // EventSource reports the error after dispatching everything it had received.
  const beforeKill = await pageEvents(op.id);
  const lastBefore = beforeKill[beforeKill.length - 1].id;
  log(`events the page had before the kill: ${JSON.stringify(beforeKill.map(e => e.id))}`);
  await sleep(500);
  await server.restart();

  const done = await waitStatus(op.id, "succeeded", 45000);
  checkEqual(done.percent, 100, "the progress bar's data-percent once succeeded");
  checkEqual(done.badge, "succeeded", "the status badge");
  check(!done.cancelVisible, "the Cancel button must be hidden once succeeded");
  check(done.resultVisible, "the Result button must be visible once succeeded");
  const states = (await connStates()).slice(statesBefore).map(s => s.state);
  log(`conn states after the kill: ${states.join(" → ")}`);
  const iRe = states.indexOf("reconnecting");
  check(iRe >= 0 && states.indexOf("connected", iRe) > iRe,
    `the page's EventSource must go reconnecting → connected by itself; states after the kill: ${states.join(" → ")}`);
  check(!states.includes("disconnected"),
    `the EventSource gave up (conn "disconnected": the page's own recovery took over) instead of reconnecting by itself; states: ${states.join(" → ")}`);
  const carriers = (await page.evaluate(() => window.__rawStreams)).filter(r => r.events.some(e => e.op === op.id));
  check(carriers.length === 1,
    `one EventSource object must carry the sleep from start to end across the restart (reconnecting by itself), ${carriers.length} did: ${carriers.map(r => r.url).join(" ")}`);
  const after = streams.slice(streamsBefore);
  log(`EventSource requests after the kill: ${after.map(s => `{${s.url} Last-Event-ID ${s.lastEventId} → ${s.status ?? s.failure}}`).join(" ")}`);
  const resumed = after.find(s => s.status === 200);
  check(resumed, "no EventSource connection succeeded after the restart");
  checkEqual(resumed.lastEventId, String(lastBefore),
    "Last-Event-ID the browser sent on reconnecting (the last event id it had before the kill)");
  const stored = await checkEventsMatchServer(base, op.id, "sleep across kill -9");
  const afterKill = stored.events.filter(e => e.id > lastBefore);
  check(afterKill.some(e => e.type === "running" && e.json.attempt >= 2),
    `after kill -9 the sleep must run again as attempt 2: ${afterKill.map(e => `${e.type}/${e.json.attempt ?? ""}`).join(",")}`);
  checkEqual(stored.events[stored.events.length - 1].type, "completed", "the last stored event");
  log(`scenario 1 ok: ${stored.events.length} events, page applied exactly ${stored.events.map(e => e.id).join(",")}`);

  // ---- 2. echo, then Result ---------------------------------------------------------------
  const echoInput = { greeting: "hello from chromium", n: [1, 2, 3], nested: { ok: true, text: "ünïcode ✓" } };
  const echo = await submit("echo", echoInput);
  const echoRow = await waitStatus(echo.id, "succeeded", 15000);
  check(echoRow.resultVisible, "the Result button must be visible for a succeeded echo");
  const opRow = page.locator(`[data-testid=op][data-id="${echo.id}"]`);
  await opRow.getByTestId("show-result").click();
  const shown = await waitFor("the result JSON on the page", async () => {
    const text = await opRow.getByTestId("result").textContent();
    return text && text !== "Loading…" ? text : false;
  }, 10000);
  let parsed;
  try { parsed = JSON.parse(shown); } catch (e) { check(false, `the page's result is not JSON: ${JSON.stringify(shown)}`); }
  checkEqual(parsed, echoInput, "the echo result shown on the page");
  const fromServer = await json(`${base}/operations/${echo.id}`);
  checkEqual(fromServer.status, 200, "GET /operations/ID of the echo");
  checkEqual(fromServer.body, echoInput, "the echo result from the server");
  await checkEventsMatchServer(base, echo.id, "echo");
  log("scenario 2 ok: echo result shown on the page");

  // ---- 3. cancel a running sleep ----------------------------------------------------------
  const long = await submit("sleep", { seconds: 60, steps: 60 });
  await waitStatus(long.id, "running", 15000);
  const longRow = page.locator(`[data-testid=op][data-id="${long.id}"]`);
  await longRow.getByTestId("cancel").click();
  const canceled = await waitStatus(long.id, "canceled", 20000);
  checkEqual(canceled.badge, "canceled", "the status badge after Cancel");
  check(!canceled.cancelVisible, "the Cancel button must be hidden once canceled");
  check(!canceled.resultVisible, "the Result button must be hidden when canceled");
  const monitor = await json(`${base}/operations/${long.id}/status`);
  checkEqual([monitor.status, monitor.body && monitor.body.status], [200, "canceled"], "GET /operations/ID/status after Cancel");
  const cStored = await checkEventsMatchServer(base, long.id, "canceled sleep");
  checkEqual(cStored.events[cStored.events.length - 1].type, "canceled", "the last stored event of the canceled sleep");
  log("scenario 3 ok: canceled from the page");

  // What each EventSource received, before the page's de-duplication: no repeated id, in order.
  const raw = await page.evaluate(() => window.__rawStreams);
  for (const [i, r] of raw.entries()) {
    check(r.events.every(e => /^\d+$/.test(e.id)), `EventSource #${i} (${r.url}): an event without a decimal id: ${JSON.stringify(r.events)}`);
    checkIncreasing(r.events.map(e => Number(e.id)), `EventSource #${i} (${r.url}): ids as received`);
  }
  log(`raw EventSource streams: ${raw.map(r => `${r.events.length} events`).join(", ")}`);
  const skipped = await page.locator("#skipped").textContent();
  check(!skipped, `the page skipped duplicate events: "${skipped}"`);

  // The connection indicator settles to idle once nothing is active.
  await waitFor(`conn "idle" with no active operation`,
    async () => (await page.getByTestId("conn").getAttribute("data-state")) === "idle", 10000);
  check(pageErrors.length === 0, `uncaught errors on the page: ${pageErrors.join("; ")}`);
  const path = await screenshot("demo-final.png");
  log(`screenshot: ${path}`);
}

runMain("demo.mjs", async () => {
  try {
    await main();
  } catch (e) {
    const path = await screenshot("demo-failure.png").catch(() => null);
    if (path) log(`screenshot at failure: ${path}`);
    throw e;
  }
}, { deadlineMs: 170000 });
