// Shared helpers for the client tests: the buzzer server as a child process (started, killed
// with SIGKILL and restarted on the same port and database), deadlines, cleanup on every path,
// and a small Server-Sent Events parser for reading the server's stored events from Node.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

// --- reporting -------------------------------------------------------------------------------

const started = Date.now();
const stamp = () => `[${((Date.now() - started) / 1000).toFixed(2).padStart(6)}s]`;

export function log(...args) {
  console.log(stamp(), ...args);
}

// A failed check: the message says what was expected and what was seen.
export class CheckFailure extends Error {}

export function check(condition, message) {
  if (!condition) throw new CheckFailure(message);
}

export function checkEqual(actual, expected, what) {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  check(a === e, `${what}: expected ${e}, got ${a}`);
}

export const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

// Polls `probe` (sync or async) until it returns a truthy value, which is returned; throws a
// CheckFailure naming `what` (and the last value or error seen) once `timeoutMs` has passed.
export async function waitFor(what, probe, timeoutMs, intervalMs = 50) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      if (e instanceof CheckFailure) throw e;  // a definite failure: no point in waiting on
      last = e;
    }
    if (Date.now() >= deadline) {
      const seen = last instanceof Error ? `error: ${last.message}` : `last value: ${JSON.stringify(last)}`;
      throw new CheckFailure(`timed out after ${timeoutMs} ms waiting for ${what} (${seen})`);
    }
    await sleep(intervalMs);
  }
}

// --- cleanup on every path -------------------------------------------------------------------

const cleanups = [];

// Registers `fn` (sync or async) to run at exit, most recent first.
export function onCleanup(fn) {
  cleanups.push(fn);
}

let cleaning = null;
async function runCleanups() {
  if (cleaning) return cleaning;
  cleaning = (async () => {
    while (cleanups.length) {
      const fn = cleanups.pop();
      try {
        await Promise.race([fn(), sleep(10000)]);
      } catch (e) {
        console.error(stamp(), "cleanup step failed:", e && e.message ? e.message : e);
      }
    }
  })();
  return cleaning;
}

// Runs `main` under an overall deadline; exits 0 if it resolves, 1 on any failure, a signal
// or the deadline. Everything registered with onCleanup() runs on every path, and the
// closing line is printed last.
export function runMain(name, main, { deadlineMs = 150000 } = {}) {
  let finished = false;
  const finish = async (code, why) => {
    if (finished) return;
    finished = true;
    if (code !== 0) {
      console.error(stamp(), `FAIL ${name}: ${why}`);
      for (const s of servers) {
        const tail = s.logTail();
        if (tail) console.error(`--- buzzer log (last ${tail.length} chars) ---\n${tail}\n--- end of buzzer log ---`);
      }
    }
    await runCleanups();
    console.log(code === 0 ? `${name}: all checks passed` : `${name}: FAILED (${why})`);
    process.exit(code);
  };
  const timer = setTimeout(() => finish(1, `overall deadline of ${deadlineMs} ms exceeded`), deadlineMs);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, () => finish(1, `received ${sig}`));
  process.on("uncaughtException", e => finish(1, `uncaught exception: ${e && e.stack || e}`));
  process.on("unhandledRejection", e => finish(1, `unhandled rejection: ${e && e.stack || e}`));
  Promise.resolve()
    .then(main)
    .then(() => { clearTimeout(timer); return finish(0); },
          e => { clearTimeout(timer); return finish(1, e instanceof CheckFailure ? e.message : (e && e.stack) || String(e)); });
}

// --- the server ------------------------------------------------------------------------------

const servers = [];

// A fresh temp directory, removed at exit.
export function makeTempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function buzzerBinary() {
  const bin = process.env.BUZZER_BINARY;
  check(bin, "BUZZER_BINARY is not set: it must name the buzzer executable to test");
  check(existsSync(bin), `BUZZER_BINARY=${bin} does not exist`);
  return bin;
}

// The buzzer binary on a loopback port. start() launches it and resolves once it printed
// "listening on http://HOST:PORT"; kill9() sends SIGKILL and waits for it to be gone;
// restart() starts it again on the same port and database.
export class Server {
  constructor({ binary, database, args = [] }) {
    this.binary = binary;
    this.database = database;
    this.args = args;
    this.listen = "127.0.0.1:0";
    this.child = null;
    this.output = "";
    this.incarnation = 0;
    servers.push(this);
    onCleanup(() => this.kill9());
  }

  logTail(max = 6000) {
    return this.output.length > max ? this.output.slice(-max) : this.output;
  }

