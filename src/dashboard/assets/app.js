// The hub's dashboard (docs/dashboard.md). Every name, label and message
// from the hub goes into the page as text (textContent, text nodes), never
// as HTML, so a device labelled <script> shows exactly that. The admin
// token lives in this tab's sessionStorage and goes out only as an
// Authorization header to this hub: no cookie, hence nothing another site
// can make the browser send (CSRF).
"use strict";

const ONLINE_SECONDS = 30;  // as the hub's `perch status`
const REFRESH_MS = 2000;       // the charts
const PAGE_REFRESH_MS = 5000;  // tables: overview, devices, deployments, events
const CHART_MINUTES = 15;
const EVENTS_SHOWN = 100;      // the hub answers at most 500

// Timers of the page shown; a new route stops them. `routeGeneration` tells
// a page that finishes rendering after the user moved on to drop itself.
const timers = [];
let routeGeneration = 0;
const charts = [];

function token() { return sessionStorage.getItem("perch-admin-token") || ""; }

// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows, id) {
  return el("table", id ? { id } : {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell) => el("td", {}, cell))))));
}

class SignedOut extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401 || response.status === 403) {
    signOut("The hub refused the token: sign in again.");
    throw new SignedOut();
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}
async function json(path, options) { return (await api(path, options)).json(); }

function now() { return Math.floor(Date.now() / 1000); }
function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) : "—";
}
function deviceState(device, at) {
  if (device.revoked) return "revoked";
  if (!device.last_seen || at - device.last_seen > ONLINE_SECONDS) return "offline";
  const beat = device.heartbeat || {};
  const failed = (beat.models || []).some((m) => m.state === "FAILED");
  return failed || (beat.errors || []).length ? "failing" : "online";
}
function labelsText(labels) {
  return Object.entries(labels || {}).map(([k, v]) => k + "=" + v).join(" ");
}

function setStatus(message) { document.getElementById("status").textContent = message || ""; }

function signOut(message) {
  sessionStorage.removeItem("perch-admin-token");
  stopRefresh();
  document.getElementById("nav").hidden = true;
  document.getElementById("page").hidden = true;
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-in-error").textContent = message || "";
}

function stopRefresh() {
  routeGeneration += 1;
  while (timers.length) clearInterval(timers.pop());
  while (charts.length) charts.pop().destroy();
}

// Runs `task` every `ms` while `node` is on the page, never two at once: a
// slow hub gets one request at a time from this tab, not a pile.
function every(ms, node, task) {
  let busy = false;
  timers.push(setInterval(async () => {
    if (busy || !node.isConnected) return;
    busy = true;
    try {
      await task();
    } catch (error) {
      report(error);
    } finally {
      busy = false;
    }
  }, ms));
}

// A part of a page that rebuilds itself from the hub every PAGE_REFRESH_MS,
// in place (no reload); `data-refreshes` counts the rebuilds.
async function live(build) {
  const box = el("div", { class: "live" });
  const fill = (content) => box.replaceChildren(...[content].flat(2).filter((n) => n));
  fill(await build());
  every(PAGE_REFRESH_MS, box, async () => {
    const content = await build();
    if (!box.isConnected) return;  // the user moved on meanwhile
    fill(content);
    box.setAttribute("data-refreshes", String(Number(box.getAttribute("data-refreshes") || 0) + 1));
  });
  return box;
}

// --- Charts -----------------------------------------------------------

// uPlot's aligned data from points {at, key, value}: one series per key.
function aligned(points) {
  const times = [...new Set(points.map((p) => p.at))].sort((a, b) => a - b);
  const keys = [...new Set(points.map((p) => p.key))].sort();
  const index = new Map(times.map((t, i) => [t, i]));
  const data = [times, ...keys.map(() => times.map(() => null))];
  for (const p of points) data[1 + keys.indexOf(p.key)][index.get(p.at)] = p.value;
  return { keys, data };
}

const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bc4c00", "#1b7c83"];

function chart(container, title, points) {
  const { keys, data } = aligned(points);
  const box = el("div", { class: "chart", "data-title": title });
  container.append(box);
  const plot = new uPlot({
    title, width: 420, height: 200,
    series: [{}, ...keys.map((key, i) => ({ label: key, stroke: COLORS[i % COLORS.length], spanGaps: true }))],
    axes: [{}, { size: 60 }],
  }, data, box);
  plot.perchKeys = keys.join("\n");
  charts.push(plot);
  return plot;
}

