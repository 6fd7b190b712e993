// balancer dashboard: polls the JSON API once a second and redraws. Every value from the
// server goes into the page as text (textContent, text nodes, SVG text), never as HTML:
// task names, queue names and errors are written by whoever can write to Redis.
"use strict";

const POLL_MS = 1000;
let lastOk = 0;
let actionsOn = false;
let timer = null;

// -- building the page -------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick") el.addEventListener("click", v);
    else if (k === "text") el.textContent = String(v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const pill = (state) => h("span", {class: "pill s-" + String(state).replace(/[^a-z_]/g, "")}, state);
const num = (v, digits) => (v === null || v === undefined) ? "–" :
  (digits === undefined ? String(v) : Number(v).toFixed(digits));
const pct = (v) => (v === null || v === undefined) ? "–" : Math.round(v * 100) + "%";

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return seconds.toFixed(1) + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m" + Math.floor(seconds % 60) + "s";
  return Math.floor(seconds / 3600) + "h" + Math.floor((seconds % 3600) / 60) + "m";
}

function ms(v) {
  if (v === null || v === undefined) return "–";
  return v < 1000 ? v + " ms" : (v / 1000).toFixed(2) + " s";
}

function clock(msEpoch) {
  if (!msEpoch) return "–";
  const d = new Date(msEpoch);
  return d.toLocaleTimeString() + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1048576).toFixed(1) + " MiB";
}

function table(headers, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", {class: cls}, label)))),
    h("tbody", {}, rows));
}

function section(title, count, ...body) {
  return h("section", {}, h("h2", {}, title, count === null ? "" :
    h("span", {class: "count"}, " (" + count + ")")), ...body);
}

function toast(message, bad) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = bad ? "bad" : "";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}

// -- actions -------------------------------------------------------------------------------

async function act(name, body) {
  const token = document.getElementById("token").value;
  if (!token) { toast("enter the action token first (BALANCER_DASHBOARD_TOKEN)", true); return; }
  sessionStorage.setItem("balancer-token", token);
  try {
    const r = await fetch("/api/action/" + encodeURIComponent(name), {
      method: "POST", headers: {"Content-Type": "application/json", "X-Balancer-Token": token},
      body: JSON.stringify(body)});
    const data = await r.json();
    toast(r.ok ? data.message : (data.error || ("error " + r.status)), !r.ok);
  } catch (e) {
    toast("request failed: " + e, true);
  }
  refresh();
}

function button(label, cls, onclick) {
  return h("button", {class: cls, onclick, disabled: !actionsOn,
                      title: actionsOn ? null : "read-only: no BALANCER_DASHBOARD_TOKEN"}, label);
}

// -- the overview -----------------------------------------------------------------------

function workersSection(workers) {
  const rows = workers.map((w) => {
    const parts = w.load_parts || {};
    const running = (w.tasks || []).map((t) => h("div", {class: "mono"},
      pill(t.state), " ", t.name, " ", h("span", {class: "muted"}, t.id)));
    return h("tr", {"data-worker": w.id, "data-state": w.state},
      h("td", {class: "mono"}, w.id, h("div", {class: "muted"}, w.host + " pid " + w.pid + " " + w.pool)),
      h("td", {}, pill(w.state)),
      h("td", {}, (w.queues || []).join(", ")),
      h("td", {class: "num slots"}, w.leased + "/" + w.capacity),
      h("td", {class: "num"}, num(w.load, 2),
        h("div", {class: "muted"}, "leases " + num(parts.leases, 2) + " + cpu " +
          num(parts.cpu_pressure, 2) + " + mem " + num(parts.memory, 2))),
      h("td", {class: "num"}, pct(w.cpu)),
      h("td", {class: "num"}, pct(w.memory)),
      h("td", {class: "num"}, ago(w.last_seen_s)),
      h("td", {}, running.length ? running : h("span", {class: "muted"}, "idle"),
        w.stuck ? h("div", {class: "muted"}, "stuck task threads: " + w.stuck) : ""));
  });
  return section("Workers", workers.length, table(
    [["id"], ["state"], ["queues"], ["slots", "num"], ["load", "num"], ["cpu", "num"],
     ["mem", "num"], ["heartbeat", "num"], ["holds now"]], rows, {id: "workers"}));
}

