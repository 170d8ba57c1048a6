// The qss dashboard: signs in with an account's client credentials, or with the operator's
// admin token and then a choice of account; keeps every secret and token in memory only (never
// in storage or cookies), and reads everything through the account API. Every value from the
// server is put on the page with textContent, never as HTML.
"use strict";

const PARTICIPANT = "qss.meeting_participant_qos";
const SUMMARY = "qss.meeting_qos_summary";
const PHONE = "qss.phone_call_qos";
const LIVE_POLL_MS = 5000;
const HOUR_MS = 3600 * 1000;

// `mode` is "client" (client credentials) or "operator" (admin token, then an account).
const EMPTY_SESSION = { mode: null, accountId: null, clientId: null, secret: null, adminToken: null, token: null, expiresAt: 0 };
const session = Object.assign({}, EMPTY_SESSION);
let operatorAccounts = null; // the operator's accounts, read when the choice is shown
let refreshTimer = null;

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function fmtTime(iso) {
  return iso ? iso.replace("T", " ").replace(/(\.\d+)?Z$/, "") : "";
}

function gradeBadge(grade) {
  return el("span", { class: "grade grade-" + (grade || "none") }, grade || "—");
}

function issuesText(issues) {
  return (issues || []).join(", ") || "—";
}

// ---------------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || "HTTP " + status);
    this.status = status;
    this.body = body;
  }
}

/** A fresh access token for the session's account, by the means the session signed in with. */
async function renewToken() {
  let r;
  if (session.mode === "operator") {
    r = await fetch("/admin/accounts/" + encodeURIComponent(session.accountId) + "/tokens", {
      method: "POST",
      headers: { Authorization: "Bearer " + session.adminToken },
    });
  } else {
    const url = "/oauth/token?grant_type=account_credentials&account_id=" + encodeURIComponent(session.accountId);
    r = await fetch(url, {
      method: "POST",
      headers: { Authorization: "Basic " + btoa(session.clientId + ":" + session.secret) },
    });
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    throw new ApiError(r.status, { message: body.reason || body.message || body.error || "Sign-in failed." });
  }
  session.token = body.access_token;
  session.expiresAt = Date.now() + (body.expires_in || 3600) * 1000;
}

async function signIn(accountId, clientId, secret) {
  Object.assign(session, EMPTY_SESSION, { mode: "client", accountId, clientId, secret });
  try {
    await renewToken();
  } catch (e) {
    Object.assign(session, EMPTY_SESSION);
    throw e;
  }
}

/** A call of the operator's API with the admin token. */
async function adminApi(method, path) {
  const r = await fetch(path, { method, headers: { Authorization: "Bearer " + session.adminToken } });
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

/** Every account (all pages, at most 20 of 300). */
async function allAccounts() {
  const out = [];
  let token = "";
  for (let i = 0; i < 20; i++) {
    const q = new URLSearchParams({ page_size: "300" });
    if (token) q.set("next_page_token", token);
    const page = await adminApi("GET", "/admin/accounts?" + q.toString());
    out.push(...page.accounts);
    token = page.next_page_token;
    if (!token) break;
  }
  return out;
}

async function api(method, path, body) {
  if (session.token && Date.now() > session.expiresAt - 60000) await renewToken();
  const headers = { Authorization: "Bearer " + session.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) {
    signOut("Your session ended; sign in again.");
    throw new ApiError(401, { message: "Signed out." });
  }
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

function accountPath(rest) {
  return "/v2/accounts/" + encodeURIComponent(session.accountId) + "/qss" + rest;
}

/** Every event matching `params` (all pages, at most `maxPages`). */
async function allEvents(params, maxPages = 20) {
  const out = [];
  let token = "";
  let last = null;
  for (let i = 0; i < maxPages; i++) {
    const q = new URLSearchParams(Object.assign({ page_size: "300" }, params));
    if (token) q.set("next_page_token", token);
    last = await api("GET", accountPath("/events?" + q.toString()));
    out.push(...last.events);
    token = last.next_page_token;
    if (!token) break;
  }
  return { events: out, to: last && last.to };
}

// ---------------------------------------------------------------------------------------------
// Sign-in, sign-out and routing
// ---------------------------------------------------------------------------------------------

function signOut(message) {
  Object.assign(session, EMPTY_SESSION);
  operatorAccounts = null;
  live.reset();
  stopRefresh();
  $("#nav").hidden = true;
  $("#signout").hidden = true;
  $("#switch").hidden = true;
  $("#who").textContent = "";
  $("#signin-error").textContent = message || "";
  $("#operator-error").textContent = "";
  location.hash = "";
  show("signin");
}

/** Back to the operator's choice of account: the account's token is dropped. */
function switchAccount() {
  Object.assign(session, { accountId: null, token: null, expiresAt: 0 });
  live.reset();
  stopRefresh();
  $("#nav").hidden = true;
  $("#switch").hidden = true;
  $("#who").textContent = "Operator";
  if (location.hash === "#/accounts") route();
  else location.hash = "#/accounts";
}

function show(view) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== view + "-view";
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.view === view);
  }
}