// Request rate, failure rate, p99 and vitals of a metrics page, keyed by
// `keyOf` (device, or model on one device).
function chartSeries(page, keyOf) {
  const series = { "requests/s": [], "failures %": [], "p99 ms": [], "CPU %": [], "memory %": [], "disk %": [] };
  for (const p of page.models) {
    const key = keyOf(p);
    series["requests/s"].push({ at: p.at, key, value: p.requests });
    series["failures %"].push({ at: p.at, key, value: p.requests ? 100 * p.failures / p.requests : 0 });
    series["p99 ms"].push({ at: p.at, key, value: p.p99_ms });
  }
  for (const v of page.vitals) {
    series["CPU %"].push({ at: v.at, key: v.device, value: v.cpu_percent });
    series["memory %"].push({ at: v.at, key: v.device, value: v.memory_total_bytes ? 100 * v.memory_used_bytes / v.memory_total_bytes : null });
    series["disk %"].push({ at: v.at, key: v.device, value: v.disk_total_bytes ? 100 * v.disk_used_bytes / v.disk_total_bytes : null });
  }
  return series;
}

// Requests per heartbeat become requests per second: the requests of each
// second a key reported in, over the gap to the previous such second.
function perSecond(points) {
  const sums = new Map();
  for (const p of points) {
    const id = p.key + "\n" + p.at;
    const sum = sums.get(id) || { at: p.at, key: p.key, value: 0 };
    sum.value += p.value;
    sums.set(id, sum);
  }
  const last = new Map();
  return [...sums.values()].sort((a, b) => a.at - b.at).map((p) => {
    const before = last.get(p.key);
    last.set(p.key, p.at);
    return { at: p.at, key: p.key, value: before === undefined ? null : p.value / (p.at - before) };
  });
}

async function renderCharts(container, path, keyOf) {
  const page = await json(path + (path.includes("?") ? "&" : "?") + "from=" + (now() - CHART_MINUTES * 60) + "&limit=1000");
  const series = chartSeries(page, keyOf);
  series["requests/s"] = perSecond(series["requests/s"]);
  return series;
}

async function chartsSection(path, keyOf) {
  const container = el("div", { class: "charts", id: "charts" });
  const draw = async () => {
    const series = await renderCharts(container, path, keyOf);
    const titles = Object.keys(series);
    if (charts.length !== titles.length ||
        charts.some((c, i) => c.perchKeys !== aligned(series[titles[i]]).keys.join("\n"))) {
      while (charts.length) charts.pop().destroy();
      container.replaceChildren();
      for (const title of titles) chart(container, title, series[title]);
    } else {
      titles.forEach((title, i) => charts[i].setData(aligned(series[title]).data));
    }
    container.setAttribute("data-points", String(charts.reduce((n, c) => n + c.data[0].length, 0)));
  };
  await draw();
  every(REFRESH_MS, container, draw);
  return container;
}

// --- Pages ------------------------------------------------------------

async function overview() {
  return [el("h1", {}, "Fleet"), await live(overviewContent)];
}

// The hub counts the devices (GET /api/v1/overview): the answer grows with
// the locations and rollouts, not with the fleet.
async function overviewContent() {
  const { devices: counts, locations, rollouts } = await json("/api/v1/overview");
  return [
    el("div", { class: "cards" },
      ["online", "offline", "failing"].map((state) => el("div", { class: "card", id: "count-" + state },
        el("div", { class: "figure " + state }, String(counts[state])), "devices " + state)),
      el("div", { class: "card", id: "count-rollouts" }, el("div", { class: "figure" }, String(rollouts.length)), "rollouts in progress")),
    el("h2", {}, "Locations"),
    table(["Location", "Description", "Online", "Offline", "Failing"],
      locations.map((l) => [el("a", { href: "#/location/" + encodeURIComponent(l.name) }, l.name),
        l.description, l.online, l.offline, l.failing]), "locations"),
    el("h2", {}, "Rollouts in progress"),
    rollouts.length ? table(["Deployment", "Revision", "Reference"], rollouts.map((r) => [
      el("a", { href: "#/deployments" }, r.deployment), r.revision, r.reference]), "rollouts")
      : el("p", {}, "None."),
  ];
}

// The trust policy's word on a model (docs/signing.md), when the device
// reports one.
function signatureText(signature) {
  if (!signature || !signature.state) return null;
  const text = {
    verified: () => "signature verified by " + (signature.key || "a trusted key") +
      (signature.key_sha256 ? " (sha256 " + signature.key_sha256.slice(0, 12) + "…)" : ""),
    signed: () => "signed, not verified (the device trusts no key)",
    unsigned: () => "unsigned",
    refused: () => "refused by the signature policy",
  }[signature.state];
  return el("span", { class: "signature " + signature.state, title: signature.key_sha256 || "" },
    text ? text() : signature.state);
}

