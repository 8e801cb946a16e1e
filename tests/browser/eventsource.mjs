// Buzzer's Server-Sent Events with a real third-party client: the npm `eventsource` package
// (WHATWG EventSource for Node). Starts buzzer itself (BUZZER_BINARY), follows a sleep
// operation, SIGKILLs the server mid-stream, restarts it on the same port and database, and
// checks that the client reconnects by itself with Last-Event-ID and gets exactly the events it
// missed, then `completed`, then stops on the 204 of its final reconnect. Also: an unknown
// operation is a 404 that the client does not retry.
//
//   BUZZER_BINARY=build/buzzer node tests/browser/eventsource.mjs
import { join } from "node:path";
import { EventSource } from "eventsource";
import {
  Server, buzzerBinary, check, checkEqual, checkIncreasing, log, makeTempDir, onCleanup,
  postOperation, replay, runMain, sleep, waitFor,
} from "./lib.mjs";

const RETRY_MS = 300;           // --sse-retry-ms: the reconnection delay the server announces
const DEFAULT_RETRY_MS = 3000;  // the client's own delay before it has seen a `retry:` field
const TYPES = ["pending", "running", "progress", "completed", "failed", "canceled"];

// An EventSource whose every connection attempt and event is recorded.
function follow(url, name) {
  const t0 = Date.now();
  const rec = { name, requests: [], events: [], errors: [], opens: 0 };
  const recordingFetch = async (input, init = {}) => {
    const headers = new Headers(init.headers || {});
    const req = {
      at: Date.now() - t0,
      lastEventId: headers.get("last-event-id"),
      accept: headers.get("accept"),
      status: null,
      error: null,
    };
    rec.requests.push(req);
    try {
      const r = await fetch(input, init);
      req.status = r.status;
      return r;
    } catch (e) {
      req.error = (e.cause && e.cause.code) || e.message;
      throw e;
    }
  };
  const es = new EventSource(url, { fetch: recordingFetch });
  rec.es = es;
  es.addEventListener("open", () => { rec.opens += 1; });
  es.addEventListener("error", e => {
    rec.errors.push({ at: Date.now() - t0, code: e.code, message: e.message, readyState: es.readyState });
  });
  for (const type of TYPES) {
    es.addEventListener(type, ev => {
      rec.events.push({ at: Date.now() - t0, id: ev.lastEventId, type, data: ev.data, connection: rec.opens });
    });
  }
  es.addEventListener("message", ev => {
    rec.events.push({ at: Date.now() - t0, id: ev.lastEventId, type: "message", data: ev.data, connection: rec.opens });
  });
  onCleanup(() => es.close());
  return rec;
}

const fmtReq = r => `{at ${r.at} ms, Last-Event-ID ${r.lastEventId}, ${r.status ?? r.error}}`;