function stopRefresh() {
  if (refreshTimer) clearInterval(refreshTimer);
  refreshTimer = null;
}

/** Runs `fn` now and every `ms` while this view stays open. */
function every(ms, fn) {
  stopRefresh();
  const run = () => fn().catch(report);
  run();
  refreshTimer = setInterval(run, ms);
}

function report(e) {
  if (e instanceof ApiError && e.status === 401) return;
  console.warn(e);
  const bar = $("#who");
  bar.dataset.error = e.message;
}

function route() {
  if (!session.token) {
    if (session.mode !== "operator") return show("signin");
    stopRefresh();
    show("accounts");
    return accountsView().catch((e) => (e.status === 401 ? signOut("The admin token is no longer valid; sign in again.") : report(e)));
  }
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  switch (parts[0]) {
    case "meeting":
      show("meeting");
      return every(10000, () => meetingView(decodeURIComponent(parts[1] || "")));
    case "phone":
      show("phone");
      return every(LIVE_POLL_MS, phoneView);
    case "webhooks":
      show("webhooks");
      stopRefresh();
      return webhooksView().catch(report);
    case "settings":
      show("settings");
      stopRefresh();
      return settingsView().catch(report);
    default:
      show("live");
      return every(LIVE_POLL_MS, liveView);
  }
}

/** Shows the signed-in frame once the session holds an account's token. */
function signedIn() {
  $("#nav").hidden = false;
  $("#signout").hidden = false;
  $("#switch").hidden = session.mode !== "operator";
  $("#who").textContent = "Account " + session.accountId + (session.mode === "operator" ? " (operator)" : "");
  $("#signin-error").textContent = "";
  $("#operator-error").textContent = "";
}

async function completeSignIn(accountId, clientId, secret) {
  await signIn(accountId, clientId, secret);
  signedIn();
}

/** Runs a form's submit handler with its button disabled. */
function onSubmit(form, fn) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      await fn(form);
    } finally {
      button.disabled = false;
    }
  });
}

onSubmit($("#signin-form"), async (f) => {
  try {
    await completeSignIn(f.account_id.value.trim(), f.client_id.value.trim(), f.client_secret.value);
    f.client_secret.value = "";
    if (!location.hash || location.hash === "#") location.hash = "#/live";
    else route();
  } catch (e) {
    $("#signin-error").textContent = e.status === 401 || e.status === 400
      ? "Wrong account, client ID or secret."
      : "Sign-in failed: " + e.message;
  }
});

onSubmit($("#operator-form"), async (f) => {
  Object.assign(session, EMPTY_SESSION, { mode: "operator", adminToken: f.admin_token.value.trim() });
  try {
    operatorAccounts = await allAccounts();
  } catch (e) {
    Object.assign(session, EMPTY_SESSION);
    $("#operator-error").textContent = e.status === 401 ? "Wrong admin token." : "Sign-in failed: " + e.message;
    return;
  }
  f.admin_token.value = "";
  $("#operator-error").textContent = "";
  $("#signout").hidden = false;
  $("#who").textContent = "Operator";
  if (location.hash === "#/accounts") route();
  else location.hash = "#/accounts";
});