function modelsCell(device) {
  const models = (device.heartbeat || {}).models || [];
  return models.map((m) => el("div", { class: "model" + (m.state === "FAILED" ? " failing" : "") },
    m.name + " v" + m.version + " " + m.state + " " + (m.digest || "").slice(0, 19) + " ",
    signatureText(m.signature), m.error ? " — " + m.error : null));
}

async function locationPage(name) {
  return [
    el("h1", {}, "Location " + name),
    await live(async () => {
      const status = await json("/api/v1/status?location=" + encodeURIComponent(name));
      const devices = status.devices;
      return table(["Device", "State", "Labels", "Serves", "Last seen"],
        devices.map((d) => [el("a", { href: "#/device/" + encodeURIComponent(d.name) }, d.name),
          el("span", { class: deviceState(d, status.now) }, deviceState(d, status.now)),
          labelsText(d.labels), modelsCell(d), when(d.last_seen)]), "devices");
    }),
    el("h2", {}, "Last " + CHART_MINUTES + " minutes, per device"),
    await chartsSection("/api/v1/metrics/locations/" + encodeURIComponent(name), (p) => p.device + " " + p.model),
  ];
}

async function devicePage(name) {
  return [
    el("h1", {}, "Device " + name),
    await live(async () => {
      const device = await json("/api/v1/devices/" + encodeURIComponent(name));
      const beat = device.heartbeat || {};
      return [
        table(["Location", "Labels", "Architecture", "perch", "Enrolled", "Last seen"],
          [[el("a", { href: "#/location/" + encodeURIComponent(device.location) }, device.location),
            labelsText(device.labels), device.architecture, device.perch_version,
            when(device.enrolled_at), device.revoked ? "revoked " + when(device.revoked_at) : when(device.last_seen)]], "device"),
        el("h2", {}, "Serves"), el("div", { id: "serves" }, modelsCell(device)),
        (beat.errors || []).length ? el("div", { class: "error" }, beat.errors.map((e) => el("p", {}, e))) : null,
      ];
    }),
    el("h2", {}, "Last " + CHART_MINUTES + " minutes"),
    await chartsSection("/api/v1/metrics/devices/" + encodeURIComponent(name), (p) => p.model + " v" + p.version),
  ];
}

function verdictRows(deployment) {
  const rows = [];
  for (const revision of deployment.revisions) {
    for (const v of (revision.verdicts || []).slice(-10)) {
      rows.push([revision.revision, el("span", { class: v.outcome }, v.outcome), when(v.at),
        "v" + v.baseline.version + ": " + v.baseline.requests + " req, " + v.baseline.failures + " failed, p99 " + v.baseline.p99_ms.toFixed(1) + " ms",
        "v" + v.canary.version + ": " + v.canary.requests + " req, " + v.canary.failures + " failed, p99 " + v.canary.p99_ms.toFixed(1) + " ms",
        v.reason]);
    }
  }
  return rows;
}

// How far a running canary is: the analysis' windows in a row against what
// decides it, or how long its devices have been healthy.
function canaryProgress(revision) {
  const rollout = revision.rollout;
  const analysis = rollout.analysis;
  if (analysis) {
    // As the hub's judge counts: window verdicts of one outcome ending the list.
    const windows = (revision.verdicts || []).filter((v) => v.window_end > 0);
    const streak = (outcome) => {
      let n = 0;
      for (let i = windows.length - 1; i >= 0 && windows[i].outcome === outcome; i -= 1) n += 1;
      return n;
    };
    const passing = streak("pass"), failing = streak("fail");
    return "Canary on " + rollout.canary_percent + "% of the devices: " + passing + " of " +
      analysis.passing_windows + " passing windows in a row to promote, " + failing + " of " +
      analysis.failing_windows + " failing to roll back; rolled back if not promoted by " +
      when(revision.created_at + analysis.deadline_seconds) + ".";
  }
  return "Canary on " + rollout.canary_percent + "% of the devices: " + (revision.healthy_since
    ? "healthy since " + when(revision.healthy_since) + ", promoted at " + when(revision.healthy_since + rollout.canary_healthy_seconds)
    : "waiting for every canary device to report it READY") + ".";
}

async function act(name, verb) {
  setStatus("");
  await json("/api/v1/deployments/" + encodeURIComponent(name) + "/" + verb, { method: "POST" });
  await route();
}

async function deploymentsPage() {
  return [el("h1", {}, "Deployments"), await live(deploymentsContent)];
}

