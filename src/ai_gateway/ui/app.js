// The usage page: asks for an admin key (kept in this tab's session storage), reads the admin
// API with it and fills the page. A refused key (401) brings the prompt back. Every value from
// the API goes in as text, never as markup.

import { barChart } from "/ui/chart.js";

const KEY_ITEM = "ai-gateway.admin-key";
const WINDOWS = {
  "24h": { since: "24h", by: "hour", unit: "hour", text: "last 24 hours" },
  "7d": { since: "7d", by: "day", unit: "day", text: "last 7 days" },
  "30d": { since: "30d", by: "day", unit: "day", text: "last 30 days" },
};
const TOP_ROWS = 10;
const FAILED_ROWS = 20;
const MAX_LIST_PAGES = 20;

class Refused extends Error {}

const $ = (id) => document.getElementById(id);

function storedKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

async function api(path) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${storedKey()}` },
    cache: "no-store",
  });
  if (response.status === 401) {
    throw new Refused();
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error(body?.error?.message ?? `${path} answered ${response.status}`);
  }
  return body;
}

// Every item of an admin list (keys, teams), page by page.
async function everything(path) {
  const items = [];
  let after = null;
  for (let page = 0; page < MAX_LIST_PAGES; page += 1) {
    const query = after ? `&after=${encodeURIComponent(after)}` : "";
    const answer = await api(`${path}?limit=100${query}`);
    items.push(...answer.data);
    if (!answer.has_more) {
      break;
    }
    after = answer.last_id;
  }
  return items;
}

const count = (value) => Number(value).toLocaleString("en-US");

function money(value) {
  const amount = Number(value);
  if (amount === 0) {
    return "$0";
  }
  const digits = amount >= 1 ? 2 : amount >= 0.01 ? 4 : 6;
  return `$${amount.toFixed(digits)}`;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) {
    td.className = className;
  }
  return td;
}

function fillTable(id, items, columns, emptyText) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  if (items.length === 0) {
    const td = cell(body.insertRow(), emptyText, "empty");
    td.colSpan = columns;
    return;
  }
  return body;
}

function showTotals(total, windowText) {
  $("window-label").textContent = `· ${windowText}`;
  const figures = {
    "total-requests": [total.requests, count],
    "total-tokens": [total.total_tokens, count],
    "total-cost": [total.cost_usd, money],
    "total-errors": [total.errors, count],
    "total-rejections": [total.rejections, count],
  };
  for (const [id, [value, format]] of Object.entries(figures)) {
    $(id).textContent = format(value);
    $(id).dataset.value = String(value);
  }
  const note = $("unpriced-note");
  note.hidden = total.unpriced_requests === 0;
  note.textContent = `${count(total.unpriced_requests)} requests used models of unknown price: their tokens are counted, their cost is not.`;
}

// Every bucket of the window, empty ones at zero, labelled as the API labels them.
function buckets(summary, unit) {
  const found = new Map(summary.data.map((row) => [row[unit], row]));
  const step = unit === "hour" ? 3600e3 : 86400e3;
  const start = new Date(summary.since);
  const first = unit === "hour"
    ? Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate(), start.getUTCHours())
    : Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate());
  const points = [];
  for (let at = first; at <= Date.now(); at += step) {
    const iso = new Date(at).toISOString();
    const label = unit === "hour" ? `${iso.slice(0, 13)}:00Z` : iso.slice(0, 10);
    points.push({ label, row: found.get(label) });
  }
  return points;
}

function showCharts(summary, unit) {
  const points = buckets(summary, unit);
  for (const node of document.querySelectorAll(".bucket-unit")) {
    node.textContent = unit;
  }
  const short = (label) => (unit === "hour" ? label.slice(11, 16) : label.slice(5));
  barChart($("chart-cost"), points.map((p) => ({ label: short(p.label), value: p.row?.cost_usd ?? 0 })), money);
  barChart($("chart-tokens"), points.map((p) => ({ label: short(p.label), value: p.row?.total_tokens ?? 0 })), count);
}

function showTop(id, rows, name) {
  const body = fillTable(id, rows, 4, "nothing in this window");
  for (const item of (body ? rows.slice(0, TOP_ROWS) : [])) {
    const row = body.insertRow();
    cell(row, name(item));
    cell(row, count(item.requests), "num");
    cell(row, count(item.total_tokens), "num");
    cell(row, money(item.cost_usd) + (item.unpriced_requests ? " +?" : ""), "num");
  }
}

function showFailures(statuses, failed, keyName) {
  const kinds = statuses.data.filter((row) => row.errors > 0 || row.rejections > 0);
  const body = fillTable("failure-kinds", kinds, 3, "no errors and no rejections");
  for (const item of (body ? kinds : [])) {
    const row = body.insertRow();
    cell(row, item.status === "rejected" ? "rejected (limit)" : item.status);
    cell(row, item.error_code ?? "-");
    cell(row, count(item.requests), "num");
  }
  const latest = fillTable("failed-requests", failed.data, 5, "none");
  for (const item of (latest ? failed.data : [])) {
    const row = latest.insertRow();
    cell(row, new Date(item.created_at * 1000).toISOString().slice(0, 19).replace("T", " "), "nowrap");
    cell(row, keyName(item.key_id));
    cell(row, item.model ?? item.route ?? "-");
    cell(row, item.error_code ? `${item.status} ${item.error_code}` : item.status);
    cell(row, item.request_id).className = "mono";
  }
}

function showBudgets(keys, spentByKey, teamName) {
  const body = fillTable("budgets", keys, 6, "no keys");
  for (const key of (body ? keys : [])) {
    const row = body.insertRow();
    cell(row, key.name ? `${key.name} (${key.id})` : key.id);
    cell(row, teamName(key.team));
    cell(row, money(spentByKey.get(key.id) ?? 0), "num");
    const budget = key.budget;
    if (!budget) {
      cell(row, "no budget", "empty");
      cell(row, "-", "num");
      cell(row, "-");
      continue;
    }
    cell(row, `${money(budget.limit_usd)} per ${budget.period}`);
    cell(row, money(budget.spent_usd), "num");
    const used = row.insertCell();
    const meter = document.createElement("meter");
    meter.min = 0;
    meter.max = 1;
    meter.low = 0.8;
    meter.high = 0.95;
    meter.optimum = 0;
    meter.value = budget.limit_usd > 0 ? Math.min(budget.spent_usd / budget.limit_usd, 1) : 1;
    used.append(meter, ` ${Math.round(meter.value * 100)}%`);
    if (budget.soft_limit_reached) {
      const warn = document.createElement("span");
      warn.className = "warn";
      warn.textContent = " soft limit reached";
      used.append(warn);
    }
  }
}

async function load() {
  const choice = WINDOWS[$("window").value] ?? WINDOWS["7d"];
  const since = encodeURIComponent(choice.since);
  const summary = (by, limit = 100) => api(`/admin/v1/usage?by=${by}&since=${since}&limit=${limit}`);
  $("status").textContent = "Loading…";
  const [timeline, byKey, byTeam, byModel, byStatus, failed, keys, teams] = await Promise.all([
    summary(choice.by, 1000),
    summary("key", 1000),
    summary("team"),
    summary("model"),
    summary("status"),
    api(`/admin/v1/usage/requests?since=${since}&outcome=failed&limit=${FAILED_ROWS}`),
    everything("/admin/v1/keys"),
    everything("/admin/v1/teams"),
  ]);
  const keyNames = new Map(keys.map((key) => [key.id, key.name]));
  const teamNames = new Map(teams.map((team) => [team.id, team.name]));
  const keyName = (id) => (id ? keyNames.get(id) ?? id : "-");
  const teamName = (id) => (id ? teamNames.get(id) ?? id : "-");
  showTotals(timeline.total, choice.text);
  showCharts(timeline, choice.unit);
  showTop("top-keys", byKey.data, (row) => keyName(row.key_id));
  showTop("top-teams", byTeam.data, (row) => (row.team ? teamName(row.team) : "no team"));
  showTop("top-models", byModel.data, (row) => (row.model ? `${row.provider}/${row.model}` : "none (not served)"));
  showFailures(byStatus, failed, keyName);
  showBudgets(keys, new Map(byKey.data.map((row) => [row.key_id, row.cost_usd])), teamName);
  $("status").textContent = `Updated ${new Date().toISOString().slice(0, 19).replace("T", " ")} UTC`;
  document.body.dataset.loaded = "true";
}

function showLogin(message) {
  sessionStorage.removeItem(KEY_ITEM);
  delete document.body.dataset.loaded;
  $("report").hidden = true;
  $("controls").hidden = true;
  $("status").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message ?? "";
  $("admin-key").value = "";
  $("admin-key").focus();
}

async function show() {
  $("login").hidden = true;
  $("controls").hidden = false;
  try {
    await load();
    $("report").hidden = false;
  } catch (error) {
    if (error instanceof Refused) {
      showLogin("That admin key was refused.");
      return;
    }
    $("status").textContent = `Could not load usage: ${error.message}`;
  }
}

function start() {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("admin-key").value.trim();
    if (key) {
      sessionStorage.setItem(KEY_ITEM, key);
      show();
    }
  });
  $("window").addEventListener("change", show);
  $("refresh").addEventListener("click", show);
  $("sign-out").addEventListener("click", () => showLogin());
  if (storedKey()) {
    show();
  } else {
    showLogin();
  }
}

start();