$("#switch").addEventListener("click", switchAccount);
$("#signout").addEventListener("click", () => signOut(""));
window.addEventListener("hashchange", route);

// ---------------------------------------------------------------------------------------------
// The operator's choice of account
// ---------------------------------------------------------------------------------------------

async function accountsView() {
  if (!operatorAccounts) operatorAccounts = await allAccounts();
  const filter = $("#accounts-filter");
  const draw = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = operatorAccounts.filter((a) => !q || a.account_id.toLowerCase().includes(q) || a.name.toLowerCase().includes(q));
    const body = $("#accounts-table tbody");
    clear(body);
    for (const a of shown) {
      body.append(el("tr", { "data-account": a.account_id, onclick: () => chooseAccount(a.account_id) },
        el("td", {}, el("a", { href: "#/accounts", onclick: (ev) => ev.preventDefault() }, a.account_id)),
        el("td", {}, a.name), el("td", {}, a.plan),
        el("td", {}, a.qss_enabled ? "enabled" : "not enabled"),
        el("td", {}, fmtTime(a.created_at))));
    }
    $("#accounts-count").textContent = shown.length + " of " + operatorAccounts.length;
  };
  filter.oninput = draw;
  draw();
}

async function chooseAccount(accountId) {
  session.accountId = accountId;
  try {
    await renewToken();
  } catch (e) {
    session.accountId = null;
    if (e.status === 401) return signOut("The admin token is no longer valid; sign in again.");
    $("#accounts-error").textContent = "Could not open " + accountId + ": " + e.message;
    return;
  }
  $("#accounts-error").textContent = "";
  operatorAccounts = null; // read again on the next switch
  signedIn();
  location.hash = "#/live";
}

// ---------------------------------------------------------------------------------------------
// Live view: meetings of the last hour, from the events as they arrive
// ---------------------------------------------------------------------------------------------

const live = {
  to: null,
  callsTo: null,
  meetings: new Map(), // instance id -> { meeting_id, type, people: Map(pid -> latest object), last, summary }
  calls: new Map(), // "call_id direction" -> { id, windows: [{ t, o }], last }
  reset() {
    this.to = null;
    this.callsTo = null;
    this.meetings.clear();
    this.calls.clear();
  },
  add(e) {
    const o = e.payload.object;
    let m = this.meetings.get(o.meeting_instance_id);
    if (!m) {
      m = { meeting_id: o.meeting_id, type: o.meeting_type, people: new Map(), last: "", summary: null };
      this.meetings.set(o.meeting_instance_id, m);
    }
    if (e.event === SUMMARY) m.summary = o;
    else {
      const prev = m.people.get(o.participant_id);
      if (!prev || prev.timestamp <= o.timestamp) m.people.set(o.participant_id, o);
      if (o.timestamp > m.last) m.last = o.timestamp;
    }
  },
};

async function liveView() {
  const from = live.to || new Date(Date.now() - HOUR_MS).toISOString();
  const got = await allEvents({ event: PARTICIPANT + "," + SUMMARY, from });
  for (const e of got.events) live.add(e);
  if (got.to) live.to = got.to;
  const body = $("#live-table tbody");
  clear(body);
  const rows = [...live.meetings.entries()].sort((a, b) => {
    if (!a[1].summary !== !b[1].summary) return a[1].summary ? 1 : -1;
    return a[1].last < b[1].last ? 1 : -1;
  });
  for (const [instance, m] of rows) {
    const latest = [...m.people.values()].filter((o) => o.timestamp === m.last);
    const worst = latest.sort((a, b) => a.quality.mos - b.quality.mos)[0];
    const quality = m.summary ? m.summary.quality : worst && worst.quality;
    const issues = new Set();
    for (const o of latest) for (const i of o.quality.issues) issues.add(i);
    body.append(el("tr", { "data-instance": instance },
      el("td", {}, el("a", { href: "#/meeting/" + encodeURIComponent(instance) }, m.meeting_id)),
      el("td", {}, m.type),
      el("td", {}, m.summary ? "ended" : "in progress"),
      el("td", {}, m.summary ? m.summary.participant_count : m.people.size),
      el("td", {}, gradeBadge(quality && quality.grade)),
      el("td", {}, quality ? (quality.mos !== undefined ? quality.mos : (quality.mos_avg || "—")) : "—"),
      el("td", {}, m.summary ? issuesText(m.summary.quality.issues) : issuesText([...issues])),
      el("td", {}, fmtTime(m.last)),
    ));
  }
  $("#live-empty").hidden = rows.length > 0;
  await liveCalls();
  $("#live-updated").textContent = "updated " + new Date().toLocaleTimeString();
}