function queuesSection(queues) {
  const rows = queues.map((q) => {
    const prio = h("input", {class: "small", type: "number", value: q.priority,
                             "aria-label": "priority of " + q.name});
    const limit = h("input", {class: "small", type: "number", min: 1,
                              value: q.concurrency_limit === null ? "" : q.concurrency_limit,
                              placeholder: "none", "aria-label": "limit of " + q.name});
    const set = () => act("queue.set", {queue: q.name, priority: parseInt(prio.value, 10),
      concurrency_limit: limit.value === "" ? null : parseInt(limit.value, 10)});
    return h("tr", {"data-queue": q.name, "data-paused": q.paused ? "1" : "0"},
      h("td", {class: "mono"}, q.name),
      h("td", {}, pill(q.paused ? "paused" : "active")),
      h("td", {class: "num depth"}, q.ready),
      h("td", {class: "num"}, q.ready ? ago(q.head_age_s) : "–"),
      h("td", {class: "num"}, actionsOn ? prio : q.priority),
      h("td", {class: "num"}, actionsOn ? limit : num(q.concurrency_limit)),
      h("td", {class: "num"}, num(q.inflight)),
      h("td", {}, (q.offered_to || []).length ? q.offered_to.join(", ") : h("span", {class: "muted"}, "–")),
      h("td", {class: "why"}, q.held_by || ""),
      h("td", {}, q.paused ? button("resume", "resume", () => act("queue.resume", {queue: q.name}))
                           : button("pause", "pause", () => act("queue.pause", {queue: q.name})),
        " ", actionsOn ? button("set", "set", set) : ""));
  });
  return section("Queues", queues.length, table(
    [["name"], ["state"], ["ready", "num"], ["head waits", "num"], ["priority", "num"],
     ["limit", "num"], ["leased", "num"], ["standing offer"], ["why ready tasks wait"], [""]],
    rows, {id: "queues"}));
}

function progress(done, total, failed) {
  const bar = h("span", {class: "bar"});
  const fill = h("span", {class: failed ? "bad" : ""});
  fill.style.width = (total ? Math.round(100 * done / total) : 100) + "%";
  bar.append(fill);
  return bar;
}

function flowsSection(flows) {
  const rows = flows.map((f) => {
    const done = f.total - f.remaining;
    return h("tr", {"data-flow": f.id, "data-state": f.state},
      h("td", {class: "mono"}, h("a", {href: "#/flow/" + encodeURIComponent(f.id)}, f.id)),
      h("td", {}, f.name, f.run_name ? h("div", {class: "muted"}, f.run_name) : null),
      h("td", {}, pill(f.state)),
      h("td", {}, progress(done, f.total, f.failed), " " + done + "/" + f.total,
        f.failed ? h("span", {class: "err"}, " " + f.failed + " failed") : ""),
      h("td", {}, new Date(f.created * 1000).toLocaleString()),
      h("td", {}, f.state === "running" ?
        button("cancel", "cancel", () => act("flow.cancel", {flow: f.id})) : ""));
  });
  const chosen = route().state;
  const filter = h("p", {class: "filters"}, "show: ", FLOW_STATES.map((s) =>
    s === chosen ? h("b", {"data-filter": s}, s || "all") :
      h("a", {href: s ? "#/?state=" + s : "#/", "data-filter": s}, s || "all")).flatMap((e) => [e, " · "]).slice(0, -1));
  return section(chosen ? "Recent " + chosen + " flows" : "Recent flows", flows.length, filter, table(
    [["id"], ["name"], ["state"], ["progress"], ["submitted"], [""]], rows, {id: "flows"}));
}

// The states the recent flows may be listed by ("": all), as the API takes them.
const FLOW_STATES = ["", "running", "completed", "failed", "cancelled"];

function deploymentsSection(deps) {
  if (!deps || !deps.length) return "";
  const rows = deps.map((d) => h("tr", {"data-deployment": d.deployment, "data-alive": d.alive ? "1" : "0"},
    h("td", {}, d.deployment), h("td", {}, d.alive ? pill("serving") : pill("gone")),
    h("td", {class: "mono"}, d.host + " pid " + d.pid), h("td", {}, d.schedule),
    h("td", {class: "num"}, d.next_ms ? clock(d.next_ms) : "–"), h("td", {class: "num"}, d.waiting),
    h("td", {class: "mono"}, Object.keys(d.parameters || {}).length ? JSON.stringify(d.parameters) : "")));
  return section("Deployments", deps.length, table(
    [["deployment"], ["state"], ["served by"], ["schedule"], ["next run", "num"], ["asked, not taken", "num"],
     ["parameters"]], rows, {id: "deployments"}));
}

