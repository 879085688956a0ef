// l2lb dashboard: plain JavaScript, no build step, no external network. Talks to /v1/* only.
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  const state = { token: sessionStorage.getItem("l2lb-token") || "", cont: null, live: false, timer: null,
                  window: 3600, timeline: null, history: null, pools: null };
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }
  // one colour per node, stable while the node list is
  const PALETTE = ["#2f81f7", "#1a7f37", "#bf8700", "#8250df", "#cf6a00", "#0598bc", "#bf3989", "#57606a"];
  function colorOf(node, nodes) { const i = nodes.indexOf(node); return i < 0 ? "#999" : PALETTE[i % PALETTE.length]; }
  function gapText(ms) { return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s"; }
  function clock(t) { return new Date(t * 1000).toLocaleTimeString(); }
  // a long name may wrap after "-" and "." (node names like k8s-worker-rack2-node-03.lab.example)
  function breakable(name) {
    const out = [];
    for (const part of String(name).split(/(?<=[-.])/)) { if (out.length) out.push(el("wbr")); out.push(part); }
    return out;
  }
  const m = /[#&]token=([^&]+)/.exec(location.hash);
  if (m) { state.token = decodeURIComponent(m[1]); sessionStorage.setItem("l2lb-token", state.token);
           history.replaceState(null, "", location.pathname); }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c == null || c === "") continue;  // keeps empty cells :empty (hidden in the phone layout)
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
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
        el("td", { class: "ip", "data-label": "IP" }, ip ? ip.ip : "—"),
        el("td", { class: "pool", "data-label": "pool" }, ip ? ip.pool : ""),
        el("td", { class: "node", "data-label": "node" }, ip ? (ip.node || "none") : ""),
        el("td", { class: "since", "data-label": "since" }, ip ? since(ip.since) : ""),
        el("td", { class: "moves", "data-label": "moves" }, ip ? ip.moves : ""),
        el("td", { class: "ports", "data-label": "ports" }, i === 0 ? ports : ""),
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
    const [data, hist] = await Promise.all([api("/v1/pools"), api("/v1/pools/history?window=3600")]);
    state.pools = data; state.history = hist;
    drawPools();
  }

  // usage of one pool over the window: area + line, the 90 % alert level dashed, the last value in data-last
  function poolHistory(name, usageNow) {
    const hist = state.history;
    const item = hist && hist.items.find((h) => h.pool === name);
    const pts = item ? item.points : [];
    const W = Math.max(80, ($("#pools").clientWidth || 200)), H = 34, t0 = hist ? hist.from : 0, t1 = hist ? hist.to : 1;
    const x = (t) => Math.max(0, Math.min(W, (t - t0) / Math.max(1, t1 - t0) * W));
    const y = (u) => H - 2 - Math.max(0, Math.min(1, u)) * (H - 4);
    let d = "", last = usageNow;
    if (pts.length) {
      last = pts[pts.length - 1].usage;
      let prev = null;
      for (const p of pts) {  // steps: usage holds until the next sample
        const px = x(p.at).toFixed(1);
        d += (d ? " L" + px + "," + y(prev).toFixed(1) + " L" : "M") + px + "," + y(p.usage).toFixed(1);
        prev = p.usage;
      }
      d += " L" + W + "," + y(last).toFixed(1);
    } else {
      d = "M0," + y(last).toFixed(1) + " L" + W + "," + y(last).toFixed(1);
    }
    const area = d + " L" + W + "," + H + " L" + (pts.length ? x(pts[0].at).toFixed(1) : 0) + "," + H + " Z";
    return svg("svg", { class: "history" + (last >= 0.9 ? " full" : ""), viewBox: "0 0 " + W + " " + H,
                        preserveAspectRatio: "none", "data-last": last.toFixed(3), role: "img",
                        "aria-label": name + " usage over the last hour, now " + (100 * last).toFixed(1) + " %" },
      svg("line", { class: "limit", x1: 0, x2: W, y1: y(0.9), y2: y(0.9) }),
      svg("path", { class: "area", d: area }), svg("path", { class: "line", d: d }));
  }

  function drawPools() {
    const data = state.pools;
    if (!data) return;
    $("#pools").replaceChildren(...data.items.map((p) => el("div", {
      class: "pool" + (p.conflict || p.invalid ? " conflict" : ""), "data-pool": p.name, title: p.invalid || "" },
      el("div", { class: "label" }, el("span", {}, p.name + (p.invalid ? " (invalid: " + p.invalid + ")" : "") +
        (p.conflict ? " (conflict)" : "") + (p.disabled && !p.invalid ? " (disabled)" : "")),
        el("span", { class: "muted" }, size(p, "used") + " / " + size(p, "total") + " used")),
      el("div", { class: "bar", title: p.cidrs.join(", ") },
        el("div", { style: "width:" + (100 * p.usage).toFixed(1) + "%" })),
      poolHistory(p.name, p.usage))));
  }

  async function loadTimeline() {
    state.timeline = await api("/v1/timeline?limit=30&window=" + state.window);
    drawTimeline();
  }

  // one row per IP: the holders as coloured bars over the window, each move a mark with the measured gap
  function drawTimeline() {
    const t = state.timeline;
    if (!t) return;
    const box = $("#timeline");
    const W = Math.max(240, box.clientWidth || 600);
    const LABEL = Math.min(150, Math.round(W * 0.3)), BAR = W - LABEL - 8, ROW = 42;
    const x = (s) => LABEL + Math.max(0, Math.min(BAR, (s - t.from) / Math.max(1, t.to - t.from) * BAR));
    $("#timeline-count").textContent = t.total > t.items.length ? "(" + t.items.length + " of " + t.total + " IPs)"
      : "(" + t.total + " IPs)";
    if (!t.items.length) { box.replaceChildren(el("p", { class: "empty" }, "no LoadBalancer IP yet")); return; }
    const defs = svg("svg", { width: 0, height: 0, style: "position:absolute" }, svg("defs", {},
      svg("pattern", { id: "nobody", width: 6, height: 6, patternUnits: "userSpaceOnUse",
                       patternTransform: "rotate(45)" },
        svg("rect", { width: 6, height: 6, fill: "#fff0f0" }), svg("line", { x1: 0, y1: 0, x2: 0, y2: 6,
                                                                        stroke: "#cf222e", "stroke-width": 2 }))));
    const rows = t.items.map((v) => {
      const g = svg("svg", { class: "vip", "data-ip": v.ip, viewBox: "0 0 " + W + " " + ROW, height: ROW });
      g.append(svg("text", { class: "ip", x: 0, y: 16 }, v.ip),
               svg("text", { class: "svc", x: 0, y: 29 }, (v.services[0] || "") + (v.services.length > 1 ?
                 " +" + (v.services.length - 1) : "")));
      for (const s of v.segments) {
        const x0 = x(s.from), x1 = x(s.to);
        g.append(svg("rect", { class: "seg" + (s.node ? "" : " none"), "data-node": s.node || "", x: x0.toFixed(1),
                               y: 14, width: Math.max(1, x1 - x0).toFixed(1), height: 14, rx: 2,
                               fill: s.node ? colorOf(s.node, t.nodes) : "url(#nobody)" },
          svg("title", {}, (s.node || "nobody") + ": " + clock(s.from) + " → " + clock(s.to))));
      }
      let labelEnd = [-1e9, -1e9];  // right end of the last gap label above / below the bar
      for (const m of v.moves) {
        const mx = x(m.at);
        const gap = m.gap_ms == null ? "" : String(Math.round(m.gap_ms));
        const mark = svg("g", { class: "move", "data-gap": gap },
          svg("line", { x1: mx, x2: mx, y1: 11, y2: 31 }),
          svg("title", {}, clock(m.at) + " " + (m.from || "nobody") + " → " + (m.to || "nobody") + " (" + m.reason +
            ")" + (gap ? ": the IP had no live holder for " + gapText(m.gap_ms) : "")));
        if (gap) {
          const text = gapText(m.gap_ms), wide = 7 * text.length;  // 10 px bold: ~6.5 px a character
          const lx = Math.min(mx + 3, W - wide), below = lx < labelEnd[0] + 6;
          if (below && lx < labelEnd[1] + 6) mark.setAttribute("data-crowded", "1");  // the tooltip still says it
          else {
            mark.append(svg("text", { class: "gap", x: lx, y: below ? 40 : 10 }, text));
            labelEnd[below ? 1 : 0] = lx + wide;
          }
        }
        g.append(mark);
      }
      return g;
    });
    const ticks = svg("svg", { class: "axis", viewBox: "0 0 " + W + " 16", height: 16 });
    const span = t.to - t.from;
    for (let k = 0; k <= 4; k++) {
      const s = t.from + span * k / 4, tx = x(s);
      const label = k === 4 ? "now" : "−" + (span * (4 - k) / 4 >= 3600 ? (span * (4 - k) / 4 / 3600).toFixed(1) + " h"
        : Math.round(span * (4 - k) / 4 / 60) + " min");
      ticks.append(svg("line", { x1: tx, x2: tx, y1: 0, y2: 4 }),
                   svg("text", { x: Math.min(Math.max(tx - 12, LABEL), W - 24), y: 14 }, label));
    }
    box.replaceChildren(defs, ...rows, ticks);
    $("#timeline-legend").replaceChildren(...t.nodes.map((n) => el("span", {},
      el("i", { style: "background:" + colorOf(n, t.nodes) }), n)),
      el("span", {}, el("i", { style: "background:#fff0f0;border:1px solid #cf222e" }), "nobody"),
      el("span", {}, "mark = move, red = how long the IP had no live holder"));
  }

  async function loadNodes() {
    const data = await api("/v1/nodes");
    $("#nodes tbody").replaceChildren(...data.items.map((n) => el("tr", { "data-node": n.node },
      el("td", { class: "node" }, ...breakable(n.node)),
      el("td", {}, n.alive ? el("span", { class: "ok" }, "yes") : el("span", { class: "bad" }, "no")),
      el("td", {}, ago(n.heartbeat_age_s)),
      el("td", {}, el("div", { class: "links" }, ...n.interfaces.map((i) => el("span", {
        class: "badge " + (i.up ? "on" : "off"), title: i.addresses.join(", ") }, i.name + (i.up ? " up" : " down"))))),
      el("td", { class: "count" }, String(n.assignments)))));
  }

  function feedItem(ev) {
    let text;
    if (ev.type === "move") text = ev.ip + " " + (ev.from || "—") + " → " + (ev.to || "—") +
      (ev.gap_ms != null ? " (gap " + gapText(ev.gap_ms) + ")" : "");
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
                    assignments: () => loadServices(false), events: loadEvents, summary: loadSummary,
                    timeline: loadTimeline };
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
            if (ev === "part") schedule([d.part, "summary"].concat(d.part === "assignments" ? ["timeline"] : []));
            else if (ev === "event") { $("#feed").prepend(feedItem(d)); schedule(["timeline"]); }
            else if (ev === "error") showError(d.message ? "live feed: " + d.message : "");
            else if (ev === "hello") schedule(["services", "pools", "nodes", "summary", "timeline"]);
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
    $("#auth").hidden = true; schedule(["services", "pools", "nodes", "events", "summary", "timeline"]);
  });
  $("#window").addEventListener("change", (e) => { state.window = Number(e.target.value); schedule(["timeline"]); });
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { drawTimeline(); drawPools(); }, 100);
  });
  schedule(["services", "pools", "nodes", "events", "summary", "timeline"]);
  setInterval(() => schedule(["nodes"]), 5000);  // heartbeat ages tick even without changes
  setInterval(() => schedule(["timeline", "pools"]), 30000);  // the windows slide
  watch();
})();