/** The calls of the last hour, by their latest window; in progress while windows keep coming. */
async function liveCalls() {
  const calls = await recentCalls();
  const body = $("#live-calls tbody");
  clear(body);
  for (const c of calls) {
    const o = c.last;
    // A window is emitted after it closes and its grace: two intervals and a minute of slack.
    const inProgress = Date.parse(o.timestamp) + (2 * o.interval_seconds + 60) * 1000 > Date.now();
    body.append(el("tr", { "data-call": o.call_id },
      el("td", {}, el("a", { href: "#/phone" }, o.call_id)), el("td", {}, o.direction),
      el("td", {}, inProgress ? "in progress" : "ended"),
      el("td", {}, gradeBadge(o.quality.grade)), el("td", {}, o.quality.mos),
      el("td", {}, issuesText(o.quality.issues)), el("td", {}, fmtTime(o.timestamp))));
  }
  $("#live-calls-empty").hidden = calls.length > 0;
}

// ---------------------------------------------------------------------------------------------
// Meeting view: a chart per metric, a line per participant
// ---------------------------------------------------------------------------------------------

const METRICS = [
  { key: "mos", label: "MOS", get: (o) => o.quality.mos, range: [1, 5] },
  { key: "latency", label: "Latency (ms)", get: (o) => group(o, "latency") },
  { key: "jitter", label: "Jitter (ms)", get: (o) => group(o, "jitter") },
  { key: "packet_loss", label: "Packet loss (%)", get: (o) => group(o, "packet_loss") },
  { key: "bitrate", label: "Bitrate (kbps, all streams)", get: (o) => total(o, "bitrate") },
  { key: "frame_rate", label: "Frame rate (fps)", get: (o) => video(o, "frame_rate") },
];

/** The audio value of a metric, else the video's, else the screen share's. */
function group(o, k) {
  for (const g of ["audio", "video", "screen_share"]) {
    const m = o.metrics[g];
    if (m && m[k] !== undefined && m[k] !== null) return m[k];
  }
  return null;
}

function total(o, k) {
  let sum = null;
  for (const g of ["audio", "video", "screen_share"]) {
    const m = o.metrics[g];
    if (m && typeof m[k] === "number") sum = (sum || 0) + m[k];
  }
  return sum;
}

function video(o, k) {
  for (const g of ["video", "screen_share"]) {
    const m = o.metrics[g];
    if (m && typeof m[k] === "number") return m[k];
  }
  return null;
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
let charts = [];

function drawCharts(container, people, metrics, width) {
  for (const c of charts) c.destroy();
  charts = [];
  clear(container);
  const times = [...new Set(people.flatMap((p) => p.windows.map((w) => w.t)))].sort((a, b) => a - b);
  // A single window still gets a readable axis: half a minute each side of it.
  if (times.length === 1) times.unshift(times[0] - 30) && times.push(times[1] + 30);
  for (const metric of metrics) {
    const data = [times];
    const series = [{}];
    people.forEach((p, i) => {
      const byT = new Map(p.windows.map((w) => [w.t, metric.get(w.o)]));
      data.push(times.map((t) => (byT.has(t) ? byT.get(t) : null)));
      series.push({ label: p.id, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true, points: { show: true, size: 5 } });
    });
    const box = el("figure", { class: "chart", "data-metric": metric.key }, el("figcaption", {}, metric.label));
    container.append(box);
    const x = { time: true };
    const y = metric.range
      ? { range: () => metric.range }
      : { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] };
    charts.push(new uPlot({ width, height: 220, series, legend: { show: true }, scales: { x, y }, axes: [{ space: 120 }, {}] }, data, box));
  }
}