function deadSection(dead, aside) {
  const rows = dead.map((d) => h("tr", {"data-dead": d.id},
    h("td", {class: "mono"}, d.id), h("td", {}, d.name), h("td", {}, d.queue),
    h("td", {class: "mono"}, h("a", {href: "#/flow/" + encodeURIComponent(d.flow)}, d.flow)),
    h("td", {class: "num"}, d.lost), h("td", {class: "err"}, d.reason),
    h("td", {}, button("retry", "retry", () => act("dlq.retry", {task: d.id})), " ",
      button("purge", "purge", () => act("dlq.purge", {task: d.id})))));
  const asideRows = aside.map((a) => h("tr", {},
    h("td", {class: "mono"}, a.id), h("td", {}, a.kind), h("td", {class: "mono"}, a.key),
    h("td", {class: "mono"}, a.member || ""), h("td", {}, a.detail)));
  return h("div", {class: "row"},
    section("Quarantined", dead.length, dead.length ? table(
      [["task"], ["name"], ["queue"], ["flow"], ["lost", "num"], ["why"], [""]], rows,
      {id: "dead"}) : h("p", {class: "muted"}, "none")),
    section("Set aside", aside.length, aside.length ? table(
      [["id"], ["kind"], ["key"], ["entry"], ["what was wrong"]], asideRows) :
      h("p", {class: "muted"}, "nothing")));
}

function chart(series, bucket) {
  const width = 560, height = 120, pad = 18;
  const max = Math.max(1, ...series.map((b) => b.completed + b.failed));
  const bw = (width - pad) / Math.max(1, series.length);
  const g = svg("svg", {class: "chart", width, height, viewBox: `0 0 ${width} ${height}`,
                        role: "img", "aria-label": "tasks settled per " + bucket + " s"});
  series.forEach((b, i) => {
    const x = pad + i * bw;
    const hc = (height - pad) * b.completed / max, hf = (height - pad) * b.failed / max;
    if (hc) g.append(svg("rect", {class: "completed", x, y: height - pad - hc, width: Math.max(1, bw - 1), height: hc}));
    if (hf) g.append(svg("rect", {class: "failed", x, y: height - pad - hc - hf, width: Math.max(1, bw - 1), height: hf}));
  });
  g.append(svg("text", {x: 0, y: 10}, String(max)));
  g.append(svg("text", {x: pad, y: height - 4}, "-" + Math.round(series.length * bucket / 60) + " min"));
  g.append(svg("text", {x: width - 24, y: height - 4}, "now"));
  const last = series.slice(-Math.round(60 / bucket));
  const settled = last.reduce((s, b) => s + b.completed + b.failed, 0);
  return h("div", {}, g, h("div", {class: "muted"}, settled + " tasks settled in the last minute ("
    + (settled / 60).toFixed(settled >= 60 ? 0 : 2) + "/s)"));
}

function leaderSection(data) {
  const rows = (data.dispatchers || []).map((d) => h("tr", {"data-dispatcher": d.id},
    h("td", {class: "mono"}, d.id), h("td", {}, pill(d.role)),
    h("td", {}, (d.partitions || []).map((p) => "#" + p).join(", ") || "none"),
    h("td", {class: "num"}, ago(d.seen_s))));
  return section("Dispatchers", rows.length,
    rows.length ? table([["id"], ["role"], ["leads partitions"], ["seen", "num"]], rows) :
      h("p", {class: "err"}, "no dispatcher: is `balancer serve` running?"),
    h("p", {class: "muted"}, "delayed (retries, later starts): " + data.delayed +
      " · quarantined: " + data.dead_letters + " · set aside: " + data.set_aside.length +
      (data.stamp ? " · the leader runs release " + data.stamp.release + " (protocol " +
        data.stamp.version + ")" : "")));
}

function eventsSection(list) {
  return section("Recent events", null, h("ul", {class: "events mono"}, list.map((e) =>
    h("li", {}, clock(e.at_ms) + "  " + e.kind + "  " +
      [e.name, e.task, e.queue && ("queue=" + e.queue), e.worker && ("worker=" + e.worker),
       e.state, e.count !== undefined && e.kind === "dispatch" ? e.count + " tasks via " + e.via : "",
       e.detail].filter(Boolean).join("  ")))));
}

function renderOverview(data) {
  const main = document.getElementById("main");
  const warning = data.eviction_warning ?
    [h("p", {class: "err", "data-warning": "eviction"}, "Warning: " + data.eviction_warning)] : [];
  main.replaceChildren(...warning,
    h("div", {class: "row"}, leaderSection(data),
      section("Throughput", null, chart(data.throughput || [], data.bucket_s || 5))),
    workersSection(data.workers), queuesSection(data.queues), flowsSection(data.flows),
    deploymentsSection(data.deployments),
    deadSection(data.quarantined || [], data.set_aside || []), eventsSection(data.events || []));
}

