// The doozer web view. Two panes: the tree (directories load when opened,
// a page of entries at a time) and the selected file or directory, with its
// changes in the history window; beside them the cluster and a feed of the
// changes as they commit. A revision slider shows the tree as it was at any
// revision the history holds.
//
// It talks to this node only: the JSON API (/_api) for reads and writes, and
// one WebSocket (/_ws) that pushes every change and the cluster's state, so
// no page polls. No libraries and nothing from the network.
"use strict";

// The subtree this page shows: "/" for the root, "/a/b" for /a/b/.
const base = location.pathname.replace(/\/+$/, "") || "/";
const inBase = (p) => base === "/" || p === base || p.startsWith(base + "/");
const child = (dir, name) => (dir === "/" ? "/" : dir + "/") + name;
const parentOf = (p) => p.slice(0, p.lastIndexOf("/")) || "/";
const nameOf = (p) => p.slice(p.lastIndexOf("/") + 1) || "/";
const isSystem = (p) => p === "/ctl" || p.startsWith("/ctl/");

// Entries shown per directory before "show more"; changes kept in the feed.
const PAGE = 500;
const FEED = 100;

const state = {
  rev: 0,            // every change up to here has arrived
  mark: "",          // the server's mark for `rev`, to resume from it
  oldest: 1,         // the oldest revision the history window holds
  viewing: null,     // null: live; else the revision the tree shows
  secret: sessionStorage.getItem("doozer-secret") || "",
  needSecret: false,
  rights: { read: false, write: false },
  socket: null,
  retry: 500,
  selected: null,    // the path in the detail pane
  cluster: null,
  generation: 0,     // bumped when the tree is rebuilt: late answers are dropped
  open: null,        // paths of the open directories, kept across rebuilds
};

const $ = (id) => document.getElementById(id);
const treeRoot = $("tree");
// path -> {li, ul, loaded, open, total} for directories, {li} for files.
const nodes = new Map();

// ---- talking to the node ---------------------------------------------------

function headers() {
  return state.secret ? { Authorization: "Bearer " + state.secret } : {};
}

function apiPath(path) {
  return "/_api/files" + (path === "/" ? "/" : path.split("/").map(encodeURIComponent).join("/"));
}

// A read URL at the revision on view.
function at(url) {
  if (state.viewing === null) return url;
  return url + (url.includes("?") ? "&" : "?") + "rev=" + state.viewing;
}

async function api(method, url, body) {
  const res = await fetch(url, { method, headers: headers(), body });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const err = new Error((json && json.detail) || text || res.statusText);
    err.code = json && json.error;
    err.status = res.status;
    throw err;
  }
  return json;
}

function connect() {
  setStatus("connecting", "connecting…");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/_ws");
  state.socket = ws;
  ws.onopen = () => {
    const glob = base === "/" ? "/**" : base + "/**";
    const from = state.rev > 0 ? state.rev + 1 : 0;
    ws.send(JSON.stringify({ glob, from, mark: state.mark, secret: state.secret, tree: false }));
  };
  ws.onmessage = (m) => receive(JSON.parse(m.data));
  ws.onclose = () => {
    if (state.socket !== ws) return;
    state.socket = null;
    if (state.needSecret) return; // until one is given
    setStatus("down", "disconnected: reconnecting…");
    setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 5000);
  };
}

function receive(msg) {
  switch (msg.type) {
    case "hello":
      state.retry = 500;
      state.rights = msg.rights;
      document.body.classList.toggle("readonly", !msg.rights.write);
      $("auth").hidden = true;
      setStatus("live", "live");
      break;
    case "reset":
      // First contact, or this node cannot resume where the page was (it
      // restarted, or the page fell out of its history): start over.
      setRev(msg.rev, msg.mark);
      refreshOldest();
      rebuild();
      break;
    case "events":
      for (const e of msg.events) applyEvent(e);
      setRev(msg.rev, msg.mark);
      break;
    case "cluster":
      showCluster(msg.cluster);
      break;
    case "error":
      if (msg.auth) askForSecret(msg.detail);
      else notice(msg.detail, true);
      break;
  }
}

function setStatus(kind, text) {
  const s = $("status");
  s.className = "status " + kind;
  s.textContent = text;
}