async function meetingView(instance) {
  const got = await allEvents({ meeting_instance_id: instance, event: PARTICIPANT + "," + SUMMARY, from: new Date(Date.now() - 24 * HOUR_MS).toISOString() });
  const summary = got.events.find((e) => e.event === SUMMARY);
  const byPerson = new Map();
  let meetingId = "";
  for (const e of got.events) {
    if (e.event !== PARTICIPANT) continue;
    const o = e.payload.object;
    meetingId = o.meeting_id;
    if (!byPerson.has(o.participant_id)) byPerson.set(o.participant_id, { id: o.participant_id, name: o.user_name, windows: [] });
    byPerson.get(o.participant_id).windows.push({ t: Date.parse(o.timestamp) / 1000, o });
  }
  const people = [...byPerson.values()];
  for (const p of people) {
    p.windows.sort((a, b) => a.t - b.t);
    p.minMos = Math.min(...p.windows.map((w) => w.o.quality.mos));
    p.last = p.windows[p.windows.length - 1].o;
  }
  people.sort((a, b) => a.minMos - b.minMos);
  $("#meeting-title").textContent = "Meeting " + (meetingId || (summary && summary.payload.object.meeting_id) || instance);
  const s = $("#meeting-summary");
  clear(s);
  if (summary) {
    const o = summary.payload.object;
    s.append(el("p", { class: "summary" },
      "Ended. ", fmtTime(o.start_time), " – ", fmtTime(o.end_time), " (", o.duration_seconds, " s), ",
      o.participant_count, " participants, ", o.sample_count, " samples. Quality: ",
      gradeBadge(o.quality.grade), " ", issuesText(o.quality.issues)));
  } else {
    s.append(el("p", { class: "summary" }, "In progress: updated every 10 s."));
  }
  const body = $("#meeting-people tbody");
  clear(body);
  for (const p of people) {
    body.append(el("tr", {},
      el("td", {}, p.name ? p.name + " (" + p.id + ")" : p.id),
      el("td", {}, gradeBadge(p.last.quality.grade)),
      el("td", {}, p.last.quality.mos),
      el("td", {}, issuesText(p.last.quality.issues)),
      el("td", {}, p.windows.length)));
  }
  drawCharts($("#meeting-charts"), people, METRICS, Math.min(1180, document.body.clientWidth - 60));
  // Every window's issue tags, newest first, worst first within a window.
  const windows = people
    .flatMap((p) => p.windows.map((w) => ({ p, o: w.o })))
    .filter((w) => w.o.quality.issues.length)
    .sort((a, b) => (a.o.timestamp === b.o.timestamp ? a.o.quality.mos - b.o.quality.mos : a.o.timestamp < b.o.timestamp ? 1 : -1));
  const wbody = $("#meeting-windows tbody");
  clear(wbody);
  for (const w of windows.slice(0, 200)) {
    wbody.append(el("tr", {},
      el("td", {}, fmtTime(w.o.timestamp)), el("td", {}, w.p.id),
      el("td", {}, gradeBadge(w.o.quality.grade)), el("td", {}, w.o.quality.mos),
      el("td", {}, issuesText(w.o.quality.issues))));
  }
  $("#meeting-windows-empty").hidden = windows.length > 0;
}

// ---------------------------------------------------------------------------------------------
// Phone view
// ---------------------------------------------------------------------------------------------

/**
 * Each call direction of the last hour with its windows, the latest first. Like the meetings,
 * only what arrived since the previous poll is read.
 */
