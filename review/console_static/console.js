// Bastion moderators' console: one page, no framework, no build step, nothing from a CDN.
// The reviewer key lives in this tab's sessionStorage and goes out only as a Bearer header.
// Every text from the server is put in the page with textContent, never as HTML.
"use strict";

const KEY = "bastion.key";
const PENDING = "bastion.pending-submissions";
const COLORS = { block: "#c0392b", review: "#d68910", allow: "#27ae60", reports: "#2e86c1" };

const state = {
  me: null, claim: null, task: null, cursor: 0, labels: {}, revealed: {}, categories: [], media: {}, loading: new Set(), players: {},
  submitted: false, monitorTimer: null, retryTimer: null, jobsTimer: null, models: null,
  activeJobs: new Set(),
};

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
function toast(msg, bad) {
  const t = $("toast");
  t.textContent = msg; t.className = bad ? "bad" : ""; t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}
function age(s) {
  if (s == null) return "";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
function clock(ts) { return new Date(ts * 1000).toISOString().slice(11, 19); }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const key = sessionStorage.getItem(KEY);
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                cache: "no-store", credentials: "omit" });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const msg = (data && data.error) || `HTTP ${r.status}`;
    if (r.status === 401) signOut(msg);
    throw new ApiError(r.status, msg);
  }
  return data;
}

// -- sign-in ------------------------------------------------------------------------------
async function signIn(ev) {
  ev.preventDefault();
  const key = $("key").value.trim();
  $("key").value = "";
  sessionStorage.setItem(KEY, key);
  try {
    state.me = await api("POST", "/v1/console/session");
    $("signin-error").textContent = "";
    showChrome();
    location.hash = "#/queue";
    route();
  } catch (e) {
    sessionStorage.removeItem(KEY);
    $("signin-error").textContent = e.message;
  }
}
function signOut(msg) {
  sessionStorage.removeItem(KEY);
  state.me = null;
  $("bar").hidden = true;
  stopMonitor();
  show("signin");
  if (msg) $("signin-error").textContent = msg;
}
function showChrome() {
  const me = state.me;
  $("bar").hidden = false;
  $("who").textContent = `${me.name} (${me.role}: ${me.tenants.join(", ")})`;
  for (const n of document.querySelectorAll(".mlops-only")) n.hidden = me.role !== "mlops";
  showExposure(me.exposure_today);
}
function showExposure(n) {
  const caps = Object.values(state.me.daily_exposure_caps || {});
  const cap = caps.length ? Math.max(...caps) : null;
  $("exposure").textContent = `exposure today: ${n}${cap ? " / " + cap : ""}`;
  state.me.exposure_today = n;
}