function setRev(rev, mark) {
  state.rev = rev;
  state.mark = mark || "";
  $("rev").textContent = rev;
  const slider = $("rev-slider");
  slider.max = rev;
  $("rev-input").max = rev;
  if (state.viewing === null) {
    slider.value = rev;
    $("rev-input").value = rev;
  }
}

async function refreshOldest() {
  try {
    const r = await api("GET", "/_api/rev");
    state.oldest = r.oldest;
    $("rev-slider").min = r.oldest;
    $("rev-input").min = r.oldest;
  } catch (_) { /* the socket reports trouble */ }
}

function notice(text, isError) {
  const n = $("notice");
  n.textContent = text;
  n.className = "notice" + (isError ? " error" : "");
}

function askForSecret(detail) {
  state.needSecret = true;
  $("auth").hidden = false;
  $("auth-error").textContent = state.secret ? detail : "";
  setStatus("down", "needs a secret");
  $("secret").focus();
}

// ---- formatting --------------------------------------------------------------

function size(n) {
  return n === 1 ? "1 byte" : Number(n).toLocaleString("en") + " bytes";
}

function entries(n) {
  return n === 1 ? "1 entry" : Number(n).toLocaleString("en") + " entries";
}

function bytesOf(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function hexPreview(bytes) {
  const shown = Array.from(bytes.slice(0, 64), (b) => b.toString(16).padStart(2, "0"));
  return shown.join(" ") + (bytes.length > 64 ? " …" : "");
}

function preview(e) {
  if (e.kind === "del") return "deleted";
  if (e.body !== undefined) return e.body.length > 80 ? e.body.slice(0, 80) + "…" : e.body || "(empty)";
  return "binary, " + size(e.len);
}

// Runs `f` once, `ms` from the first call, however often it is called meanwhile.
const timers = new Map();
function later(key, ms, f) {
  if (timers.has(key)) return;
  timers.set(key, setTimeout(() => { timers.delete(key); f(); }, ms));
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(text, cls, onclick) {
  const b = el("button", cls, text);
  b.type = "button";
  b.onclick = onclick;
  return b;
}

// ---- the tree ----------------------------------------------------------------

// Rebuilds the tree as of the revision on view, reopening what was open.
async function rebuild() {
  const generation = ++state.generation;
  nodes.clear();
  treeRoot.replaceChildren();
  nodes.set(base, { li: null, ul: treeRoot, loaded: false, open: true, total: 0 });
  await loadDir(base, 0, generation);
  if (generation !== state.generation) return;
  if (state.open === null) {
    // Top-level directories start open, but never /ctl: it is the system's own.
    const top = [...nodes.keys()].filter((p) => parentOf(p) === base && p !== base && nodes.get(p).ul && !isSystem(p));
    state.open = new Set(top);
  }
  // Parents sort before their children, so each opens where it can.
  for (const p of [...state.open].sort()) {
    const n = nodes.get(p);
    if (n && n.ul && !n.open) await toggleDir(p, generation);
    if (generation !== state.generation) return;
  }
  updateEmpty();
  if (state.selected) select(state.selected);
}

// Appends a page of the directory's entries from `offset`.
async function loadDir(path, offset, generation) {
  const dir = nodes.get(path);
  let listing;
  try {
    listing = await api("GET", at(apiPath(path) + "?offset=" + offset + "&limit=" + PAGE));
  } catch (err) {
    if (generation === state.generation) notice("Cannot read " + path + ": " + err.message, true);
    return;
  }
  if (generation !== state.generation || nodes.get(path) !== dir) return;
  if (offset === 0) dir.ul.replaceChildren();
  dir.ul.querySelector(":scope > li.more")?.remove();
  for (const e of listing.entries) {
    const p = child(path, e.name);
    if (e.kind === "dir") addDir(path, p, e.entries, false);
    else if (e.kind === "file") addFile(path, p, e.rev, e.len, false);
  }
  dir.loaded = true;
  dir.total = listing.total;
  setCount(path);
  const shown = offset + listing.entries.length;
  if (listing.truncated) {
    const li = el("li", "more");
    li.append(button("Show more (" + (listing.total - shown).toLocaleString("en") + " more)", "more", () => {
      li.remove();
      loadDir(path, shown, generation);
    }));
    dir.ul.append(li);
  }
}

// The <li> for `path`, placed in byte order of names among its siblings.
function place(parent, li) {
  const list = nodes.get(parent).ul;
  const name = li.dataset.name;
  for (const other of list.children) {
    if (other.classList.contains("more") || other.dataset.name > name) {
      list.insertBefore(li, other);
      return;
    }
  }
  list.append(li);
}

function nodeRow(path, isDir) {
  const row = el("div", "node");
  row.setAttribute("role", "treeitem");
  const twisty = el("span", "twisty", isDir ? "▸" : "");
  const name = el("span", "name", nameOf(path) + (isDir ? "/" : ""));
  row.append(twisty, name);
  if (path === "/ctl") {
    const badge = el("span", "badge", "system");
    badge.title = "doozerd's own state: the cluster's name, members and slots";
    row.append(badge);
  }
  row.append(el("span", "meta"));
  // The triangle opens and closes; the name selects, and opens a closed directory.
  row.onclick = (ev) => {
    if (isDir && (ev.target === twisty || !nodes.get(path).open)) toggleDir(path, state.generation);
    if (ev.target !== twisty) select(path);
  };
  return row;
}

function addDir(parent, path, total, highlight) {
  let n = nodes.get(path);
  if (n && !n.ul) { n.li.remove(); nodes.delete(path); n = null; }
  if (!n) {
    const li = el("li", "dir");
    li.dataset.path = path;
    li.dataset.name = nameOf(path);
    if (isSystem(path)) li.classList.add("system");
    const ul = el("ul");
    ul.hidden = true;
    li.append(nodeRow(path, true), ul);
    n = { li, ul, loaded: false, open: false, total };
    nodes.set(path, n);
    place(parent, li);
    if (highlight) bump(parent, +1, false);
  }
  n.total = total ?? n.total;
  setCount(path);
  if (highlight) flash(n.li);
  return n;
}

function addFile(parent, path, rev, len, highlight) {
  let n = nodes.get(path);
  if (n && n.ul) { n.li.remove(); forget(path); n = null; }
  if (!n) {
    const li = el("li", "file");
    li.dataset.path = path;
    li.dataset.name = nameOf(path);
    li.append(nodeRow(path, false));
    n = { li };
    nodes.set(path, n);
    place(parent, li);
    if (highlight) bump(parent, +1, false);
  }
  n.li.dataset.rev = rev;
  n.li.querySelector(".meta").textContent = "rev " + rev + " · " + size(len);
  if (highlight) flash(n.li);
}

// Removes `path` and everything known below it.
function forget(path) {
  for (const p of [...nodes.keys()]) if (p === path || p.startsWith(path + "/")) nodes.delete(p);
}

function flash(li) {
  li.classList.remove("changed");
  void li.offsetWidth; // restart the animation
  li.classList.add("changed");
}

function setCount(path) {
  const n = nodes.get(path);
  if (n && n.li) n.li.querySelector(":scope > .node .meta").textContent = entries(n.total);
}

function bump(path, by, highlight) {
  const n = nodes.get(path);
  if (!n) return;
  n.total = Math.max(0, n.total + by);
  setCount(path);
  if (highlight && n.li) flash(n.li);
}

async function toggleDir(path, generation) {
  const n = nodes.get(path);
  if (!n || !n.ul) return;
  n.open = !n.open;
  if (state.open) {
    if (n.open) state.open.add(path);
    else state.open.delete(path);
  }
  n.ul.hidden = !n.open;
  n.li.querySelector(":scope > .node .twisty").textContent = n.open ? "▾" : "▸";
  if (n.open && !n.loaded) await loadDir(path, 0, generation);
}

// A change as it commits, on the live tree.
function applyEvent(e) {
  addToFeed(e);
  const s = state.selected;
  if (s && e.kind !== "nop" && (e.path === s || e.path.startsWith(s === "/" ? "/" : s + "/"))) {
    addChange($("changes"), e, true);
    if (state.viewing === null) later("select", 300, () => select(state.selected, true));
  }
  if (state.viewing !== null || !inBase(e.path)) return;
  if (e.kind === "set") showSet(e);
  else if (e.kind === "del") showDel(e.path);
  updateEmpty();
}

function showSet(e) {
  // The deepest directory on view that holds the path, then down from it.
  const names = e.path.slice(base === "/" ? 1 : base.length + 1).split("/");
  let dir = base;
  for (let i = 0; i < names.length; i++) {
    const d = nodes.get(dir);
    const p = child(dir, names[i]);
    const last = i === names.length - 1;
    if (!d.loaded) {
      // Its entries are not known here: it reads fresh when opened.
      if (d.li) flash(d.li);
      return;
    }
    if (last) return addFile(dir, p, e.rev, e.len, true);
    if (!nodes.get(p) || !nodes.get(p).ul) {
      const made = addDir(dir, p, 1, true);
      made.loaded = false;
      return;
    }
    dir = p;
  }
}

function showDel(path) {
  const n = nodes.get(path);
  if (!n) {
    const d = nodes.get(parentOf(path));
    if (d && d.li) flash(d.li);
    return;
  }
  n.li.remove();
  forget(path);
  // Directories left empty disappear, as they do in the store.
  let dir = parentOf(path);
  bump(dir, -1, true);
  while (dir !== base && inBase(dir)) {
    const d = nodes.get(dir);
    if (!d || !d.loaded || d.total > 0) break;
    d.li.remove();
    forget(dir);
    dir = parentOf(dir);
    bump(dir, -1, false);
  }
}

function updateEmpty() {
  const root = nodes.get(base);
  $("empty").hidden = !root || !root.loaded || root.ul.children.length > 0;
}

// ---- the feed and a path's changes ---------------------------------------------

function changeItem(e) {
  const li = el("li");
  li.dataset.rev = e.rev;
  li.append(el("span", "rev", "@" + e.rev), el("span", "kind " + e.kind, e.kind));
  const path = el("span", "path", e.path);
  path.onclick = () => select(e.path);
  li.append(path, el("span", "preview", preview(e)));
  li.append(button("view", "view-at", () => setViewing(e.rev)));
  return li;
}

function addChange(list, e, first) {
  if (first) list.prepend(changeItem(e));
  else list.append(changeItem(e));
  while (list.children.length > FEED * 2) list.lastChild.remove();
}

function addToFeed(e) {
  if (e.kind === "nop") return;
  const feed = $("feed");
  feed.prepend(changeItem(e));
  while (feed.children.length > FEED) feed.lastChild.remove();
}

async function loadChanges(path, kind) {
  const list = $("changes");
  const glob = kind === "dir" ? (path === "/" ? "/**" : path + "/**") : path;
  $("changes-of").textContent = "of " + glob;
  try {
    const r = await api("GET", at("/_api/log?limit=200&glob=" + encodeURIComponent(glob)));
    if (state.selected !== path) return;
    list.replaceChildren(...r.changes.map(changeItem));
    if (r.changes.length === 0) list.append(el("li", "muted", "none since revision " + r.oldest));
  } catch (err) {
    list.replaceChildren(el("li", "error", err.message));
  }
}

// ---- the selected file or directory ----------------------------------------------

function crumbs(path) {
  const nav = $("crumbs");
  nav.replaceChildren();
  const parts = path === "/" ? [] : path.slice(1).split("/");
  const link = (text, p) => {
    const a = el("a", "", text);
    a.onclick = () => select(p);
    return a;
  };
  nav.append(link("/", "/"));
  parts.forEach((name, i) => {
    if (i > 0) nav.append(el("span", "muted", "/"));
    nav.append(link(name, "/" + parts.slice(0, i + 1).join("/")));
  });
}

async function select(path, quiet) {
  state.selected = path;
  for (const s of treeRoot.querySelectorAll(".node.selected")) s.classList.remove("selected");
  const n = nodes.get(path);
  if (n && n.li) n.li.querySelector(":scope > .node").classList.add("selected");
  crumbs(path);
  const detail = $("detail");
  let r;
  try {
    r = await api("GET", at(apiPath(path) + "?limit=" + PAGE));
  } catch (err) {
    if (state.selected !== path) return;
    const when = state.viewing === null ? "now" : "at revision " + state.viewing;
    detail.replaceChildren(el("p", "muted", err.code === "NOENT" ? path + " does not exist " + when + "." : err.message));
    if (!quiet) loadChanges(path, "file");
    return;
  }
  if (state.selected !== path) return;
  detail.replaceChildren(...(r.kind === "dir" ? dirDetail(path, r) : fileDetail(path, r)));
  if (!quiet) loadChanges(path, r.kind);
}

function facts(pairs) {
  const p = el("p", "facts");
  for (const [k, v] of pairs) {
    const s = el("span", "", k + " ");
    s.append(el("b", "", String(v)));
    p.append(s);
  }
  return p;
}

function fileDetail(path, f) {
  const out = [el("h2", "mono path", path)];
  out.push(facts([["revision", f.rev], ["size", size(f.len)], ["read at", f.at]]));
  if (isSystem(path)) out.push(el("p", "system", "Part of /ctl, doozerd's own state: " + systemMeaning(path)));
  const actions = el("div", "actions");
  actions.append(button("Edit…", "edit write", () => openEditor(path)));
  actions.append(button("Delete…", "delete write danger", () => deleteFile(path, f.rev)));
  out.push(actions);
  const body = el("pre", "body");
  if (f.len === 0) {
    body.classList.add("blank");
    body.textContent = "(empty)";
  } else if (f.body !== undefined) {
    body.textContent = f.body;
  } else {
    body.classList.add("binary");
    body.textContent = "binary, " + size(f.len) + ": " + hexPreview(bytesOf(f.body_base64 || ""));
  }
  out.push(body);
  return out;
}

function dirDetail(path, d) {
  const out = [el("h2", "mono path", path === "/" ? "/" : path + "/")];
  out.push(facts([["directory", entries(d.total)], ["read at", d.at]]));
  if (path === "/ctl") out.push(el("p", "system", "doozerd's own state: the cluster's name, its members and their voting slots."));
  const list = el("ul", "entries");
  for (const e of d.entries) {
    const li = el("li", "", e.name + (e.kind === "dir" ? "/" : ""));
    li.onclick = () => select(child(path, e.name));
    list.append(li);
  }
  out.push(list);
  if (d.truncated) out.push(el("p", "muted", "… and " + (d.total - d.entries.length).toLocaleString("en") + " more"));
  return out;
}

function systemMeaning(path) {
  if (path.startsWith("/ctl/cal/")) return "a voting slot; it names the member that holds it (empty: vacant).";
  if (path.startsWith("/ctl/ns/")) return "a member's address, for clients that find the cluster by name.";
  if (path.startsWith("/ctl/node/")) return "what a member says about itself.";
  if (path === "/ctl/leader") return "the current leader's id.";
  return "written and read by doozerd.";
}

// ---- history -------------------------------------------------------------------

function setViewing(rev) {
  const live = rev === null || rev >= state.rev;
  if (!live && rev < state.oldest) {
    notice("Revision " + rev + " has left the history window (the oldest kept is " + state.oldest + ").", true);
    rev = state.oldest;
  }
  state.viewing = live ? null : rev;
  document.body.classList.toggle("past", !live);
  const mode = $("rev-mode");
  mode.className = "rev-mode " + (live ? "live" : "past");
  mode.textContent = live ? "latest" : "as of revision " + rev;
  $("rev-live").hidden = live;
  $("rev-slider").value = live ? state.rev : rev;
  $("rev-input").value = live ? state.rev : rev;
  if (!live) notice("The tree as it was at revision " + rev + ". Changes since are not shown; editing is off.", false);
  else notice("", false);
  rebuild();
}

// ---- filter and search ---------------------------------------------------------

async function showMatches(glob, what) {
  const list = $("matches");
  if (!glob) {
    list.hidden = true;
    treeRoot.hidden = false;
    notice("", false);
    return;
  }
  try {
    const r = await api("GET", at("/_api/walk?limit=1000&glob=" + encodeURIComponent(glob)));
    list.replaceChildren(...r.files.map((f) => {
      const li = el("li", "file");
      li.dataset.path = f.path;
      const row = el("div", "node");
      row.append(el("span", "name", f.path), el("span", "meta", "rev " + f.rev + " · " + size(f.len)));
      row.onclick = () => select(f.path);
      li.append(row);
      return li;
    }));
    treeRoot.hidden = true;
    list.hidden = false;
    const count = r.files.length + (r.truncated ? "+" : "");
    notice(count + " files " + what + (r.truncated ? " (the first 1,000 shown)" : ""), false);
  } catch (err) {
    notice(err.message, true);
  }
}

function filterChanged() {
  $("search").value = "";
  const g = $("filter").value.trim();
  showMatches(g, "match " + g);
}

function searchChanged() {
  $("filter").value = "";
  const text = $("search").value.trim();
  if (text && !/^[A-Za-z0-9.-]+$/.test(text)) {
    notice("Names use only A-Z a-z 0-9 . and -", true);
    return;
  }
  const glob = text ? (base === "/" ? "" : base) + "/**" + text + "*" : "";
  showMatches(glob, "named *" + text + "*");
}

// ---- editing -------------------------------------------------------------------

const editor = { path: "", rev: 0, creating: false, old: "" };

async function openEditor(path) {
  const creating = path === null;
  let rev = 0;
  let text = "";
  if (!creating) {
    try {
      const full = await api("GET", apiPath(path));
      if (full.body === undefined) {
        notice(path + " is binary: set it with the doozer CLI or the API.", true);
        return;
      }
      rev = full.rev;
      text = full.body;
    } catch (err) {
      notice("Cannot read " + path + ": " + err.message, true);
      return;
    }
  }
  Object.assign(editor, { path: path || "", rev, creating, old: text });
  $("editor-title").textContent = creating ? "New file" : "Edit " + path;
  const dir = state.selected && nodes.get(state.selected) && nodes.get(state.selected).ul ? state.selected : base;
  $("editor-path").value = creating ? (dir === "/" ? "/" : dir + "/") : path;
  $("editor-path").readOnly = !creating;
  $("editor-body").value = text;
  $("editor-info").textContent = creating ? "Created only if nothing is at this path." : "Read at revision " + rev + ".";
  $("editor-error").textContent = "";
  $("editor-reload").hidden = true;
  $("editor").showModal();
  (creating ? $("editor-path") : $("editor-body")).focus();
}

// What a change to /ctl does, for the second confirmation; "" outside /ctl.
function ctlWarning(path, oldBody, newBody, deleting) {
  if (!isSystem(path)) return "";
  if (path.startsWith("/ctl/cal/")) {
    const slot = path.slice("/ctl/cal/".length);
    if (deleting) return "Deleting slot " + slot + (oldBody ? " demotes member " + oldBody + " (it stops voting)" : "") + " and shrinks the number of voters the cluster grows to.";
    if (oldBody && !newBody) return "Emptying slot " + slot + " demotes member " + oldBody + ": it stops voting, and a waiting node may claim the slot.";
    if (newBody && newBody !== oldBody) return "Writing " + newBody + " into slot " + slot + " makes that member a voter" + (oldBody ? " and demotes " + oldBody : "") + ".";
  }
  return "This is /ctl, doozerd's own state: " + systemMeaning(path) + " Changing it by hand can confuse the cluster.";
}

async function saveEditor(ev) {
  ev.preventDefault();
  const path = $("editor-path").value;
  const body = $("editor-body").value;
  const verb = editor.creating ? "Create " + path : "Set " + path + " (read at revision " + editor.rev + ")";
  if (!confirm(verb + "?")) return;
  const warning = ctlWarning(path, editor.old, body, false);
  if (warning && !confirm(warning + "\n\nChange it anyway?")) return;
  try {
    const res = await api("PUT", apiPath(path) + "?rev=" + editor.rev, body);
    $("editor").close();
    notice("Saved " + path + " at revision " + res.rev + ".", false);
    select(path);
  } catch (err) {
    $("editor-error").textContent = conflictText(err);
    $("editor-reload").hidden = !(err.code === "REV_MISMATCH" && !editor.creating);
  }
}

function conflictText(err) {
  if (err.code === "REV_MISMATCH") {
    return "Conflict: " + err.message + ". Nothing was written; your text is kept here.";
  }
  return (err.code ? err.code + ": " : "") + err.message;
}

async function reloadEditor() {
  try {
    const full = await api("GET", apiPath(editor.path));
    editor.rev = full.rev;
    editor.old = full.body === undefined ? "" : full.body;
    $("editor-body").value = editor.old;
    $("editor-info").textContent = "Read at revision " + full.rev + ".";
    $("editor-error").textContent = "";
    $("editor-reload").hidden = true;
  } catch (err) {
    $("editor-error").textContent = err.message;
  }
}

async function deleteFile(path, rev) {
  if (!confirm("Delete " + path + " (revision " + rev + ")?")) return;
  let old = "";
  try { old = (await api("GET", apiPath(path))).body || ""; } catch (_) { /* gone already */ }
  const warning = ctlWarning(path, old, "", true);
  if (warning && !confirm(warning + "\n\nDelete it anyway?")) return;
  try {
    await api("DELETE", apiPath(path) + "?rev=" + rev);
    notice("Deleted " + path + ".", false);
    select(parentOf(path));
  } catch (err) {
    notice("Not deleted: " + conflictText(err), true);
  }
}

// ---- the cluster panel ---------------------------------------------------------

function showCluster(c) {
  state.cluster = c;
  $("cluster-name").textContent = c.name ? "“" + c.name + "”" : "";
  const rows = (c.members || []).map((m) => {
    const tr = el("tr");
    if (m.id === c.self) tr.classList.add("self");
    if (!m.reachable) tr.classList.add("unreachable");
    const role = m.leader ? "leader" : m.voter ? "voter" : "non-voter";
    const cells = [m.id, m.addr, role, m.reachable ? String(m.applied) : "unreachable"];
    for (const [i, text] of cells.entries()) {
      const td = el("td", "", text);
      if (i === 0) { td.className = "id"; td.title = (m.id === c.self ? "this page's node; " : "") + m.hostname + ", " + m.version; }
      if (i === 2) td.className = "role-" + role;
      tr.append(td);
    }
    return tr;
  });
  $("members").tBodies[0].replaceChildren(...rows);
  const down = (c.members || []).filter((m) => !m.reachable).length;
  const notes = [c.slots + " voting slots, " + c.vacant + " vacant"];
  if (down) notes.push(down + " unreachable");
  $("cluster-note").textContent = notes.join("; ");
}

// ---- the leases panel -----------------------------------------------------------

// Leases change without a revision (a keep-alive is not a write): polled.
const LEASES_SHOWN = 50;

async function refreshLeases() {
  try {
    const res = await api("GET", "/_api/leases?limit=" + LEASES_SHOWN);
    const rows = (res.leases || []).map((l) => {
      const tr = el("tr");
      tr.append(el("td", "id", l.id), el("td", "", l.granted + " s"), el("td", "", String(l.files)));
      tr.onclick = () => showLease(l.id);
      return tr;
    });
    $("leases").tBodies[0].replaceChildren(...rows);
    const more = res.count > rows.length ? " (first " + rows.length + ")" : "";
    $("lease-count").textContent = res.count ? res.count + more : "none";
  } catch (e) {
    $("lease-count").textContent = "";
  }
}

async function showLease(id) {
  try {
    const l = await api("GET", "/_api/leases/" + encodeURIComponent(id));
    const files = l.files.length ? ": " + l.files.join(", ") : "; no files";
    $("lease-detail").textContent = "lease " + l.id + ": " + l.ttl + " s left of " + l.granted + files;
  } catch (e) {
    $("lease-detail").textContent = "lease " + id + ": " + (e.message || "gone");
  }
}

// ---- start ---------------------------------------------------------------------

$("where").textContent = base === "/" ? "" : base + "/";
$("auth").onsubmit = (ev) => {
  ev.preventDefault();
  state.secret = $("secret").value;
  sessionStorage.setItem("doozer-secret", state.secret);
  state.needSecret = false;
  if (state.socket) state.socket.close();
  else connect();
};
$("new-file").onclick = () => openEditor(null);
$("editor-form").onsubmit = saveEditor;
$("editor-cancel").onclick = () => $("editor").close();
$("editor-reload").onclick = reloadEditor;
$("filter").onchange = filterChanged;
$("search").oninput = () => later("search", 250, searchChanged);
$("rev-slider").onpointerdown = refreshOldest;
$("rev-slider").oninput = () => { $("rev-input").value = $("rev-slider").value; };
$("rev-slider").onchange = () => setViewing(Number($("rev-slider").value));
$("rev-input").onchange = () => setViewing(Number($("rev-input").value));
$("history").onsubmit = (ev) => { ev.preventDefault(); setViewing(Number($("rev-input").value)); };
$("rev-live").onclick = () => setViewing(null);
connect();
refreshLeases();
setInterval(refreshLeases, 2000);
