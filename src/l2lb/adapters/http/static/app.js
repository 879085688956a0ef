// l2lb dashboard: plain JavaScript, no build step, no external network. Talks to /v1/* only.
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  const state = { token: sessionStorage.getItem("l2lb-token") || "", cont: null, live: false, timer: null };
  const m = /[#&]token=([^&]+)/.exec(location.hash);
  if (m) { state.token = decodeURIComponent(m[1]); sessionStorage.setItem("l2lb-token", state.token);
           history.replaceState(null, "", location.pathname); }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
    return e;
  }
  function headers() { return state.token ? { Authorization: "Bearer " + state.token } : {}; }
  function showError(msg) { const e = $("#error"); e.textContent = msg || ""; e.hidden = !msg; }
  function ago(sec) {
    if (sec == null) return "—";
    if (sec < 1) return sec.toFixed(2) + " s";
    if (sec < 120) return sec.toFixed(1) + " s";
    if (sec < 7200) return Math.round(sec / 60) + " min";
    return Math.round(sec / 3600) + " h";
  }
  // pool sizes as the server wrote them for people ("2^64", "1.8e19"): JSON numbers above 2^53 lose digits here
  function size(o, k) { return o[k + "_text"] != null ? o[k + "_text"] : String(o[k]); }
  function since(ts) { return ts ? ago(Date.now() / 1000 - ts) + " ago" : "—"; }

  async function api(path) {
    const r = await fetch(path, { headers: headers(), cache: "no-cache" });
    if (r.status === 401) { $("#auth").hidden = false; throw new Error("this server needs a bearer token"); }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.message || ("HTTP " + r.status));
    return body;
  }

  function filterQuery() {
    const p = new URLSearchParams();
    for (const f of ["namespace", "node", "pool", "ip"]) {
      const v = $("#f-" + f).value.trim();
      if (v) p.set(f, v);
    }
    return p;
  }

  function serviceRows(svc) {
    const ips = svc.ips.length ? svc.ips : [null];
    const ports = svc.ports.map((p) => p.protocol + "/" + p.port).join(" ");
    return ips.map((ip, i) => {
      const status = svc.ready ? el("span", { class: "ok" }, "ready")
        : el("span", { class: "bad", title: svc.message }, svc.reason || "pending");
      const tr = el("tr", { "data-key": svc.key, "data-ip": ip ? ip.ip : "" },
        el("td", { class: "svc" }, i === 0 ? svc.key : ""),
        el("td", { class: "ip" }, ip ? ip.ip : "—"),
        el("td", { class: "pool" }, ip ? ip.pool : ""),
        el("td", { class: "node" }, ip ? (ip.node || "none") : ""),
        el("td", { class: "since" }, ip ? since(ip.since) : ""),
        el("td", { class: "moves" }, ip ? ip.moves : ""),
        el("td", { class: "ports" }, i === 0 ? ports : ""),
        el("td", { class: "status" }, i === 0 ? status : ""));
      if (ip && !ip.node) tr.querySelector(".node").className = "node warn";
      return tr;
    });
  }

  async function loadServices(append) {
    const p = filterQuery();
    p.set("limit", "500");
    if (append && state.cont) p.set("continue", state.cont);
    const data = await api("/v1/services?" + p.toString());
    const tbody = $("#services tbody");
    if (!append) tbody.replaceChildren();
    for (const s of data.items) tbody.append(...serviceRows(s));
    state.cont = data.continue;
    $("#more").hidden = !data.continue;
    $("#services-count").textContent = "(" + data.total + ")";
  }

  async function loadPools() {
    const data = await api("/v1/pools");
    $("#pools").replaceChildren(...data.items.map((p) => el("div", {
      class: "pool" + (p.conflict || p.invalid ? " conflict" : ""), "data-pool": p.name, title: p.invalid || "" },
      el("div", { class: "label" }, el("span", {}, p.name + (p.invalid ? " (invalid: " + p.invalid + ")" : "") +
        (p.conflict ? " (conflict)" : "") + (p.disabled && !p.invalid ? " (disabled)" : "")),
        el("span", { class: "muted" }, size(p, "used") + " / " + size(p, "total") + " used")),
      el("div", { class: "bar", title: p.cidrs.join(", ") },
        el("div", { style: "width:" + (100 * p.usage).toFixed(1) + "%" })))));
  }

  async function loadNodes() {
    const data = await api("/v1/nodes");
    $("#nodes tbody").replaceChildren(...data.items.map((n) => el("tr", { "data-node": n.node },
      el("td", { class: "node" }, n.node),
      el("td", {}, n.alive ? el("span", { class: "ok" }, "yes") : el("span", { class: "bad" }, "no")),
      el("td", {}, ago(n.heartbeat_age_s)),
      el("td", {}, ...n.interfaces.map((i) => el("span", { class: "badge " + (i.up ? "on" : "off"),
        title: i.addresses.join(", ") }, i.name + (i.up ? " up" : " down")))),
      el("td", {}, n.assignments))));
  }

  function feedItem(ev) {
    let text;
    if (ev.type === "move") text = ev.ip + " " + (ev.from || "—") + " → " + (ev.to || "—");
    else if (ev.type === "conflict") text = ev.ip + " claimed by another MAC on " + ev.node;
    else text = [ev.service, ev.ip, ev.reason].filter(Boolean).join(" ");
    const t = new Date(ev.at * 1000).toLocaleTimeString();
    return el("li", { "data-type": ev.type }, el("span", { class: "muted" }, t + " "),
      el("b", { class: ev.type === "move" ? "warn" : "bad" }, ev.type), " " + text +
      (ev.message ? " — " + ev.message : ""));
  }

  async function loadEvents() {
    const data = await api("/v1/events?limit=50");
    $("#feed").replaceChildren(...data.items.map(feedItem));
  }

  async function loadSummary() {
    const c = await api("/v1/cluster");
    $("#summary").textContent = c.services.total + " Services (" + c.services.failing + " failing) · " +
      c.ips.announced + "/" + c.ips.allocated + " IPs announced · " + size(c.pools, "used") + "/" + size(c.pools, "total") +
      " pool IPs used · " + c.nodes.alive + "/" + c.nodes.total + " nodes alive";
  }

  const loaders = { services: () => loadServices(false), pools: loadPools, nodes: loadNodes,
                    assignments: () => loadServices(false), events: loadEvents, summary: loadSummary };
  const dirty = new Set();
  function schedule(what) {
    for (const w of what) dirty.add(w);
    if (state.timer) return;
    state.timer = setTimeout(async () => {
      state.timer = null;
      const todo = [...dirty]; dirty.clear();
      const fns = new Set(todo.map((w) => loaders[w]));
      try { await Promise.all([...fns].map((f) => f())); showError(""); } catch (e) { showError(e.message); }
    }, 150);
  }

  function setLive(on) {
    state.live = on;
    const b = $("#live"); b.textContent = "live: " + (on ? "on" : "off"); b.className = "badge " + (on ? "on" : "off");
  }

  // Server-sent events read with fetch() so the Authorization header can be sent.
  async function watch() {
    for (;;) {
      try {
        const r = await fetch("/v1/watch", { headers: headers() });
        if (!r.ok || !r.body) throw new Error("watch: HTTP " + r.status);
        setLive(true);
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i); buf = buf.slice(i + 2);
            let ev = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) ev = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (!data) continue;
            const d = JSON.parse(data);
            if (ev === "part") schedule([d.part, "summary"]);
            else if (ev === "event") { $("#feed").prepend(feedItem(d)); }
            else if (ev === "error") showError(d.message ? "live feed: " + d.message : "");
            else if (ev === "hello") schedule(["services", "pools", "nodes", "summary"]);
          }
        }
      } catch (e) { /* fall through to reconnect */ }
      setLive(false);
      await new Promise((res) => setTimeout(res, 2000));
    }
  }

  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); schedule(["services"]); });
  $("#more").addEventListener("click", () => loadServices(true).catch((e) => showError(e.message)));
  $("#auth-form").addEventListener("submit", (e) => {
    e.preventDefault(); state.token = $("#token").value.trim(); sessionStorage.setItem("l2lb-token", state.token);
    $("#auth").hidden = true; schedule(["services", "pools", "nodes", "events", "summary"]);
  });
  schedule(["services", "pools", "nodes", "events", "summary"]);
  setInterval(() => schedule(["nodes"]), 5000);  // heartbeat ages tick even without changes
  watch();
})();