async function deploymentsContent() {
  const deployments = await json("/api/v1/deployments");
  const sections = [];
  for (const d of deployments) {
    const current = d.revisions.find((r) => r.revision === d.current);
    const canary = current && current.rollout.strategy === "canary" && !current.promoted;
    const id = "deployment-" + d.name;
    sections.push(el("section", { id },
      el("h2", {}, d.name),
      table(["Revision", "Reference", "Rollout", "State", "Created"], d.revisions.map((r) => [
        r.revision, r.reference,
        r.rollout.strategy + (r.rollout.canary_percent ? " " + r.rollout.canary_percent + "%" : "") + (r.rollout.analysis ? " with analysis" : ""),
        r.rolled_back ? "rolled back" : r.revision === d.current ? (r.promoted ? "current" : "current (canary)") : "",
        when(r.created_at)])),
      canary ? el("p", { class: "progress" }, canaryProgress(current)) : null,
      el("div", {},
        el("button", { type: "button", class: "rollback", onclick: () => act(d.name, "rollback").catch(report) }, "Roll back"),
        canary ? el("button", { type: "button", class: "promote", onclick: () => act(d.name, "promote").catch(report) }, "Promote") : null),
      verdictRows(d).length ? [el("h2", {}, "Canary analysis"),
        table(["Revision", "Verdict", "At", "Before", "Canary", "Why"], verdictRows(d), "verdicts-" + d.name)] : null));
  }
  if (!deployments.length) sections.push(el("p", {}, "No deployments yet."));
  return sections;
}

const MANIFEST_TYPES = ["application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json"].join(", ");

async function registryPage() {
  const catalog = await json("/v2/_catalog?n=100");
  const rows = [];
  for (const repository of (catalog.repositories || []).slice(0, 50)) {
    const tags = (await json("/v2/" + repository + "/tags/list?n=20")).tags || [];
    for (const tag of tags) {
      const response = await api("/v2/" + repository + "/manifests/" + encodeURIComponent(tag), { headers: { Accept: MANIFEST_TYPES } });
      const digest = response.headers.get("Docker-Content-Digest") || "";
      const manifest = await response.json();
      const size = [manifest.config || {}, ...(manifest.layers || [])].reduce((n, d) => n + (d.size || 0), 0);
      let referrers = 0;
      try { referrers = ((await json("/v2/" + repository + "/referrers/" + digest)).manifests || []).length; } catch (e) { if (e instanceof SignedOut) throw e; }
      rows.push([repository, tag, digest.slice(0, 19), (size / 1024).toFixed(1) + " KiB", referrers]);
    }
  }
  return [el("h1", {}, "Registry"), table(["Repository", "Tag", "Digest", "Size", "Referrers"], rows, "registry")];
}

const EVENT_NAMES = { "device-enrolled": "device enrolled", "device-revoked": "device revoked",
  deployed: "deployed", promoted: "promoted", "rolled-back": "rolled back" };

// The hub keeps the log (GET /api/v1/events); the page asks for the newest
// EVENTS_SHOWN only.
async function eventsPage() {
  return [el("h1", {}, "Events"), el("p", {}, "The newest " + EVENTS_SHOWN + ", newest first."),
    await live(async () => {
      const events = await json("/api/v1/events?limit=" + EVENTS_SHOWN);
      return table(["At", "Event", "Subject", "Detail"], events.map((e) => [
        when(e.at), el("span", { class: e.kind }, EVENT_NAMES[e.kind] || e.kind),
        e.subject + (e.revision ? " revision " + e.revision : ""), e.detail]), "events");
    })];
}

function report(error) {
  if (!(error instanceof SignedOut)) setStatus(error.message);
}

async function route() {
  if (!token()) return signOut();
  stopRefresh();
  setStatus("");
  const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const [, page, name] = hash.split("/");
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.getAttribute("href") === "#/" + (page || ""));
  }
  const render = { "": overview, location: () => locationPage(name), device: () => devicePage(name),
    deployments: deploymentsPage, registry: registryPage, events: eventsPage }[page || ""] || overview;
  const target = document.getElementById("page");
  const generation = routeGeneration;
  try {
    const content = await render();
    if (generation !== routeGeneration) return;  // the user moved on meanwhile
    target.replaceChildren(...content.flat().filter((n) => n));
    target.hidden = false;
    document.getElementById("sign-in").hidden = true;
    document.getElementById("nav").hidden = false;
    target.setAttribute("data-page", page || "fleet");
  } catch (error) {
    report(error);
  }
}

document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  sessionStorage.setItem("perch-admin-token", input.value);
  input.value = "";
  try {
    await api("/api/v1/status");
    document.getElementById("sign-in-error").textContent = "";
    await route();
  } catch (error) {
    report(error);
  }
});
document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", () => route());
route();