async function recentCalls() {
  const from = live.callsTo || new Date(Date.now() - HOUR_MS).toISOString();
  const got = await allEvents({ event: PHONE, from });
  if (got.to) live.callsTo = got.to;
  for (const e of got.events) {
    const o = e.payload.object;
    const id = o.call_id + " " + o.direction;
    if (!live.calls.has(id)) live.calls.set(id, { id, windows: [] });
    const c = live.calls.get(id);
    c.windows.push({ t: Date.parse(o.timestamp) / 1000, o });
    c.windows.sort((a, b) => a.t - b.t);
    c.last = c.windows[c.windows.length - 1].o;
  }
  const hourAgo = (Date.now() - HOUR_MS) / 1000;
  for (const [id, c] of live.calls) if (c.windows[c.windows.length - 1].t < hourAgo) live.calls.delete(id);
  return [...live.calls.values()].sort((a, b) => (a.last.timestamp < b.last.timestamp ? 1 : -1));
}

async function phoneView() {
  const list = await recentCalls();
  const body = $("#phone-table tbody");
  clear(body);
  for (const c of list) {
    const o = c.last;
    body.append(el("tr", {},
      el("td", {}, o.call_id), el("td", {}, o.direction), el("td", {}, o.codec || "—"),
      el("td", {}, gradeBadge(o.quality.grade)), el("td", {}, o.quality.mos),
      el("td", {}, issuesText(o.quality.issues)), el("td", {}, fmtTime(o.timestamp))));
  }
  drawCharts($("#phone-chart"), list.slice(0, 10), [METRICS[0]], Math.min(1180, document.body.clientWidth - 60));
}

// ---------------------------------------------------------------------------------------------
// Webhooks view: subscriptions, recent deliveries, retry
// ---------------------------------------------------------------------------------------------

