// Access control in a real browser (Debian's Chromium, driven by playwright-core):
//   1. CORS: a page served from another origin (a second loopback port) submits to Buzzer
//      with fetch and an Authorization header, opens a session with credentials: "include",
//      and follows the operation with new EventSource(url, {withCredentials: true}), which
//      sends the cookie and nothing else;
//   2. the demo page with auth on: it asks for a credential once (window.prompt), opens a
//      session, and submits and follows an operation.
//
//   BUZZER_BINARY=build/buzzer node tests/browser/access.mjs
import { execFileSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { Server, buzzerBinary, check, checkEqual, log, makeTempDir, onCleanup, runMain, waitFor } from "./lib.mjs";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"];

// The app of the other origin: it is given Buzzer's base URL and a key, and reports what it saw.
const APP = `<!doctype html><meta charset="utf-8"><title>app</title><script>
window.run = async (base, key) => {
  const out = {events: []};
  const r = await fetch(base + "/operations", {method: "POST",
    headers: {Authorization: "Bearer " + key, "Content-Type": "application/json"},
    body: JSON.stringify({kind: "sleep", input: {seconds: 0.6, steps: 3}})});
  out.submit = r.status;
  out.location = r.headers.get("Location");
  const op = await r.json();
  out.id = op.id;
  const s = await fetch(base + "/session", {method: "POST", credentials: "include",
    headers: {Authorization: "Bearer " + key}});
  out.session = s.status;
  // Without the cookie's credentials flag the stream is refused: that proves the cookie counts.
  out.withoutCookie = await new Promise(resolve => {
    const es = new EventSource(base + "/operations/" + op.id + "/status");
    es.onerror = () => { es.close(); resolve("error"); };
    es.addEventListener("pending", () => { es.close(); resolve("open"); });
    es.addEventListener("running", () => { es.close(); resolve("open"); });
  });
  await new Promise((resolve, reject) => {
    const es = new EventSource(base + "/operations/" + op.id + "/status", {withCredentials: true});
    for (const t of ["pending", "running", "progress", "completed", "failed", "canceled"])
      es.addEventListener(t, ev => {
        out.events.push(t);
        if (t === "completed" || t === "failed" || t === "canceled") { es.close(); resolve(); }
      });
    es.onerror = () => { if (es.readyState === EventSource.CLOSED) reject(new Error("the stream was refused")); };
  });
  return out;
};
</script>`;

async function main() {
  const binary = buzzerBinary();
  check(existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install -y chromium; scripts/test installs it)`);
  const dir = makeTempDir("buzzer-access-");

  // The other origin: a plain page on a port of its own.
  const app = createServer((req, res) => {
    res.writeHead(200, {"Content-Type": "text/html; charset=utf-8"});
    res.end(APP);
  });
  await new Promise(resolve => app.listen(0, "127.0.0.1", resolve));
  onCleanup(() => new Promise(resolve => app.close(resolve)));
  const origin = `http://127.0.0.1:${app.address().port}`;

  const database = join(dir, "db");
  const config = join(dir, "buzzer.json");
  writeFileSync(config, JSON.stringify({auth: {}, cors: {origins: [origin], credentials: true}}));
  const made = execFileSync(binary, ["keys", "create", "--database", database, "--tenant", "acme",
    "--role", "write"], {encoding: "utf8"}).split("\n");
  const key = made[0];
  check(key.startsWith("bzk_"), `buzzer keys create printed ${made[0]}`);
  const server = new Server({ binary, database, args: ["--config", config] });
  const base = await server.start();

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30000 });
  onCleanup(() => browser.close());

  // ---- 1. CORS from another origin ---------------------------------------------------------
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("console", m => log(`app console ${m.type()}: ${m.text()}`));
    await page.goto(origin + "/", { waitUntil: "load" });
    const out = await page.evaluate(([b, k]) => window.run(b, k), [base, key]);
    log(`the app saw ${JSON.stringify(out)}`);
    checkEqual(out.submit, 202, "the cross-origin POST /operations");
    check(out.location && out.location.includes(out.id), "Location must be exposed to the app");
    checkEqual(out.session, 204, "the cross-origin POST /session");
    checkEqual(out.withoutCookie, "error", "an EventSource without withCredentials (no cookie)");
    checkEqual(out.events[out.events.length - 1], "completed", "the last event of the cookie's stream");
    const cookies = await context.cookies(base);
    const session = cookies.find(c => c.name === "buzzer_session");
    check(session && session.httpOnly && session.sameSite === "Strict", `the session cookie: ${JSON.stringify(cookies)}`);
    await context.close();
  }

  // ---- 2. the demo page asks for the credential once ---------------------------------------
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(15000);
    let asked = 0;
    page.on("dialog", d => { asked += 1; d.accept(key); });
    page.on("pageerror", e => log(`page error: ${e.message}`));
    await page.goto(base + "/", { waitUntil: "load" });
    await waitFor("the kinds to load once signed in", () => page.evaluate(
      () => [...document.querySelectorAll("[data-testid=kind] option")].map(o => o.value).includes("echo")), 10000);
    await page.getByTestId("kind").selectOption("sleep");
    await page.getByTestId("input").fill(JSON.stringify({ seconds: 0.5, steps: 2 }));
    const [response] = await Promise.all([
      page.waitForResponse(r => r.request().method() === "POST" && new URL(r.url()).pathname === "/operations"),
      page.getByTestId("submit").click(),
    ]);
    checkEqual(response.status(), 202, "the demo page's submit");
    const { id } = await response.json();
    await waitFor(`operation ${id} to show succeeded on the page`, () => page.evaluate(
      id => document.querySelector(`[data-testid=op][data-id="${id}"]`)?.dataset.status === "succeeded", id), 15000);
    checkEqual(asked, 1, "how many times the page asked for a credential");
    await context.close();
  }
}

runMain("access.mjs", main);
