// The UAS web page: log in, see micronets, build a command set (change an ETR,
// split, join, define, delete), dry-run it, then submit it. Talks to the JSON
// API of spec/uas-api.md with a session token kept in memory only.
"use strict";

const state = { token: null, user: null, pending: [], triedSet: null };

const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await resp.json(); } catch (_) { data = { error: "bad_answer", detail: "not JSON" }; }
  return { status: resp.status, data };
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function isZero(etr) { return etr === "0.0.0.0" || etr === "::"; }

function describeError(data) {
  let s = (data.error || "error") + ": " + (data.detail || "");
  if (data.command !== undefined) s += " (command " + data.command + ")";
  return s;
}

// ---------------------------------------------------------------- login

async function login(ev) {
  ev.preventDefault();
  $("login-error").textContent = "";
  const r = await api("POST", "/v1/login", { user: $("user").value, password: $("password").value });
  if (r.status !== 200) {
    $("login-error").textContent = describeError(r.data);
    return;
  }
  state.token = r.data.token;
  state.user = r.data.user;
  $("password").value = "";
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  $("whoami").textContent = "logged in as " + state.user;
  await refresh();
}

async function logout() {
  await api("POST", "/v1/logout");
  state.token = null;
  state.pending = [];
  state.triedSet = null;
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("whoami").textContent = "";
}

// ---------------------------------------------------------------- micronets

async function refresh() {
  const r = await api("GET", "/v1/micronets");
  const box = $("uabs");
  box.replaceChildren();
  if (r.status !== 200) {
    box.append(el("p", { class: "error", id: "micronets-error" }, describeError(r.data)));
    return;
  }
  for (const uab of r.data.uabs) {
    box.append(el("h3", {}, "UAB " + uab.range + " in MAB " + uab.mab + " (sequence " + uab.mab_seq + ")"));
    const table = el("table", { class: "micronets" },
      el("tr", {}, el("th", {}, ""), el("th", {}, "micronet"), el("th", {}, "ETR"), el("th", {}, "change")));
    if (uab.micronets.length === 0) {
      table.append(el("tr", {}, el("td", { colSpan: 4 }, "no micronets: all unassigned (define one below)")));
    }
    for (const m of uab.micronets) table.append(row(m));
    box.append(table);
  }
}

function row(m) {
  const range = m.start + "+" + m.len;
  const etrInput = el("input", { class: "etr-input", value: m.etr, title: "new ETR" });
  const setBtn = el("button", { class: "set-etr", type: "button" }, "Change ETR");
  setBtn.addEventListener("click", () => add({ op: "set-etr", range, etr: etrInput.value.trim() }));
  const atInput = el("input", { class: "split-at", type: "number", min: 1, max: m.len - 1, placeholder: "at" });
  const splitBtn = el("button", { class: "split", type: "button", disabled: m.len < 2 }, "Split");
  splitBtn.addEventListener("click", () => add({ op: "split", range, at: Number(atInput.value) }));
  const delBtn = el("button", { class: "delete", type: "button" }, "Delete");
  delBtn.addEventListener("click", () => add({ op: "delete", range }));
  const pick = el("input", { type: "checkbox", class: "pick" });
  pick.dataset.start = m.start;
  pick.dataset.len = m.len;
  return el("tr", { "data-range": range },
    el("td", {}, pick),
    el("td", {}, range),
    el("td", { class: isZero(m.etr) ? "zero etr" : "etr" }, m.etr),
    el("td", {}, etrInput, setBtn, " ", atInput, splitBtn, " ", delBtn));
}

function joinSelected() {
  const picked = [...document.querySelectorAll("input.pick:checked")];
  if (picked.length < 2) {
    $("result").textContent = "select two or more adjacent micronets to join";
    return;
  }
  // Ranges are START+LEN with START an address; the first picked row starts the
  // join and the lengths add up (rows are in address order).
  const first = picked[0].dataset.start;
  const len = picked.reduce((n, p) => n + Number(p.dataset.len), 0);
  add({ op: "join", range: first + "+" + len });
}

function define(ev) {
  ev.preventDefault();
  add({ op: "define", range: $("define-range").value.trim(), etr: $("define-etr").value.trim() || "0.0.0.0" });
}

// ---------------------------------------------------------------- the set

function text(c) {
  switch (c.op) {
    case "set-etr": case "define": return c.op + " " + c.range + " " + c.etr;
    case "split": return "split " + c.range + " at " + c.at;
    default: return c.op + " " + c.range;
  }
}

function add(c) {
  state.pending.push(c);
  showPending();
}

function showPending() {
  const ol = $("pending");
  ol.replaceChildren(...state.pending.map((c, i) => {
    const rm = el("button", { type: "button", class: "remove" }, "remove");
    rm.addEventListener("click", () => { state.pending.splice(i, 1); showPending(); });
    return el("li", {}, text(c), " ", rm);
  }));
  // A set must be tried (dry run) as it stands before it can be submitted.
  state.triedSet = null;
  $("submit").disabled = true;
}

async function dryRun() {
  if (state.pending.length === 0) { $("result").textContent = "the set is empty"; return; }
  const set = JSON.stringify(state.pending);
  const r = await api("POST", "/v1/commands", { commands: state.pending, dry_run: true });
  if (r.status === 200 && r.data.outcome === "dry_run_ok") {
    state.triedSet = set;
    $("submit").disabled = false;
    $("result").className = "ok";
    $("result").textContent = "dry_run_ok — these ranges would change:\n" +
      r.data.changed.map((c) => "  " + c.start + "+" + c.len + " -> " + (c.etr === null ? "unassigned" : c.etr)).join("\n");
  } else {
    $("result").className = "error";
    $("result").textContent = describeError(r.data);
  }
}

async function submit() {
  if (state.triedSet !== JSON.stringify(state.pending)) { $("result").textContent = "dry-run the set first"; return; }
  $("submit").disabled = true;
  const r = await api("POST", "/v1/commands", { commands: state.pending });
  if (r.status === 200 || r.status === 202) {
    $("result").className = "ok";
    $("result").textContent = r.data.outcome + " (request " + r.data.request_id +
      (r.data.mab_seq !== undefined ? ", MAB sequence " + r.data.mab_seq : "") + ")";
    state.pending = [];
    showPending();
    await refresh();
  } else {
    $("result").className = "error";
    $("result").textContent = describeError(r.data);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("refresh").addEventListener("click", refresh);
  $("join-selected").addEventListener("click", joinSelected);
  $("define-form").addEventListener("submit", define);
  $("dry-run").addEventListener("click", dryRun);
  $("submit").addEventListener("click", submit);
  $("clear").addEventListener("click", () => { state.pending = []; showPending(); $("result").textContent = ""; });
});