// -- a flow's page ------------------------------------------------------------------------

function levels(tasks, edges) {
  const ups = new Map(tasks.map((t) => [t.id, []]));
  for (const [a, b] of edges) if (ups.has(b) && ups.has(a)) ups.get(b).push(a);
  const level = new Map();
  const visit = (id, seen) => {
    if (level.has(id)) return level.get(id);
    if (seen.has(id)) return 0;
    seen.add(id);
    const l = Math.max(-1, ...ups.get(id).map((u) => visit(u, seen))) + 1;
    level.set(id, l);
    return l;
  };
  tasks.forEach((t) => visit(t.id, new Set()));
  return level;
}

function dag(flow) {
  const tasks = flow.tasks.slice(0, 300);
  const level = levels(tasks, flow.edges);
  const cols = new Map();
  tasks.forEach((t) => { const l = level.get(t.id); if (!cols.has(l)) cols.set(l, []); cols.get(l).push(t); });
  const W = 150, H = 34, GX = 40, GY = 12;
  const pos = new Map();
  let maxRows = 0;
  for (const [l, col] of cols) {
    col.forEach((t, i) => pos.set(t.id, [10 + l * (W + GX), 10 + i * (H + GY)]));
    maxRows = Math.max(maxRows, col.length);
  }
  const width = 20 + cols.size * (W + GX), height = 20 + maxRows * (H + GY);
  const g = svg("svg", {class: "dag", width, height, viewBox: `0 0 ${width} ${height}`});
  for (const [a, b] of flow.edges) {
    if (!pos.has(a) || !pos.has(b)) continue;
    const [x1, y1] = pos.get(a), [x2, y2] = pos.get(b);
    g.append(svg("line", {x1: x1 + W, y1: y1 + H / 2, x2, y2: y2 + H / 2}));
  }
  for (const t of tasks) {
    const [x, y] = pos.get(t.id);
    const node = svg("g", {"data-node": t.id, "data-state": t.state});
    node.append(svg("title", {}, t.name + " (" + t.state + ")" + (t.why ? ": " + t.why : "")));
    node.append(svg("rect", {x, y, width: W, height: H, class: "n-" + String(t.state).replace(/[^a-z_]/g, "")}));
    node.append(svg("text", {x: x + 6, y: y + 14}, t.name.length > 22 ? t.name.slice(0, 21) + "…" : t.name));
    node.append(svg("text", {x: x + 6, y: y + 28, fill: "#57606a"}, t.state + (t.worker ? " · " + t.worker.slice(0, 14) : "")));
    g.append(node);
  }
  return g;
}

// An artifact's content: markdown rendered from text nodes (markdown.js), a link followed
// only when it is http or https (a javascript: URL written by anyone must not run).
function artifactBody(a) {
  if (a.kind === "markdown") return renderMarkdown(a.data);
  if (a.kind === "progress") return h("span", {}, progress(Number(a.data), 100, 0), " " + pct(Number(a.data) / 100));
  if (a.kind === "link") {
    const url = String(a.data.link);
    return /^https?:\/\//i.test(url) ?
      h("a", {href: url, rel: "noopener noreferrer nofollow", target: "_blank"}, a.data.text) :
      h("span", {class: "mono"}, a.data.text + " (" + url + ")");
  }
  const head = a.data.columns.length ? a.data.columns.map((c) => [c]) : [];
  const rows = a.data.rows.map((r) => h("tr", {}, r.map((v) => h("td", {},
    v === null || typeof v !== "object" ? String(v) : JSON.stringify(v)))));
  return table(head, rows, {class: "artifact"});
}

function artifactsSection(list) {
  if (!list || !list.length) return "";
  return section("Artifacts", list.length, ...list.map((a) => h("div", {class: "artifact-box", "data-artifact": a.id},
    h("p", {}, pill(a.kind), " ", a.key ? h("b", {}, a.key) : "", a.description ? " " + a.description : "",
      h("span", {class: "muted mono"}, " " + a.id + (a.task_run_id ? " · task " + a.task_run_id : " · the flow"))),
    artifactBody(a))));
}