  async start(timeoutMs = 20000) {
    check(!this.child, "server already running");
    this.incarnation += 1;
    const argv = ["--listen", this.listen, "--database", this.database, ...this.args];
    // setpriv --pdeathsig: the server dies with this script even if the script is SIGKILLed.
    const usePdeath = existsSync("/usr/bin/setpriv");
    const cmd = usePdeath ? "/usr/bin/setpriv" : this.binary;
    const cmdArgs = usePdeath ? ["--pdeathsig", "KILL", "--", this.binary, ...argv] : argv;
    log(`starting buzzer #${this.incarnation}: ${this.binary} ${argv.join(" ")}`);
    const child = spawn(cmd, cmdArgs, { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    const tag = `[buzzer#${this.incarnation}] `;
    const append = line => {
      this.output += tag + line + "\n";
      if (this.output.length > 200000) this.output = this.output.slice(-100000);
    };
    createInterface({ input: child.stderr }).on("line", append);
    const exited = new Promise(resolve => child.once("exit", (code, signal) => resolve({ code, signal })));
    this.exited = exited;
    const listening = new Promise((resolve, reject) => {
      createInterface({ input: child.stdout }).on("line", line => {
        append(line);
        const m = /listening on http:\/\/(\S+):(\d+)/.exec(line);
        if (m) resolve({ host: m[1], port: Number(m[2]) });
      });
      exited.then(({ code, signal }) => reject(new CheckFailure(
        `buzzer #${this.incarnation} exited before listening (code ${code}, signal ${signal})`)));
      child.once("error", e => reject(new CheckFailure(`could not start buzzer: ${e.message}`)));
    });
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new CheckFailure(
        `buzzer #${this.incarnation} did not print its listening line within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const { host, port } = await Promise.race([listening, timeout]);
      check(host === "127.0.0.1", `buzzer listens on ${host}, expected 127.0.0.1`);
      if (this.port !== undefined) check(port === this.port, `restarted buzzer listens on port ${port}, expected the same port ${this.port}`);
      this.host = host;
      this.port = port;
      this.listen = `${host}:${port}`;
      this.base = `http://${host}:${port}`;
      log(`buzzer #${this.incarnation} (pid ${child.pid}) listening on ${this.base}`);
      return this.base;
    } finally {
      clearTimeout(timer);
    }
  }

  // SIGKILL; resolves once the process is gone. A no-op if it is not running.
  async kill9() {
    const child = this.child;
    if (!child) return;
    this.child = null;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      const r = await Promise.race([this.exited, sleep(10000).then(() => null)]);
      check(r !== null, `buzzer pid ${child.pid} did not die within 10 s of SIGKILL`);
    }
  }

  async restart(timeoutMs = 20000) {
    await this.kill9();
    return this.start(timeoutMs);
  }
}

// --- HTTP and SSE ----------------------------------------------------------------------------

// fetch with a deadline.
export async function http(url, { timeoutMs = 10000, ...init } = {}) {
  return fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
}

export async function json(url, init = {}) {
  const r = await http(url, { ...init, headers: { Accept: "application/json", ...(init.headers || {}) } });
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  return { status: r.status, headers: r.headers, body };
}

export async function postOperation(base, body) {
  const r = await json(`${base}/operations`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  check(r.status === 202, `POST /operations ${JSON.stringify(body)}: expected 202, got ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

// Parses a complete text/event-stream body (the WHATWG rules: \r\n, \n or \r line ends,
// comments, id/event/data/retry fields, dispatch on a blank line).
export function parseSse(text) {
  const events = [];
  let retry = null, id = null, type = "", data = [], sawData = false;
  const lines = text.split(/\r\n|\n|\r/);
  // What follows the last line end is empty or an incomplete line: either way, not a line.
  lines.pop();
  for (const line of lines) {
    if (line === "") {
      if (sawData) events.push({ id, type: type || "message", data: data.join("\n") });
      type = ""; data = []; sawData = false;
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id" && !value.includes("\0")) id = value;
    else if (field === "event") type = value;
    else if (field === "data") { data.push(value); sawData = true; }
    else if (field === "retry" && /^\d+$/.test(value)) retry = Number(value);
  }
  return { retry, events };
}

// A full replay of the stored events of one operation, read until the server ends the stream
// (it does after the terminal event). `path` is /operations/ID/status or /events?....
export async function replay(base, path, { timeoutMs = 10000, headers = {} } = {}) {
  const r = await http(base + path, { timeoutMs, headers: { Accept: "text/event-stream", ...headers } });
  check(r.status === 200, `GET ${path} (text/event-stream): expected 200, got ${r.status}`);
  const type = r.headers.get("content-type") || "";
  check(type.startsWith("text/event-stream"), `GET ${path}: Content-Type ${type}, expected text/event-stream`);
  const text = await r.text();
  check(/^retry: \d+\r?\n/.test(text), `GET ${path}: the stream must start with "retry: <ms>", it starts with ${JSON.stringify(text.slice(0, 40))}`);
  const parsed = parseSse(text);
  for (const e of parsed.events) {
    check(/^\d+$/.test(e.id || ""), `GET ${path}: event without a decimal id: ${JSON.stringify(e)}`);
    e.id = Number(e.id);
    e.json = JSON.parse(e.data);
  }
  return { ...parsed, headers: r.headers, text };
}

// Strictly increasing and so free of duplicates.
export function checkIncreasing(ids, what) {
  for (let i = 1; i < ids.length; i++) {
    check(ids[i] > ids[i - 1], `${what}: ids not strictly increasing at index ${i}: ${JSON.stringify(ids)}`);
  }
}