async function main() {
  const binary = buzzerBinary();
  const dir = makeTempDir("buzzer-es-");
  const server = new Server({ binary, database: join(dir, "db"), args: ["--sse-retry-ms", String(RETRY_MS)] });
  const base = await server.start();

  // --- unknown operations: 404, the client closes and never retries. Started first so that
  // the no-retry check spans more than the client's default delay (3 s) by the end.
  const unknownId = "01ARZ3NDEKTSV4RRFFQ69G5FAV";  // a well-formed ULID that was never issued
  const unknowns = [
    follow(`${base}/operations/${unknownId}/status`, "unknown operation"),
    follow(`${base}/operations/not-a-ulid/status`, "malformed operation id"),
    follow(`${base}/events?operation=${unknownId}`, "unknown operation on /events"),
  ];
  const unknownStarted = Date.now();
  for (const u of unknowns) {
    await waitFor(`the error event of the ${u.name} stream`, () => u.errors.length > 0, 10000);
    const err = u.errors[0];
    check(err.code === 404, `${u.name}: expected the client's error to carry HTTP 404, got code ${err.code} (${err.message})`);
    check(u.es.readyState === EventSource.CLOSED,
      `${u.name}: after a 404 the client must be CLOSED (2), readyState is ${u.es.readyState}`);
    check(u.events.length === 0, `${u.name}: expected no events, got ${JSON.stringify(u.events)}`);
    log(`${u.name}: 404, client CLOSED`);
  }

  // --- a sleep operation followed across a kill -9 and restart.
  const op = await postOperation(base, { kind: "sleep", input: { seconds: 4, steps: 8 } });
  const id = op.id;
  log(`submitted sleep ${id} (max_attempts ${op.max_attempts})`);
  check(op.max_attempts >= 2, `the test needs a sleep with at least 2 attempts to survive kill -9, got max_attempts ${op.max_attempts}`);
  const rec = follow(`${base}/operations/${id}/status`, "sleep");

  await waitFor("3 progress events before the kill", () => rec.events.filter(e => e.type === "progress").length >= 3, 15000);
  const killedAt = rec.requests.length;  // requests from this index on came after the kill
  const errorsAtKill = rec.errors.length;
  await server.kill9();
  // The client reports the lost connection once it has read (and dispatched) everything it got.
  await waitFor("the client to notice the lost connection (an error event, readyState CONNECTING)",
    () => rec.errors.length > errorsAtKill, 10000);
  check(rec.es.readyState === EventSource.CONNECTING,
    `after the connection broke the client must be CONNECTING (0), readyState is ${rec.es.readyState}`);
  const before = rec.events.map(e => e.id);
  const lastBeforeKill = before[before.length - 1];
  log(`SIGKILLed the server after events ${JSON.stringify(before)}`);

  // Leave the server down for a few retry periods: the client must keep trying through refusals.
  await sleep(4 * RETRY_MS);
  await server.restart();

  const completed = await waitFor("the completed event after the restart",
    () => rec.events.find(e => e.type === "completed"), 30000);
  log(`completed arrived (event ${completed.id})`);
  await waitFor("the client to stop (readyState CLOSED) after the stream ended",
    () => rec.es.readyState === EventSource.CLOSED, 10000);
  const requestsAtClose = rec.requests.length;
  // Would it loop? Give it several retry periods to try again.
  await sleep(6 * RETRY_MS);
  log(`requests: ${rec.requests.map(fmtReq).join(" ")}`);
  check(rec.requests.length === requestsAtClose,
    `after the 204 the client must not reconnect, yet it made ${rec.requests.length - requestsAtClose} more request(s): ${rec.requests.slice(requestsAtClose).map(fmtReq).join(" ")}`);

  // The server's stored events for the operation, two ways: the status monitor and /events.
  const stored = await replay(base, `/operations/${id}/status`);
  const storedViaEvents = await replay(base, `/events?operation=${id}&last_event_id=0`);
  const storedIds = stored.events.map(e => e.id);
  log(`stored events: ${stored.events.map(e => `${e.id}:${e.type}`).join(" ")}`);
  checkEqual(stored.retry, RETRY_MS, "the retry field the stream starts with");
  checkEqual(storedViaEvents.events.map(e => [e.id, e.type]), stored.events.map(e => [e.id, e.type]),
    "full replay via /events?operation=ID&last_event_id=0 vs via /operations/ID/status");
  checkIncreasing(storedIds, "stored events");
  check(stored.events.every(e => e.json.id === id), "every stored event must be about the operation");

  // The client got every stored event exactly once, in order, with the stored payloads.
  const got = rec.events.map(e => Number(e.id));
  check(rec.events.every(e => /^\d+$/.test(e.id)), `every event needs a decimal id: ${JSON.stringify(rec.events.map(e => e.id))}`);
  checkIncreasing(got, "event ids the client received (a repeat would be a duplicate)");
  checkEqual(got, storedIds, "event ids the client received vs the server's stored events (none missed, none duplicated)");
  checkEqual(rec.events.map(e => e.type), stored.events.map(e => e.type), "event types received vs stored");
  for (let i = 0; i < rec.events.length; i++) {
    checkEqual(JSON.parse(rec.events[i].data), stored.events[i].json, `payload of event ${rec.events[i].id}`);
  }
  const last = rec.events[rec.events.length - 1];
  checkEqual(last.type, "completed", "the last event");

  // The lifecycle across the crash: the recovered operation goes back to pending and runs again.
  const after = stored.events.filter(e => e.id > Number(lastBeforeKill));
  check(after.some(e => e.type === "pending"),
    `after kill -9 the recovery must write a pending event; events after ${lastBeforeKill}: ${after.map(e => e.type).join(",")}`);
  check(after.some(e => e.type === "running" && e.json.attempt >= 2),
    `after kill -9 the operation must run again as attempt 2; events after ${lastBeforeKill}: ${after.map(e => `${e.type}/${e.json.attempt ?? ""}`).join(",")}`);
  checkEqual(last.type === "completed" && JSON.parse(last.data).status, "succeeded", "status in the completed event");

  // How the client connected: first without Last-Event-ID; every reconnect sent the last id it
  // had seen; one reconnect after the restart got the missed events; the last one got 204.
  const reqs = rec.requests;
  check(reqs[0].lastEventId === null, `the first request must carry no Last-Event-ID, it sent ${reqs[0].lastEventId}`);
  check(reqs.every(r => r.accept === "text/event-stream"), "every request must send Accept: text/event-stream");
  checkEqual(reqs[0].status, 200, "status of the first connection");
  const reconnects = reqs.slice(1);
  check(reconnects.length >= 2, `expected at least a reconnect after the restart and a final one, got ${reqs.map(fmtReq).join(" ")}`);
  check(reconnects.every(r => r.lastEventId !== null), `every reconnect must send Last-Event-ID: ${reqs.map(fmtReq).join(" ")}`);
  check(killedAt >= 1, "no request before the kill?");
  const resumed = reqs.slice(killedAt).find(r => r.status === 200);
  check(resumed, `no successful reconnect after the restart: ${reqs.map(fmtReq).join(" ")}`);
  checkEqual(resumed.lastEventId, lastBeforeKill, "Last-Event-ID of the reconnect after the restart (the last id received before the kill)");
  const resumedEvents = rec.events.filter(e => Number(e.id) > Number(lastBeforeKill));
  check(resumedEvents.length > 0 && resumedEvents[0].at >= resumed.at,
    "the missed events must arrive on the reconnect after the restart");
  checkEqual(resumedEvents.map(e => Number(e.id)), storedIds.filter(x => x > Number(lastBeforeKill)),
    "events received after the restart vs the stored events after Last-Event-ID");
  const final = reqs[reqs.length - 1];
  checkEqual(final.status, 204, "status of the final reconnect after the terminal event");
  checkEqual(final.lastEventId, completed.id, "Last-Event-ID of the final reconnect (the completed event)");
  const finalErr = rec.errors[rec.errors.length - 1];
  check(finalErr && finalErr.code === 204, `the client's last error must report the 204, got ${JSON.stringify(finalErr)}`);
  // The client used the server's retry (300 ms), not its default (3 s).
  const delay = final.at - completed.at;
  check(delay >= RETRY_MS - 50 && delay < DEFAULT_RETRY_MS - 500,
    `the final reconnect came ${delay} ms after the completed event; with retry: ${RETRY_MS} it should be about ${RETRY_MS} ms`);
  log(`reconnected with Last-Event-ID ${resumed.lastEventId} after the restart, final reconnect ${delay} ms after completed got 204`);

  // The unknown-operation clients have still not retried (more than the default delay later).
  const waited = Date.now() - unknownStarted;
  check(waited > DEFAULT_RETRY_MS, `internal: only ${waited} ms since the unknown-operation streams started`);
  for (const u of unknowns) {
    check(u.requests.length === 1, `${u.name}: the client retried after a 404 (${u.requests.map(fmtReq).join(" ")})`);
    check(u.es.readyState === EventSource.CLOSED, `${u.name}: readyState ${u.es.readyState}, expected CLOSED`);
  }
  log(`unknown operations: one request each, no retry in ${waited} ms`);
}

runMain("eventsource.mjs", main, { deadlineMs: 120000 });