// -- views --------------------------------------------------------------------------------
function show(name) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${name}`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.id === `nav-${name}`);
}
async function route() {
  if (!state.me) { show("signin"); return; }
  const name = (location.hash.replace(/^#\//, "") || "queue").split("?")[0];
  stopMonitor();
  show(name);
  try {
    if (name === "queue") await loadQueue();
    else if (name === "review") await ensureClaim();
    else if (name === "overview") await loadOverview();
    else if (name === "monitor") startMonitor();
    else if (name === "audit") await loadAudit();
    else if (name === "moderators") await loadModerators();
    else if (name === "models") { await loadModels(); startJobsPoll(); }
    else if (name === "drift") await loadDrift();
  } catch (e) { toast(e.message, true); }
}

// -- queue --------------------------------------------------------------------------------
function reasonText(r) {
  if (r.factor && r.factor.startsWith("severity")) return `${r.category} ${r.score} (threshold ${r.threshold})`;
  if (r.factor) return `${r.factor}${r.value !== undefined ? " ×" + r.value : ""}`;
  return JSON.stringify(r);
}
async function loadQueue() {
  const params = new URLSearchParams();
  if ($("filter-category").value) params.set("category", $("filter-category").value);
  if ($("filter-reason").value) params.set("reason", $("filter-reason").value);
  const data = await api("GET", `/v1/console/queue?${params}`);
  const body = $("queue-table").tBodies[0];
  body.replaceChildren();
  const cats = new Set([...$("filter-category").options].map((o) => o.value));
  for (const t of data.tasks) {
    for (const c of t.categories) if (!cats.has(c)) { $("filter-category").append(el("option", { value: c, text: c })); cats.add(c); }
    const why = el("ul", { class: "why" }, ...t.reasons.map((r) => el("li", { text: reasonText(r) })));
    body.append(el("tr", { "data-task": t.task_id },
      el("td", { text: t.priority.toFixed(3) }), el("td", { text: t.tenant }), el("td", {}, why),
      el("td", { text: age(t.age_s) }), el("td", { text: `${t.slots_done}/${t.slots}` }),
      el("td", { text: t.items }), el("td", { text: t.reports }), el("td", { text: t.events })));
  }
  $("queue-count").textContent = `${data.tasks.length} open`;
}

// -- session review -----------------------------------------------------------------------
async function ensureClaim() {
  if (state.claim && !state.submitted) { renderTask(); return; }
  await claimNext();
}
async function claimNext() {
  for (const url of Object.values(state.media)) URL.revokeObjectURL(url);
  state.claim = null; state.task = null; state.labels = {}; state.revealed = {}; state.media = {}; state.loading = new Set(); state.players = {}; state.cursor = 0;
  state.submitted = false;
  let data;
  try {
    data = await api("POST", "/v1/console/claim");
  } catch (e) {
    $("review-body").hidden = true; $("review-empty").hidden = false;
    $("review-empty").textContent = e.message;
    return;
  }
  if (!data.claim) {
    $("review-body").hidden = true; $("review-empty").hidden = false;
    $("review-empty").textContent = "Nothing to review.";
    return;
  }
  state.claim = data.claim; state.task = data.task;
  const cats = new Set();
  for (const it of data.task.items) {
    for (const c of Object.keys(it.scores || {})) cats.add(c);
    // an image is labelled for its tenant's image categories too, scored yet or not
    for (const c of (it.media && it.media.categories) || []) cats.add(c);
  }
  state.categories = [...cats].sort();
  renderTask();
}
function flagged(it) { return it.source !== "context"; }
function renderTask() {
  const task = state.task;
  $("review-empty").hidden = true; $("review-body").hidden = false;
  $("review-tenant").textContent = `${task.tenant} · ${task.group_key} · slot ${state.claim.slot + 1} of ${task.slots}`;
  const legend = $("keys-legend");
  legend.replaceChildren(el("span", { text: "Keys: " }),
    ...state.categories.map((c, i) => el("kbd", { text: `${i + 1} ${c}` })),
    el("kbd", { text: "0 none" }), el("kbd", { text: "r reveal" }), el("kbd", { text: "j/k next/previous item" }),
    el("kbd", { text: "Enter submit" }), el("kbd", { text: "s skip" }), el("kbd", { text: "n next session" }));
  const list = $("items");
  list.replaceChildren();
  task.items.forEach((it, i) => {
    const li = el("li", { class: "item" + (flagged(it) ? " flagged" : "") + (i === state.cursor ? " current" : ""),
                          "data-item": it.item_id });
    const text = el("div", { class: "text" });
    const revealable = it.text_kept || it.media_kept;
    if (state.revealed[it.item_id] !== undefined) {
      // a clip's words are its transcript, shown with their times in its media view
      if (state.revealed[it.item_id].text && it.modality !== "audio") text.append(...markText(state.revealed[it.item_id]));
    } else {
      text.classList.add("masked");
      const what = it.modality === "image" ? "the image and the text it shows"
        : it.modality === "audio" ? "the transcript and the clip" : `${it.text_length} characters`;
      text.textContent = revealable ? `Masked (${what}): press r or click to reveal`
                                    : `The tenant keeps no ${it.modality === "text" ? "text" : "media or text"} for review (digest only)`;
      if (revealable) text.addEventListener("click", () => { state.cursor = i; reveal(); });
    }
    const scores = Object.entries(it.scores || {}).sort((a, b) => b[1] - a[1]).slice(0, 4)
      .map(([c, s]) => el("span", { class: "score" + (s >= 0.5 ? " high" : ""), text: `${c} ${s.toFixed(2)}` }));
    const label = state.labels[it.item_id];
    const chosen = label === undefined ? "unlabelled" : label.size === 0 ? "none" : [...label].join(", ");
    const lang = it.language ? [el("span", { class: "lang", title: "language (ISO 639-1)", text: it.language })] : [];
    li.append(el("div", { class: "meta" }, el("span", { text: `${it.user_id || "?"} · ${clock(it.ts)} · model: ${it.decision || "-"}` }), ...lang,
                 ...scores, ...(it.keyword_hits || []).map((k) => el("span", { class: "hit", text: `keyword ${k}` }))),
              ...mediaView(it, i), text, el("div", { class: "label", text: `label: ${chosen}` }));
    list.append(li);
  });
  $("reasons").replaceChildren(...task.reasons.map((r) => el("li", { text: reasonText(r) })));
  $("timeline").replaceChildren(...task.timeline.map((x) => el("li", {
    text: x.kind === "report"
      ? `${clock(x.ts)} report by ${x.reporter}: ${x.reason}${x.comment ? " (" + x.comment + ")" : ""}`
      : `${clock(x.ts)} ${x.kind}: ${x.user_id || "?"} → ${x.target_user || "?"}` })));
  if (!task.timeline.length) $("timeline").append(el("li", { class: "muted", text: "none" }));
}
function markText(r) {
  const out = []; let at = 0;
  for (const s of r.keyword_spans || []) {
    if (s.start < at) continue;
    out.push(document.createTextNode(r.text.slice(at, s.start)));
    out.push(el("mark", { title: `keyword rule ${s.rule}`, text: r.text.slice(s.start, s.end) }));
    at = s.end;
  }
  out.push(document.createTextNode(r.text.slice(at)));
  return out;
}
async function reveal() {
  const it = state.task && state.task.items[state.cursor];
  if (!it || !(it.text_kept || it.media_kept) || state.revealed[it.item_id] !== undefined) return;
  const r = await api("POST", "/v1/console/reveal", { token: state.claim.token, item_id: it.item_id });
  state.revealed[it.item_id] = r;
  showExposure(r.exposure_today);
  if (it.media_kept) await loadMedia(it, false);
  renderTask();
}

// Images and voice. The server sends an image blurred (shrunk to 24 px) until the item is
// revealed, and a clip only once revealed; both are fetched with the reviewer's key and shown
// from blob: URLs.
async function loadMedia(it, blurred) {
  const key = sessionStorage.getItem(KEY);
  const q = new URLSearchParams({ token: state.claim.token, item_id: it.item_id, blurred: String(blurred) });
  const r = await fetch(`/v1/console/media?${q}`, { headers: { Authorization: `Bearer ${key}` },
                                                    cache: "no-store", credentials: "omit" });
  if (!r.ok) {
    let msg = `HTTP ${r.status}`;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new ApiError(r.status, msg);
  }
  const old = state.media[it.item_id];
  state.media[it.item_id] = URL.createObjectURL(await r.blob());
  if (old) URL.revokeObjectURL(old);
}
function mediaFacts(it) {
  const m = it.media || {};
  if (it.modality === "image") return `image ${m.format || "?"} ${m.width}×${m.height}, ${Math.round((m.bytes || 0) / 1024)} KiB`;
  const cues = m.cues || {};
  const parts = [`audio ${m.format || "?"} ${(m.duration_s || 0).toFixed(1)} s at ${m.sample_rate} Hz`];
  if (cues.loudness_lufs != null) parts.push(`loudness ${cues.loudness_lufs} LUFS`);
  if (cues.max_momentary_lufs != null) parts.push(`loudest ${cues.max_momentary_lufs} LUFS`);
  if (cues.speech_rate_wps != null) parts.push(`${cues.speech_rate_wps} words/s`);
  return parts.join(" · ");
}
function spanOf(r) { return r && r.span && (Array.isArray(r.span) ? { start: r.span[0], end: r.span[1] } : r.span); }
function mediaView(it, i) {
  if (it.modality !== "image" && it.modality !== "audio") return [];
  const box = el("div", { class: "media" }, el("div", { class: "muted", text: mediaFacts(it) }));
  const revealed = state.revealed[it.item_id];
  const reasons = ((revealed && revealed.media) || it.media || {}).reasons || [];
  const cues = reasons.filter((r) => r.kind === "acoustic" || r.kind === "hash" || r.kind === "image_model");
  for (const r of cues) {
    box.append(el("div", { class: "cue", text: r.kind === "acoustic"
      ? `acoustic cue ${r.cue}: ${r.value} (threshold ${r.threshold})`
      : r.kind === "hash" ? `known-bad image list ${r.rule}: ${r.distance} bits from a listed hash`
      : `image ${r.category} ${r.score.toFixed(2)} (threshold ${r.threshold})` }));
  }
  const url = state.media[it.item_id];
  if (it.modality === "image") {
    if (!it.media_kept) box.append(el("div", { class: "muted", text: "The tenant keeps no images for review: hash, size and text only" }));
    else if (url) {
      const img = el("img", { class: "thumb" + (revealed ? "" : " blurred"), src: url, alt: revealed ? "the item's image" : "blurred preview: reveal to see" });
      if (!revealed) img.addEventListener("click", () => { state.cursor = i; reveal().catch((e) => toast(e.message, true)); });
      box.append(img);
    } else if (!state.loading.has(it.item_id)) {
      state.loading.add(it.item_id);
      loadMedia(it, true).then(renderTask).catch((e) => toast(e.message, true));
    }
    return [box];
  }
  if (!revealed) return [box];
  const m = revealed.media || {};
  // one player per item, kept across renders: moving a playing element keeps it playing,
  // a new one would stop the span mid-way
  let player = null;
  if (it.media_kept && url) {
    player = state.players[it.item_id];
    if (!player || player.dataset.src !== url) {
      player = el("audio", { controls: "", src: url, preload: "auto", "data-src": url });
      state.players[it.item_id] = player;
    }
  }
  const spans = reasons.map(spanOf).filter((s) => s && s.end > s.start);
  const transcript = el("div", { class: "transcript" });
  for (const [start, end, word] of m.words || []) {
    const hot = spans.some((s) => start < s.end && end > s.start);
    const w = el(hot ? "mark" : "span", { class: "word", title: `${start.toFixed(2)}–${end.toFixed(2)} s`, text: word });
    if (player) w.addEventListener("click", () => playSpan(player, start, end));
    transcript.append(w, document.createTextNode(" "));
  }
  box.append(transcript);
  if (player) {
    box.append(player);
    spans.forEach((s, k) => box.append(el("button", { type: "button", class: "play-span", "data-span": String(k),
      text: `▶ play flagged span ${s.start.toFixed(1)}–${s.end.toFixed(1)} s` })));
    box.querySelectorAll("button.play-span").forEach((b) => b.addEventListener("click", () => {
      const s = spans[Number(b.dataset.span)]; playSpan(player, s.start, s.end);
    }));
  } else {
    box.append(el("div", { class: "muted", text: "No audio kept (the tenant keeps none, or the speaker did not consent): transcript only" }));
  }
  return [box];
}
function playSpan(player, start, end) {
  player.currentTime = start;
  const stop = () => { if (player.currentTime >= end) { player.pause(); player.removeEventListener("timeupdate", stop); } };
  player.addEventListener("timeupdate", stop);
  player.dataset.span = `${start}-${end}`;
  player.play().catch((e) => toast(e.message, true));
}
function toggle(category) {
  const it = state.task.items[state.cursor];
  const cur = state.labels[it.item_id] || new Set();
  if (category === null) state.labels[it.item_id] = new Set();
  else { cur.has(category) ? cur.delete(category) : cur.add(category); state.labels[it.item_id] = cur; }
  renderTask();
}
function move(delta) {
  const n = state.task.items.length;
  state.cursor = Math.max(0, Math.min(n - 1, state.cursor + delta));
  renderTask();
  const cur = document.querySelector("#items li.current");
  if (cur) cur.scrollIntoView({ block: "nearest" });
}

// Submissions are kept in localStorage until the server has them: a lost connection loses no
// label, and resending the same submission_id is harmless (the server makes it idempotent).
function pending() { return JSON.parse(localStorage.getItem(PENDING) || "[]"); }
function setPending(list) { localStorage.setItem(PENDING, JSON.stringify(list)); }
async function flushPending() {
  let list = pending();
  for (const sub of list) {
    try {
      await api("POST", "/v1/review/submit", sub.body);
      list = pending().filter((x) => x.body.submission_id !== sub.body.submission_id);
      setPending(list);
      $("submit-status").textContent = "Saved.";
    } catch (e) {
      if (e instanceof ApiError && e.status >= 400 && e.status < 500 && e.status !== 429) {
        setPending(pending().filter((x) => x.body.submission_id !== sub.body.submission_id));
        $("submit-status").textContent = `Not saved: ${e.message}`;
        toast(e.message, true);
      } else {
        $("submit-status").textContent = "Connection lost: the labels are kept here and will be sent again.";
        clearTimeout(state.retryTimer);
        state.retryTimer = setTimeout(flushPending, 3000);
        return false;
      }
    }
  }
  return true;
}
async function submit() {
  if (!state.task || state.submitted) return;
  const missing = state.task.items.filter((it) => flagged(it) && state.labels[it.item_id] === undefined);
  if (missing.length) { toast(`Label every flagged item first (${missing.length} left).`, true); return; }
  const labels = [];
  for (const [item_id, set] of Object.entries(state.labels))
    for (const c of state.categories) labels.push({ item_id, category: c, value: set.has(c) ? 1 : 0 });
  const body = { token: state.claim.token, submission_id: crypto.randomUUID(), labels };
  setPending([...pending(), { body }]);
  state.submitted = true;
  $("submit-status").textContent = "Sending…";
  if (await flushPending()) toast("Labels saved. Press n for the next session.");
}
async function skip() {
  if (!state.claim) return;
  if (!state.submitted) {
    try { await api("POST", "/v1/review/release", { token: state.claim.token }); } catch (e) { toast(e.message, true); }
  }
  await claimNext();
}

function onKey(ev) {
  if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const view = (location.hash.replace(/^#\//, "") || "queue");
  if (view === "queue" && ev.key === "c") { location.hash = "#/review"; return; }
  if (view !== "review" || !state.task) return;
  const k = ev.key;
  if (k >= "1" && k <= "9" && state.categories[Number(k) - 1] !== undefined && !state.submitted) toggle(state.categories[Number(k) - 1]);
  else if (k === "0" && !state.submitted) toggle(null);
  else if (k === "j" || k === "ArrowDown") move(1);
  else if (k === "k" || k === "ArrowUp") move(-1);
  else if (k === "r") reveal().catch((e) => toast(e.message, true));
  else if (k === "Enter") submit();
  else if (k === "s") skip();
  else if (k === "n") { if (state.submitted) claimNext(); else toast("Submit or skip this session first.", true); }
  else return;
  ev.preventDefault();
}

// -- charts (SVG, drawn here) ---------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
  return n;
}
// A time series chart: one line per series over the buckets (unix seconds), with axes.
function lineChart(box, buckets, series, label) {
  const W = 760, H = 220, L = 48, B = 28, T = 10, R = 110;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "aria-label": label });
  const max = Math.max(1, ...Object.values(series).flat());
  const x = (i) => L + (buckets.length <= 1 ? 0 : (i * (W - L - R)) / (buckets.length - 1));
  const y = (v) => H - B - (v * (H - B - T)) / max;
  root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  root.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  for (const v of [...new Set([0, Math.round(max / 2), max])]) {
    const t = svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" });
    t.textContent = v; root.append(t);
  }
  const every = Math.max(1, Math.ceil(buckets.length / 8));
  buckets.forEach((b, i) => {
    if (i % every) return;
    const t = svg("text", { x: x(i), y: H - 8, "text-anchor": "middle", class: "tick" });
    t.textContent = clock(b).slice(0, 5); root.append(t);
  });
  let row = 0;
  for (const [name, values] of Object.entries(series)) {
    const color = COLORS[name] || "#555";
    const pts = values.map((v, i) => `${x(i)},${y(v)}`).join(" ");
    root.append(svg("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2, "data-series": name }));
    const lx = W - R + 12, ly = T + 14 + row * 18;
    root.append(svg("rect", { x: lx, y: ly - 9, width: 10, height: 10, fill: color }));
    const t = svg("text", { x: lx + 15, y: ly, class: "legend" });
    t.textContent = `${name} (${values.reduce((a, b) => a + b, 0)})`; root.append(t);
    row += 1;
  }
  box.replaceChildren(root);
}
// A bar chart (histogram): labelled bars, stacked by series.
function barChart(box, labels, series, label) {
  const n = Math.max(labels.length, 1), bh = 20;
  const W = 370, L = 90, T = 6, R = 40, H = T + n * (bh + 4) + 4;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "aria-label": label });
  const totals = labels.map((_, i) => Object.values(series).reduce((a, s) => a + s[i], 0));
  const max = Math.max(1, ...totals);
  labels.forEach((name, i) => {
    const yy = T + i * (bh + 4);
    const t = svg("text", { x: L - 6, y: yy + bh * 0.7, "text-anchor": "end", class: "tick" });
    t.textContent = name; root.append(t);
    let xx = L;
    for (const [s, values] of Object.entries(series)) {
      const w = (values[i] * (W - L - R)) / max;
      if (w > 0) root.append(svg("rect", { x: xx, y: yy, width: w, height: bh, fill: COLORS[s] || "#2e86c1", "data-series": s }));
      xx += w;
    }
    const v = svg("text", { x: xx + 4, y: yy + bh * 0.7, class: "tick" });
    v.textContent = totals[i]; root.append(v);
  });
  box.replaceChildren(root);
}

// -- dashboards ---------------------------------------------------------------------------
async function loadOverview() {
  const d = await api("GET", "/v1/console/overview?hours=24&bucket_s=3600");
  const total = Object.values(d.decisions).flat().reduce((a, b) => a + b, 0);
  $("overview-cards").replaceChildren(
    card("Decisions", total), card("Blocked", sum(d.decisions.block)), card("To review", sum(d.decisions.review)),
    card("Reports", sum(d.reports)), card("Open tasks", d.queue.open), card("Oldest open", age(d.queue.oldest_s)),
    card("Moderator minutes saved", d.minutes_saved.minutes,
         `${d.minutes_saved.automatic_decisions} automatic decisions × ${d.minutes_saved.seconds_per_item} s per item` +
         (d.minutes_saved.measured_from_claims ? " (measured from claims)" : " (default until claims measure it)")));
  lineChart($("chart-decisions"), d.buckets, d.decisions, "decisions per hour");
  lineChart($("chart-reports"), d.buckets, { reports: d.reports }, "reports per hour");
  const cats = Object.keys(d.by_category).slice(0, 8);
  barChart($("chart-categories"), cats, { block: cats.map((c) => d.by_category[c].block), review: cats.map((c) => d.by_category[c].review) }, "categories");
  barChart($("chart-ages"), d.queue.age_histogram.map((b) => b.label), { reports: d.queue.age_histogram.map((b) => b.n) }, "open tasks by age");
  $("tenant-table").tBodies[0].replaceChildren(...Object.entries(d.by_tenant).map(([t, v]) =>
    el("tr", {}, el("td", { text: t }), el("td", { text: v.block || 0 }), el("td", { text: v.review || 0 }), el("td", { text: v.allow || 0 }))));
  $("language-table").tBodies[0].replaceChildren(...Object.entries(d.by_language || {}).map(([l, v]) =>
    el("tr", {}, el("td", { text: l }), el("td", { text: v.block || 0 }), el("td", { text: v.review || 0 }), el("td", { text: v.allow || 0 }))));
}
function sum(a) { return (a || []).reduce((x, y) => x + y, 0); }
function card(title, value, hint) {
  return el("div", { class: "card", title: hint || "" }, el("div", { class: "muted", text: title }), el("div", { class: "big", text: value }));
}
async function refreshMonitor() {
  const d = await api("GET", "/v1/console/monitor");
  $("monitor-total").textContent = d.total;
  $("monitor-updated").textContent = clock(d.now);
  lineChart($("chart-monitor"), d.buckets, d.decisions, "decisions per 30 s, last 15 minutes");
  $("monitor-latest").tBodies[0].replaceChildren(...d.latest.map((e) =>
    el("tr", { class: e.decision }, el("td", { text: clock(e.ts) }), el("td", { text: e.tenant }), el("td", { text: e.item_id }),
       el("td", { text: e.decision }), el("td", { text: e.category || "" }))));
}
function startMonitor() {
  refreshMonitor().catch((e) => toast(e.message, true));
  state.monitorTimer = setInterval(() => refreshMonitor().catch(() => {}), 2000);
}
function stopMonitor() {
  clearInterval(state.monitorTimer); state.monitorTimer = null;
  clearInterval(state.jobsTimer); state.jobsTimer = null;
}
async function loadAudit() {
  const d = await api("GET", "/v1/console/audit?limit=200");
  $("audit-table").tBodies[0].replaceChildren(...d.entries.map((e) =>
    el("tr", {}, el("td", { text: new Date(e.ts * 1000).toISOString().replace("T", " ").slice(0, 19) }),
       el("td", { text: e.actor }), el("td", { text: e.role }), el("td", { text: e.tenant || "" }),
       el("td", { text: e.action }), el("td", { text: e.target || "" }))));
}

function pct(x) { return x == null ? "–" : `${(100 * x).toFixed(1)}%`; }
async function loadModerators() {
  const d = await api("GET", "/v1/console/moderators");
  $("moderators-table").tBodies[0].replaceChildren(...d.moderators.map((m) =>
    el("tr", {}, el("td", { text: m.moderator }), el("td", { text: m.sessions }), el("td", { text: m.items }),
       el("td", { text: m.items_per_hour_of_work ?? "–" }), el("td", { text: m.median_s_per_item ?? "–" }),
       el("td", { text: `${pct(m.agreement)} (${m.pairs} pairs)` }),
       el("td", { text: `${pct(m.gold_accuracy)} (${m.gold_labels} gold)` }),
       el("td", { text: m.reliability.map((r) => `${r.category} ${r.sensitivity.toFixed(2)}/${r.specificity.toFixed(2)}`).join(", ") }))));
}

// -- models, jobs and drift (ML ops) -------------------------------------------------------
function utc(ts) { return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : ""; }
function fmt(x) { return x == null ? "–" : typeof x === "number" ? String(Math.round(x * 10000) / 10000) : String(x); }
function button(text, cls, onClick, disabled) {
  const b = el("button", { type: "button", class: cls, text });
  b.disabled = !!disabled;
  b.addEventListener("click", () => onClick().catch((e) => toast(e.message, true)));
  return b;
}
async function loadModels() {
  const d = await api("GET", "/v1/console/models");
  state.models = d;
  $("models-name").textContent = d.model;
  $("models-cards").replaceChildren(card("Champion", d.champion ? `version ${d.champion}` : "none"),
    card("Champion history", d.history.join(" → ") || "–"), card("Versions", d.versions.length));
  const can = d.can_change_champion;
  $("rollback").disabled = !can || d.history.length < 2;
  $("category-submit").disabled = !can;
  const tenant = $("category-tenant").value;
  $("category-tenant").replaceChildren(...(d.tenants || []).map((t) => el("option", { value: t, text: t })));
  if (tenant) $("category-tenant").value = tenant;
  $("models-note").textContent = can ? "Promotion runs the gate in a Ray job: the version is promoted only if it passes."
    : "Your key does not cover every tenant: promoting and rolling back need an ML-ops key for all tenants.";
  $("versions-table").tBodies[0].replaceChildren(...d.versions.map((v) => {
    const champion = v.aliases.includes("champion");
    const verdict = v.validation_status || "not gated";
    return el("tr", { "data-version": v.version },
      el("td", { text: v.version }), el("td", { text: v.aliases.map((a) => "@" + a).join(" ") }),
      el("td", { text: v.kind || "" }), el("td", { text: utc(v.created) }),
      el("td", { class: verdict === "passed" ? "ok" : verdict === "failed" ? "bad" : "", text: verdict }),
      el("td", { class: "msg", text: v.gate_failures.join(", ") }),
      el("td", {}, button("Gate report", "small secondary", () => showGate(v.version)), " ",
         champion ? "" : button("Promote", "small", () => promote(v.version), !can)));
  }));
  $("models-audit").tBodies[0].replaceChildren(...d.audit.map((e) => el("tr", {},
    el("td", { text: (e.at || "").replace("T", " ").replace("Z", "") }), el("td", { text: e.action }),
    el("td", { text: e.version || "" }), el("td", { text: e.previous || e.champion || "" }),
    el("td", { text: e.actor || "" }), el("td", { class: "msg", text: e.reason || (e.failures || []).join("; ") }))));
  await loadJobs();
}
function categoryExamples() {
  return [...new Set($("category-examples").value.split("\n").map((t) => t.trim()).filter(Boolean))];
}
function countExamples() {
  const n = categoryExamples().length;
  $("category-count").textContent = `${n} example${n === 1 ? "" : "s"}${n < 10 ? ` (at least 10)` : ""}`;
}
async function addCategory(ev) {
  ev.preventDefault();
  const examples = categoryExamples();
  if (examples.length < 10) { toast(`${examples.length} distinct examples: a new category needs at least 10, one a line.`, true); return; }
  const body = { tenant: $("category-tenant").value, name: $("category-name").value.trim(),
                 description: $("category-description").value.trim(), examples,
                 target_precision: Number($("category-target").value) };
  const r = await api("POST", "/v1/console/categories", body);
  toast(r.message);
  state.activeJobs.add(r.job_id);
  await loadJobs();
}
async function showGate(version) {
  const d = await api("GET", `/v1/console/models/${encodeURIComponent(version)}`);
  $("gate-panel").hidden = false;
  $("gate-version").textContent = d.version;
  $("gate-verdict").textContent = d.report ? `${d.report.verdict}, run ${d.report_at} against champion ${d.report.champion || "none"}`
                                           : "no gate has run on this version yet";
  $("gate-reason").textContent = d.reason ? `Why it was made: ${d.reason}` : "";
  const checks = d.report ? d.report.checks : [];
  $("gate-table").tBodies[0].replaceChildren(...checks.map((c) => el("tr", { class: c.passed === false ? "bad" : "" },
    el("td", { text: c.tenant || "all" }), el("td", { text: c.category || "" }), el("td", { text: c.name }),
    el("td", { text: fmt(c.value) }), el("td", { text: fmt(c.threshold) }),
    el("td", { text: c.passed == null ? "not measured" : c.passed ? "yes" : "NO" }), el("td", { class: "msg", text: c.message }))));
}
function reasonGiven() {
  const reason = $("change-reason").value.trim();
  if (reason.length < 3) { toast("Say why in Reason first: it is kept in the audit trail.", true); $("change-reason").focus(); return null; }
  return reason;
}
async function promote(version) {
  const reason = reasonGiven();
  if (!reason || !confirm(`Run the gate on version ${version} against the champion and promote it if it passes?`)) return;
  const r = await api("POST", `/v1/console/models/${encodeURIComponent(version)}/promote`, { reason });
  toast(r.message);
  state.activeJobs.add(r.job_id);
  await loadJobs();
}
async function rollback() {
  const h = (state.models && state.models.history) || [];
  const reason = reasonGiven();
  if (!reason || !confirm(`Move @champion from version ${h[h.length - 1]} back to version ${h[h.length - 2]}?`)) return;
  const r = await api("POST", "/v1/console/models/rollback", { reason });
  toast(r.message);
  await loadModels();
}
async function loadJobs() {
  const d = await api("GET", "/v1/console/jobs");
  $("jobs-error").hidden = !d.jobs_error; $("jobs-error").textContent = d.jobs_error || "";
  const active = new Set(d.jobs.filter((j) => j.status === "PENDING" || j.status === "RUNNING").map((j) => j.job_id));
  const finished = [...state.activeJobs].some((id) => !active.has(id));
  state.activeJobs = active;
  $("jobs-table").tBodies[0].replaceChildren(...d.jobs.map((j) => el("tr", { "data-job": j.job_id, "data-status": j.status },
    el("td", { text: j.job_id }), el("td", { text: j.kind }),
    el("td", { class: j.status === "SUCCEEDED" ? "ok" : j.status === "FAILED" ? "bad" : "", text: j.status }),
    el("td", { text: j.version ? `version ${j.version}` : j.category ? `category ${j.category}` : j.rule ? `rule ${j.rule}` : "" }),
    el("td", { class: "msg", text: [j.actor, j.reason].filter(Boolean).join(": ") }),
    el("td", { text: utc(j.start_time) }), el("td", { text: utc(j.end_time) }), el("td", { class: "msg" }, longText(j.message || "")))));
  if (!d.jobs.length) $("jobs-table").tBodies[0].append(el("tr", {}, el("td", { class: "muted", colspan: "8", text: "no jobs yet" })));
  $("triggers-table").tBodies[0].replaceChildren(...d.triggers.map((t) => el("tr", {},
    el("td", { text: utc(t.at) }), el("td", { text: t.action }), el("td", { text: t.rule }),
    el("td", { class: "msg", text: t.reasons.join("; ") }), el("td", { text: t.job_id || "" }), el("td", { class: "msg", text: t.message }))));
  if (!d.triggers.length) $("triggers-table").tBodies[0].append(el("tr", {}, el("td", { class: "muted", colspan: "6",
    text: "no trigger has fired yet (policy retraining.triggers)" })));
  $("jobs-updated").textContent = `updated ${clock(Date.now() / 1000)}`;
  if (finished && location.hash === "#/models") await loadModels();
}
// A long message (Ray's, with the job's last log lines) folded after its first 160 characters.
function longText(text) {
  if (text.length <= 200) return document.createTextNode(text);
  return el("details", {}, el("summary", { text: text.slice(0, 160) + "…" }), el("pre", { class: "log", text }));
}
function startJobsPoll() {
  state.jobsTimer = setInterval(() => loadJobs().catch(() => {}), 3000);
}
function driftVerdict(r) {
  return r.drift ? "DRIFT" : r.performance_drop ? "PRECISION DROP" : r.validation_failures ? "INVALID DATA" : "no drift";
}
async function loadDrift() {
  const d = await api("GET", "/v1/console/drift?limit=50");
  $("drift-table").tBodies[0].replaceChildren(...d.runs.map((r) => {
    const tr = el("tr", { class: "clickable", "data-run": r.run_id },
      el("td", { text: utc(r.at) }), el("td", { text: r.tenant }), el("td", { text: r.model_version || "" }),
      el("td", { class: driftVerdict(r) === "no drift" ? "ok" : "verdict-drift", text: driftVerdict(r) }),
      el("td", { text: r.n_window }), el("td", { text: r.validation_failures }));
    tr.addEventListener("click", () => showDrift(r.run_id).catch((e) => toast(e.message, true)));
    return tr;
  }));
  if (!d.runs.length) $("drift-table").tBodies[0].append(el("tr", {}, el("td", { class: "muted", colspan: "6",
    text: "no drift checks yet: the monitor checks every tenant with enough traffic (policy drift.min_items)" })));
  await loadJobs();
}
async function showDrift(runId) {
  const d = await api("GET", `/v1/console/drift/${encodeURIComponent(runId)}`);
  const r = d.report;
  for (const tr of $("drift-table").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.run === runId);
  $("drift-panel").hidden = false;
  $("drift-title").textContent = `${d.tenant}, ${utc(r.created_at)}: ${r.n_window} items, model version ${r.model_version}; ` +
    `failed: ${(r.failed || []).join(", ") || "nothing"}`;
  const titles = { scores: "Scores: reference against window", flag_rates: "Flag rates over time (dashed: the reference's rate)" };
  const order = (name) => { const i = Object.keys(titles).indexOf(name); return i < 0 ? 99 : i; };
  const plots = Object.entries(d.plots).sort((a, b) => order(a[0]) - order(b[0]));
  $("drift-plots").replaceChildren(...plots.map(([name, uri]) =>
    el("figure", { "data-plot": name }, el("figcaption", { text: titles[name] || name }), el("img", { src: uri, alt: titles[name] || name }))));
  const fails = (r.validation && r.validation.failures) || [];
  $("drift-validation").replaceChildren(...(fails.length ? fails.map((f) =>
    el("li", { text: `${f.expectation} on ${f.column}: ${f.unexpected_count} unexpected` })) : [el("li", { text: "all expectations met" })]));
  $("drift-tests").tBodies[0].replaceChildren(...r.tests.map((t) => el("tr", { class: t.drift ? "bad" : "" },
    el("td", { text: t.name }), el("td", { text: fmt(t.statistic) }), el("td", { text: fmt(t.p_value) }),
    el("td", { text: fmt(t.threshold) }), el("td", { text: t.drift ? (t.counts === false ? "yes (shown only)" : "yes") : "" }))));
}

// -- start --------------------------------------------------------------------------------
async function start() {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  $("claim-top").addEventListener("click", () => { location.hash = "#/review"; });
  $("submit-labels").addEventListener("click", submit);
  $("skip").addEventListener("click", skip);
  $("next").addEventListener("click", () => { if (state.submitted) claimNext(); });
  $("filter-category").addEventListener("change", () => loadQueue().catch((e) => toast(e.message, true)));
  $("rollback").addEventListener("click", () => rollback().catch((e) => toast(e.message, true)));
  $("category-form").addEventListener("submit", (ev) => addCategory(ev).catch((e) => toast(e.message, true)));
  $("category-examples").addEventListener("input", countExamples);
  $("filter-reason").addEventListener("change", () => loadQueue().catch((e) => toast(e.message, true)));
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", route);
  window.addEventListener("online", flushPending);
  if (sessionStorage.getItem(KEY)) {
    try { state.me = await api("GET", "/v1/console/me"); showChrome(); } catch (e) { state.me = null; }
  }
  if (state.me && pending().length) flushPending();
  route();
}
document.addEventListener("DOMContentLoaded", start);