async function webhooksView() {
  const list = $("#webhooks-list");
  const got = await api("GET", accountPath("/webhooks"));
  clear(list);
  if (!got.webhooks.length) list.append(el("p", { class: "empty" }, "No subscription."));
  for (const w of got.webhooks) {
    const d = await api("GET", accountPath("/webhooks/" + encodeURIComponent(w.id || w.webhook_id) + "/deliveries?page_size=20"));
    const id = w.id || w.webhook_id;
    const rows = d.deliveries.map((x) => el("tr", { "data-delivery": x.id },
      el("td", {}, fmtTime(x.created_at)), el("td", {}, x.event),
      el("td", {}, el("span", { class: "status delivery-" + shownStatus(x) }, shownStatus(x))),
      el("td", {}, x.attempt_count),
      el("td", {}, x.last_attempt ? (x.last_attempt.http_status || x.last_attempt.error || "") : "—"),
      el("td", {}, RETRIABLE.includes(x.status)
        ? el("button", { type: "button", class: "retry", onclick: (ev) => retry(ev.target, id, x.id) }, "Retry")
        : null)));
    list.append(el("article", { class: "webhook" },
      el("h3", {}, w.url, " ", el("span", { class: "status status-" + w.status }, w.status)),
      el("p", {}, "Events: ", (w.events || []).join(", ")),
      el("p", { class: "delivery-counts" }, deliveryCounts(d.deliveries)),
      el("table", {}, el("thead", {}, el("tr", {}, ...["Created", "Event", "Status", "Attempts", "Last answer", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows))));
  }
}

/** The statuses a retry applies to (SPEC 7.5); a pending delivery is already queued. */
const RETRIABLE = ["failed", "expired", "succeeded"];

/** A delivery's status, with "retrying" for a pending one whose attempts have failed so far. */
function shownStatus(x) {
  return x.status === "pending" && x.attempt_count > 0 ? "retrying" : x.status;
}

/** "20 recent deliveries: 17 succeeded, 2 failed, 1 retrying" */
function deliveryCounts(deliveries) {
  if (!deliveries.length) return "No delivery yet.";
  const counts = new Map();
  for (const x of deliveries) counts.set(shownStatus(x), (counts.get(shownStatus(x)) || 0) + 1);
  const parts = [...counts.entries()].map(([k, n]) => n + " " + k);
  return deliveries.length + " recent deliver" + (deliveries.length === 1 ? "y" : "ies") + ": " + parts.join(", ");
}

async function retry(button, webhookId, deliveryId) {
  button.disabled = true;
  try {
    await api("POST", accountPath("/webhooks/" + encodeURIComponent(webhookId) + "/deliveries/" + encodeURIComponent(deliveryId) + "/retry"));
    button.textContent = "Queued";
  } catch (e) {
    button.textContent = e.message;
  }
}

// ---------------------------------------------------------------------------------------------
// Settings view: the form, with the API's validation messages next to their fields
// ---------------------------------------------------------------------------------------------

const NUMBER_FIELDS = [
  ["aggregation_interval_seconds", "Aggregation interval (s)"],
  ["aggregation_grace_seconds", "Grace (s)"],
  ["meeting_end_timeout_seconds", "Meeting end timeout (s)"],
  ["retention_days", "Retention (days)"],
  ["quality_thresholds.latency_ms", "Latency threshold (ms)"],
  ["quality_thresholds.jitter_ms", "Jitter threshold (ms)"],
  ["quality_thresholds.packet_loss_pct", "Packet loss threshold (%)"],
  ["quality_thresholds.frame_rate_fps", "Frame rate threshold (fps)"],
  ["quality_thresholds.cpu_usage_pct", "CPU threshold (%)"],
  ["quality_thresholds.mos", "MOS threshold"],
];

function pick(obj, path) {
  return path.split(".").reduce((o, k) => (o ? o[k] : undefined), obj);
}

async function settingsView() {
  const s = await api("GET", accountPath("/settings"));
  const form = $("#settings-form");
  clear(form);
  form.append(el("p", {}, "Plan ", s.plan, s.qss_enabled ? ", QSS enabled." : ", QSS not enabled."));
  for (const [path, label] of NUMBER_FIELDS) {
    form.append(el("label", { "data-field": path }, label + " ",
      el("input", { name: path, type: "number", step: "any", value: String(pick(s, path)) }),
      el("span", { class: "field-error", role: "alert" })));
  }
  const types = el("fieldset", { "data-field": "event_types" }, el("legend", {}, "Event types"));
  for (const t of [PARTICIPANT, SUMMARY, PHONE]) {
    const box = el("input", { type: "checkbox", name: "event_types", value: t });
    box.checked = s.event_types.includes(t);
    types.append(el("label", {}, box, " " + t));
  }
  types.append(el("span", { class: "field-error", role: "alert" }));
  form.append(types, el("button", { type: "submit" }, "Save"), el("span", { id: "settings-result", role: "status" }));
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    for (const e of form.querySelectorAll(".field-error")) e.textContent = "";
    const patch = {};
    for (const [path] of NUMBER_FIELDS) {
      const v = form.elements[path].value;
      if (String(pick(s, path)) === v) continue;
      const num = v === "" ? null : Number(v);
      const keys = path.split(".");
      if (keys.length === 2) (patch[keys[0]] = patch[keys[0]] || {})[keys[1]] = num;
      else patch[path] = num;
    }
    const chosen = [...form.querySelectorAll("input[name=event_types]:checked")].map((b) => b.value);
    if (chosen.join() !== s.event_types.join()) patch.event_types = chosen;
    try {
      await api("PATCH", accountPath("/settings"), patch);
      $("#settings-result").textContent = "Saved.";
      await settingsView();
      $("#settings-result").textContent = "Saved.";
    } catch (e) {
      $("#settings-result").textContent = e.message;
      for (const fe of (e.body && e.body.errors) || []) {
        const holder = form.querySelector('[data-field="' + CSS.escape(fe.field) + '"] .field-error');
        if (holder) holder.textContent = fe.message;
      }
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Start: `#signin?account_id=..&client_id=..&client_secret=..[&view=..]` (what `qss demo`
// opens) signs in at once and leaves the address bar without the secret.
// ---------------------------------------------------------------------------------------------

(async function start() {
  const m = location.hash.match(/^#signin\?(.*)$/);
  if (m) {
    const p = new URLSearchParams(m[1]);
    history.replaceState(null, "", location.pathname + "#/" + (p.get("view") || "live"));
    try {
      await completeSignIn(p.get("account_id") || "", p.get("client_id") || "", p.get("client_secret") || "");
    } catch (e) {
      $("#signin-error").textContent = "Sign-in failed: " + e.message;
    }
  }
  route();
})();
