// The doozer web view: the tree under this page's path, kept live over a
// WebSocket (/_ws), with edits through the JSON API (/_api). No libraries and
// no network beyond this node: everything it needs is served by doozerd.
"use strict";

// The subtree this page shows: "/" for the root, "/a/b" for /a/b/ or /a/b.
const base = location.pathname.replace(/\/+$/, "") || "/";
const inBase = (p) => base === "/" || p === base || p.startsWith(base + "/");

const state = {
  files: new Map(),       // path -> {rev, len, body?, body_base64?, truncated?}
  rev: 0,                 // every change up to here is shown
  mark: "",               // the server's mark for `rev`, to resume from it
  secret: sessionStorage.getItem("doozer-secret") || "",
  needSecret: false,
  rights: { read: false, write: false },
  socket: null,
  retry: 500,
  node: "",
};

const $ = (id) => document.getElementById(id);
const treeRoot = $("tree");
const elements = new Map(); // path -> <li> (files and directories)

// ---- talking to the node -------------------------------------------------

function headers() {
  return state.secret ? { Authorization: "Bearer " + state.secret } : {};
}

function apiPath(path) {
  return "/_api/files" + path.split("/").map(encodeURIComponent).join("/");
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
    const glob = base === "/" ? "/**" : base + "**";
    const from = state.rev > 0 ? state.rev + 1 : 0;
    ws.send(JSON.stringify({ glob, from, mark: state.mark, secret: state.secret }));
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
      state.node = msg.node;
      state.rights = msg.rights;
      document.body.classList.toggle("readonly", !msg.rights.write);
      $("auth").hidden = true;
      setStatus("live", "live");
      break;
    case "snapshot":
      showSnapshot(msg);
      break;
    case "events":
      for (const e of msg.events) applyEvent(e);
      setRev(msg.rev, msg.mark);
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

// ---- the tree ------------------------------------------------------------

function showSnapshot(msg) {
  state.files.clear();
  elements.clear();
  treeRoot.replaceChildren();
  for (const f of msg.files) if (inBase(f.path)) setFile(f.path, f, false);
  setRev(msg.rev, msg.mark);
  notice(msg.truncated ? "Only the first 10,000 files are shown: open a subtree (its path, ending in /)." : "", false);
  updateEmpty();
}

function applyEvent(e) {
  if (!inBase(e.path)) return;
  if (e.kind === "set") setFile(e.path, e, true);
  else if (e.kind === "del") removeFile(e.path);
  updateEmpty();
}

function updateEmpty() {
  $("empty").hidden = state.files.size > 0;
}

// Names below the page's subtree: "/a/b/c" under "/a" is ["b", "c"].
function relative(path) {
  if (path === base) return [base.slice(base.lastIndexOf("/") + 1)];
  const rest = base === "/" ? path : path.slice(base.length);
  return rest.split("/").filter((s) => s !== "");
}

function pathOf(names) {
  const rel = "/" + names.join("/");
  return base === "/" ? rel : base + rel;
}

// The <ul> that holds the entries of the directory at `names`, made if missing.
function dirList(names) {
  if (names.length === 0) return treeRoot;
  const path = pathOf(names);
  let li = elements.get(path);
  if (!li) {
    li = document.createElement("li");
    li.className = "dir";
    li.dataset.path = path;
    li.dataset.name = names[names.length - 1];
    const details = document.createElement("details");
    details.open = true;
    const summary = document.createElement("summary");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = names[names.length - 1] + "/";
    const count = document.createElement("span");
    count.className = "count";
    summary.append(name, count);
    details.append(summary, document.createElement("ul"));
    li.append(details);
    insertSorted(dirList(names.slice(0, -1)), li);
    elements.set(path, li);
  }
  return li.querySelector(":scope > details > ul");
}

// Keeps each directory's entries in byte order of their names, as Doozer does.
function insertSorted(list, li) {
  const name = li.dataset.name;
  for (const other of list.children) {
    if (other.dataset.name > name) {
      list.insertBefore(li, other);
      return;
    }
  }
  list.append(li);
}

function setFile(path, f, highlight) {
  const names = relative(path);
  if (names.length === 0) return;
  const file = { rev: f.rev, len: f.len, body: f.body, body_base64: f.body_base64, truncated: !!f.truncated };
  state.files.set(path, file);
  let li = elements.get(path);
  if (li && !li.classList.contains("file")) {
    // A directory became a file: its files were deleted first, so it is empty.
    li.remove();
    li = null;
  }
  if (!li) {
    li = document.createElement("li");
    li.className = "file";
    li.dataset.path = path;
    li.dataset.name = names[names.length - 1];
    insertSorted(dirList(names.slice(0, -1)), li);
    elements.set(path, li);
  }
  renderFile(li, path, file);
  countEntries(names.slice(0, -1));
  if (highlight) {
    li.classList.remove("changed");
    void li.offsetWidth; // restart the animation
    li.classList.add("changed");
  }
}

function removeFile(path) {
  state.files.delete(path);
  const li = elements.get(path);
  if (!li) return;
  li.remove();
  elements.delete(path);
  // Directories left empty disappear, as they do in the store.
  let names = relative(path).slice(0, -1);
  while (names.length > 0) {
    const dirPath = pathOf(names);
    const dir = elements.get(dirPath);
    if (!dir || dir.querySelector(":scope > details > ul").children.length > 0) break;
    dir.remove();
    elements.delete(dirPath);
    names = names.slice(0, -1);
  }
  countEntries(names);
}

function countEntries(names) {
  for (let n = names.length; n > 0; n--) {
    const dir = elements.get(pathOf(names.slice(0, n)));
    if (!dir) continue;
    const entries = dir.querySelector(":scope > details > ul").children.length;
    dir.querySelector(".count").textContent = entries + (entries === 1 ? " entry" : " entries");
  }
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

function size(n) {
  return n === 1 ? "1 byte" : n.toLocaleString("en") + " bytes";
}

function renderFile(li, path, f) {
  const row = document.createElement("div");
  row.className = "row";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = li.dataset.name;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.innerHTML = "rev <span class=\"file-rev\"></span> · <span class=\"file-len\"></span>";
  meta.querySelector(".file-rev").textContent = f.rev;
  meta.querySelector(".file-len").textContent = size(f.len);
  const actions = document.createElement("span");
  actions.className = "actions";
  if (f.truncated) actions.append(button("Show all", "show-all", () => showAll(path)));
  actions.append(button("Edit…", "edit write", () => openEditor(path)));
  actions.append(button("Delete…", "delete write danger", () => deleteFile(path)));
  row.append(name, meta, actions);
  const body = document.createElement("pre");
  body.className = "body";
  if (f.len === 0) {
    body.classList.add("blank");
    body.textContent = "(empty)";
  } else if (f.body !== undefined) {
    body.textContent = f.body + (f.truncated ? "\n… (" + size(f.len) + " in all)" : "");
  } else {
    body.classList.add("binary");
    body.textContent = "binary, " + size(f.len) + ": " + hexPreview(bytesOf(f.body_base64 || ""));
  }
  li.replaceChildren(row, body);
}

function button(text, cls, onclick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = text;
  b.onclick = onclick;
  return b;
}

async function showAll(path) {
  const f = state.files.get(path);
  try {
    const full = await api("GET", apiPath(path) + "?rev=" + f.rev);
    const li = elements.get(path);
    const now = state.files.get(path);
    if (!li || !now || now.rev !== full.rev) return; // changed meanwhile: the new preview stands
    now.body = full.body;
    now.body_base64 = full.body_base64;
    now.truncated = false;
    renderFile(li, path, now);
  } catch (err) {
    notice("Cannot read " + path + ": " + err.message, true);
  }
}

// ---- editing -------------------------------------------------------------

const editor = { path: "", rev: 0, creating: false };

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
  Object.assign(editor, { path: path || "", rev, creating });
  $("editor-title").textContent = creating ? "New file" : "Edit " + path;
  $("editor-path").value = creating ? (base === "/" ? "/" : base + "/") : path;
  $("editor-path").readOnly = !creating;
  $("editor-body").value = text;
  $("editor-info").textContent = creating ? "Created only if nothing is at this path." : "Read at revision " + rev + ".";
  $("editor-error").textContent = "";
  $("editor-reload").hidden = true;
  $("editor").showModal();
  (creating ? $("editor-path") : $("editor-body")).focus();
}

async function saveEditor(ev) {
  ev.preventDefault();
  const path = $("editor-path").value;
  const verb = editor.creating ? "Create " + path : "Set " + path + " (read at revision " + editor.rev + ")";
  if (!confirm(verb + "?")) return;
  try {
    const res = await api("PUT", apiPath(path) + "?rev=" + editor.rev, $("editor-body").value);
    $("editor").close();
    notice("Saved " + path + " at revision " + res.rev + ".", false);
  } catch (err) {
    $("editor-error").textContent = conflictText(err, path);
    $("editor-reload").hidden = !(err.code === "REV_MISMATCH" && !editor.creating);
  }
}

function conflictText(err, path) {
  if (err.code === "REV_MISMATCH") {
    return "Conflict: " + err.message + ". Nothing was written; your text is kept here.";
  }
  return (err.code ? err.code + ": " : "") + err.message;
}

async function reloadEditor() {
  try {
    const full = await api("GET", apiPath(editor.path));
    editor.rev = full.rev;
    $("editor-body").value = full.body === undefined ? "" : full.body;
    $("editor-info").textContent = "Read at revision " + full.rev + ".";
    $("editor-error").textContent = "";
    $("editor-reload").hidden = true;
  } catch (err) {
    $("editor-error").textContent = err.message;
  }
}

async function deleteFile(path) {
  const f = state.files.get(path);
  if (!f || !confirm("Delete " + path + " (revision " + f.rev + ")?")) return;
  try {
    await api("DELETE", apiPath(path) + "?rev=" + f.rev);
    notice("Deleted " + path + ".", false);
  } catch (err) {
    notice("Not deleted: " + conflictText(err, path), true);
  }
}

// ---- the cluster panel ---------------------------------------------------

async function refreshCluster() {
  try {
    const c = await api("GET", "/_api/cluster");
    $("cluster-name").textContent = c.name ? "“" + c.name + "”" : "";
    const rows = c.members.map((m) => {
      const tr = document.createElement("tr");
      if (m.id === c.self) tr.className = "self";
      const role = m.leader ? "leader" : m.voter ? "voter" : "non-voter";
      const cells = [m.id, m.addr, role, m.applied === null ? "?" : String(m.applied)];
      for (const [i, text] of cells.entries()) {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 0) { td.className = "id"; td.title = m.id === c.self ? "this page's node" : m.hostname; }
        if (i === 2) td.className = "role-" + role;
        tr.append(td);
      }
      return tr;
    });
    $("members").tBodies[0].replaceChildren(...rows);
    $("cluster-error").textContent = "";
  } catch (err) {
    $("cluster-error").textContent = "Cluster unavailable: " + err.message;
  }
}

// ---- start ---------------------------------------------------------------

$("where").textContent = base === "/" ? "" : base + "/";
$("auth").onsubmit = (ev) => {
  ev.preventDefault();
  state.secret = $("secret").value;
  sessionStorage.setItem("doozer-secret", state.secret);
  state.needSecret = false;
  if (state.socket) state.socket.close();
  else connect();
  refreshCluster();
};
$("new-file").onclick = () => openEditor(null);
$("expand-all").onclick = () => treeRoot.querySelectorAll("details").forEach((d) => (d.open = true));
$("collapse-all").onclick = () => treeRoot.querySelectorAll("details").forEach((d) => (d.open = false));
$("editor-form").onsubmit = saveEditor;
$("editor-cancel").onclick = () => $("editor").close();
$("editor-reload").onclick = reloadEditor;
connect();
refreshCluster();
setInterval(refreshCluster, 2000);