function renderFlow(flow) {
  const done = flow.total - flow.remaining;
  const rows = flow.tasks.map((t) => {
    const wait = t.started_ms && t.ready_ms ? t.started_ms - t.ready_ms : null;
    const run = t.started_ms && t.finished_ms ? t.finished_ms - t.started_ms : null;
    const err = t.error ? h("details", {}, h("summary", {class: "err"}, t.error.type + ": " + t.error.message),
                                        h("pre", {}, t.error.traceback || "(no traceback)")) : "";
    return h("tr", {"data-task": t.id, "data-state": t.state},
      h("td", {}, t.sub_run ? h("a", {href: "#/flow/" + encodeURIComponent(t.id)}, t.name) : t.name,
        t.run_name ? h("div", {class: "muted"}, t.run_name) : null,
        h("div", {class: "muted mono"}, t.sub_run ? "sub-run " + t.id : t.id)),
      h("td", {}, pill(t.state)), h("td", {class: "mono"}, t.worker || "–"),
      h("td", {class: "num"}, t.attempts),
      h("td", {class: "num"}, clock(t.ready_ms)), h("td", {class: "num"}, ms(wait)),
      h("td", {class: "num"}, ms(run)), h("td", {class: "num"}, bytes(t.result_bytes)),
      h("td", {}, t.why ? h("div", {class: "why"}, t.why) : "", err));
  });
  document.getElementById("main").replaceChildren(
    section("Flow " + flow.name + (flow.run_name ? " (" + flow.run_name + ")" : ""), null,
      h("p", {}, h("span", {class: "mono"}, flow.id), " ", pill(flow.state), " ",
        progress(done, flow.total, flow.failed), " " + done + "/" + flow.total + " done",
        flow.failed ? h("span", {class: "err"}, ", " + flow.failed + " failed") : "",
        " · submitted " + clock(flow.created_ms),
        flow.finished_ms ? " · finished " + clock(flow.finished_ms) : "",
        flow.paused_ms && flow.state === "running" ?
          h("span", {class: "paused"}, " · paused since " + clock(flow.paused_ms) + ", waiting for: balancer flow resume " + flow.id, " ",
            button("resume", "resume", () => act("flow.resume", {flow: flow.id}))) : "", " ",
        flow.state === "running" ? button("cancel", "cancel", () => act("flow.cancel", {flow: flow.id})) : "",
        " ", h("a", {href: "#/"}, "back")),
      h("div", {style: null}, dag(flow)),
      flow.not_shown ? h("p", {class: "muted"}, flow.not_shown + " more tasks not shown") : ""),
    section("Tasks", flow.tasks.length, table(
      [["task"], ["state"], ["worker"], ["attempts", "num"], ["ready", "num"], ["waited", "num"],
       ["ran", "num"], ["result", "num"], ["why it waits / error"]], rows, {id: "tasks"})),
    artifactsSection(flow.artifacts));
}

// -- polling -------------------------------------------------------------------------------

function route() {
  const m = location.hash.match(/^#\/flow\/([^/]+)$/);
  if (m) return {page: "flow", id: decodeURIComponent(m[1])};
  const s = location.hash.match(/^#\/\?state=([a-z]+)$/);
  return {page: "overview", state: s && FLOW_STATES.includes(s[1]) ? s[1] : ""};
}

async function refresh() {
  clearTimeout(timer);
  const focused = document.activeElement;
  const editing = focused && focused.tagName === "INPUT" && focused.id !== "token";
  try {
    const r = route();
    const url = r.page === "flow" ? "/api/flow/" + encodeURIComponent(r.id) :
      "/api/overview" + (r.state ? "?state=" + encodeURIComponent(r.state) : "");
    const resp = await fetch(url, {cache: "no-store"});
    const data = await resp.json();
    if (!resp.ok) throw new Error(data.error || resp.status);
    actionsOn = !!data.actions;
    document.getElementById("token-box").hidden = !actionsOn;
    document.getElementById("readonly").hidden = actionsOn;
    document.getElementById("namespace").textContent = "namespace " + data.namespace;
    if (r.page === "overview") {
      const lead = data.leader ? data.leader.split("|") : null;
      document.getElementById("leader").textContent = lead ?
        "leader: " + lead.slice(1).join("|") + " (epoch " + lead[0] + ")" : "no leader";
      if (!editing) renderOverview(data);
    } else if (!editing) {
      renderFlow(data);
    }
    lastOk = Date.now();
    const live = document.getElementById("live");
    live.textContent = "live · " + new Date().toLocaleTimeString();
    live.className = "live";
  } catch (e) {
    const live = document.getElementById("live");
    live.textContent = "cannot reach the dashboard: " + e.message;
    live.className = "live stale";
  }
  timer = setTimeout(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("token").value = sessionStorage.getItem("balancer-token") || "";
  window.addEventListener("hashchange", refresh);
  refresh();
});
