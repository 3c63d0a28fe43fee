// goim web chat: the HTTP API for accounts, friends and groups, and the goim client
// protocol (TLV frames carrying protobuf, docs/protocol.md) over a WebSocket for
// messages. Plain JavaScript, no build step; protobuf through protobufjs (vendored).
"use strict";

(function () {
  // --- protocol constants (docs/protocol.md) ----------------------------------------
  const SIGN_IN = 1, SIGN_IN_ACK = 2, SYNC_TRIGGER = 3, HEARTBEAT = 4, HEARTBEAT_ACK = 5,
    MESSAGE_SEND = 6, MESSAGE_SEND_ACK = 7, MESSAGE = 8, MESSAGE_ACK = 9, KICKED = 10;
  const RECEIVER_USER = 1, RECEIVER_GROUP = 2;
  const SEND_CODES = {
    1: "internal error", 2: "not a friend", 3: "not in the group",
    4: "invalid message", 5: "rate limited",
  };
  const MAX_FRAME = 65535;
  const HEARTBEAT_EVERY_MS = 30000;
  const ACK_DELAY_MS = 300;
  const RETRY_SEND_MS = 2000;
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
  const HISTORY = 2000;  // a new tab syncs at most this many recent messages
  const LIST_REFRESH_MS = 15000;
  const TRANSIENT_KICKS = ["server shutting down"];

  // --- state ----------------------------------------------------------------------------
  const store = window.sessionStorage;  // per tab: each tab is a device of its own
  const S = {
    types: null,           // protobufjs message types
    wsUrl: "/ws",
    device: load("goim.device"),   // {id, token}
    session: load("goim.session"), // {user_id, number, nickname, send_seq, seq}
    messages: new Map(),   // sync_sequence -> MessageItem
    contiguous: 0,         // every seq up to this one is held
    pending: new Map(),    // send_sequence -> {receiver_type, receiver_id, content, send_time, state, why}
    friends: [], groups: [],
    current: null,         // {type, id}
    unread: new Map(),     // conversation key -> count
    ws: null, signedIn: false, syncing: false, stopped: false,
    attempt: 0, reconnectTimer: null, heartbeatTimer: null, ackTimer: null, listTimer: null,
  };

  function load(key) {
    try { return JSON.parse(store.getItem(key) || "null"); } catch (e) { return null; }
  }
  function save(key, value) {
    if (value === null) store.removeItem(key); else store.setItem(key, JSON.stringify(value));
  }
  const $ = (id) => document.getElementById(id);

  // --- status and errors ----------------------------------------------------------------
  function setStatus(state, text) {
    const el = $("status");
    el.dataset.state = state;
    el.textContent = text;
  }
  function showError(text) {
    $("error-text").textContent = text;
    $("error").hidden = false;
  }
  function clearError() { $("error").hidden = true; }

  // --- HTTP API -------------------------------------------------------------------------
  async function api(method, path, body) {
    const headers = {"Content-Type": "application/json"};
    if (S.device) { headers["device_id"] = String(S.device.id); headers["token"] = S.device.token; }
    let response;
    try {
      response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
    } catch (e) {
      throw new Error("the server cannot be reached");
    }
    let envelope;
    try { envelope = await response.json(); } catch (e) { throw new Error(`HTTP ${response.status}`); }
    if (envelope.code !== 0) {
      const err = new Error(envelope.message || `error ${envelope.code}`);
      err.code = envelope.code;
      throw err;
    }
    return envelope.data;
  }

  async function ensureDevice() {
    if (S.device) return;
    const data = await api("POST", "/device", {
      type: 5, brand: "browser", model: (navigator.userAgent || "").slice(0, 60),
      system_version: (navigator.platform || "").slice(0, 30), app_version: "goim-web 1",
    });
    S.device = {id: data.id, token: data.token};
    save("goim.device", S.device);
  }

  async function startSession(data, number, nickname) {
    // HTTP sign-in starts a new send_sequence epoch: sends count from data.send_sequence
    S.session = {user_id: data.user_id, number, nickname, send_seq: data.send_sequence || 0, seq: data.sync_sequence || 0};
    save("goim.session", S.session);
    enterChat();
  }

  async function register(ev) {
    ev.preventDefault();
    clearError();
    const number = $("register-number").value.trim(), nickname = $("register-nickname").value.trim();
    try {
      await ensureDevice();
      const data = await api("POST", "/user", {number, nickname, password: $("register-password").value, sex: 0, avatar: ""});
      await startSession(data, number, nickname);
    } catch (e) { authFailed("Registration failed", e); }
  }

  async function signIn(ev) {
    ev.preventDefault();
    clearError();
    const number = $("signin-number").value.trim();
    try {
      await ensureDevice();
      const data = await api("POST", "/user/signin", {number, password: $("signin-password").value});
      let nickname = number;
      await startSession(data, number, nickname);
      try { nickname = (await api("GET", "/user/info")).nickname || number; } catch (e) { /* keep the number */ }
      S.session.nickname = nickname; save("goim.session", S.session); renderMe();
    } catch (e) { authFailed("Sign-in failed", e); }
  }

  function authFailed(what, e) {
    if (e.code === 1001) { S.device = null; save("goim.device", null); }  // device unknown here: a new one next time
    showError(`${what}: ${e.message}`);
  }

  function signOut() {
    S.stopped = true;
    closeSocket();
    save("goim.session", null);
    S.session = null;
    resetMessages();
    showAuth();
  }

  // --- frames ---------------------------------------------------------------------------
  function frame(type, value) {
    const out = new Uint8Array(4 + value.length);
    const view = new DataView(out.buffer);
    view.setUint16(0, type);
    view.setUint16(2, value.length);
    out.set(value, 4);
    return out;
  }
  function encode(type, typeName, fields) {
    const T = S.types[typeName];
    return frame(type, T.encode(T.create(fields)).finish());
  }
  function sendFrames(frames) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    let size = 0;
    for (const f of frames) size += f.length;
    const out = new Uint8Array(size);
    let at = 0;
    for (const f of frames) { out.set(f, at); at += f.length; }
    S.ws.send(out);  // one binary message, whole frames
    return true;
  }
  function* parseFrames(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let at = 0;
    while (at + 4 <= bytes.length) {
      const type = view.getUint16(at), length = view.getUint16(at + 2);
      if (at + 4 + length > bytes.length) throw new Error("partial frame");
      yield [type, bytes.subarray(at + 4, at + 4 + length)];
      at += 4 + length;
    }
  }

  // --- the WebSocket ----------------------------------------------------------------------
  function wsURL() {
    const url = new URL(S.wsUrl, location.href);
    if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol === "https:") url.protocol = "wss:";
    return url.href;
  }

  function connect() {
    if (!S.session || S.stopped) return;
    closeSocket();
    setStatus("connecting", S.attempt ? `Reconnecting (attempt ${S.attempt + 1})…` : "Connecting…");
    let ws;
    try { ws = new WebSocket(wsURL()); } catch (e) { scheduleReconnect(`cannot open the WebSocket: ${e.message}`); return; }
    ws.binaryType = "arraybuffer";
    S.ws = ws;
    ws.onopen = () => {
      if (ws !== S.ws) return;
      S.syncing = true;
      // pipelined: the server handles SyncTrigger once the sign-in succeeds
      sendFrames([
        encode(SIGN_IN, "SignIn", {device_id: S.device.id, user_id: S.session.user_id, token: S.device.token, max_frame: MAX_FRAME}),
        encode(SYNC_TRIGGER, "SyncTrigger", {sync_sequence: S.contiguous}),
      ]);
    };
    ws.onmessage = (ev) => {
      if (ws !== S.ws) return;
      try {
        for (const [type, value] of parseFrames(new Uint8Array(ev.data))) handleFrame(type, value);
      } catch (e) {
        console.error(e);
        showError(`Bad data from the server: ${e.message}`);
        ws.close(1002);
      }
    };
    ws.onclose = (ev) => {
      if (ws !== S.ws) return;
      S.ws = null;
      S.signedIn = false;
      stopHeartbeat();
      if (S.stopped) return;
      scheduleReconnect(ev.code === 1006 ? "connection lost" : `closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})`);
    };
  }

  function closeSocket() {
    stopHeartbeat();
    clearTimeout(S.reconnectTimer);
    S.reconnectTimer = null;
    if (S.ws) { const ws = S.ws; S.ws = null; try { ws.close(1000); } catch (e) { /* already closed */ } }
    S.signedIn = false;
  }

  function scheduleReconnect(why) {
    if (!navigator.onLine) {  // the "online" event reconnects
      setStatus("offline", "Offline: no network. Reconnecting when it is back…");
      refreshCompose();
      return;
    }
    const base = BACKOFF_MS[Math.min(S.attempt, BACKOFF_MS.length - 1)];
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    S.attempt += 1;
    setStatus("offline", `Offline: ${why}. Reconnecting in ${Math.ceil(delay / 1000)} s…`);
    refreshCompose();
    clearTimeout(S.reconnectTimer);
    S.reconnectTimer = setTimeout(connect, delay);
  }

  function startHeartbeat() {
    stopHeartbeat();
    S.heartbeatTimer = setInterval(() => sendFrames([frame(HEARTBEAT, new Uint8Array(0))]), HEARTBEAT_EVERY_MS);
  }
  function stopHeartbeat() { clearInterval(S.heartbeatTimer); S.heartbeatTimer = null; }

  function handleFrame(type, value) {
    switch (type) {
      case SIGN_IN_ACK: return onSignInAck(S.types.SignInACK.decode(value));
      case MESSAGE: return onMessage(S.types.Message.decode(value));
      case MESSAGE_SEND_ACK: return onSendAck(S.types.MessageSendACK.decode(value));
      case KICKED: return onKicked(S.types.Kicked.decode(value));
      case HEARTBEAT_ACK: return;
      default: return;  // unknown codes are ignored (forward compatibility)
    }
  }

  function onSignInAck(ack) {
    if (ack.code !== 1) {
      if (ack.message === "internal error") { return; }  // the server closes; we retry with backoff
      S.stopped = true;
      closeSocket();
      setStatus("kicked", "Signed out");
      showError(`The server refused the sign-in: ${ack.message || "unknown reason"}. Please sign in again.`);
      save("goim.session", null);
      S.session = null;
      resetMessages();
      showAuth();
      return;
    }
    S.signedIn = true;
    S.attempt = 0;
    setStatus("online", "Online");
    startHeartbeat();
    refreshCompose();
    // sends not yet acknowledged go again with the same send_sequence (the server dedupes)
    const frames = [];
    for (const [seq, p] of S.pending) if (p.state === "pending") frames.push(sendFrame(seq, p));
    if (frames.length) sendFrames(frames);
  }

  function onKicked(kicked) {
    const reason = kicked.reason || "no reason given";
    if (TRANSIENT_KICKS.includes(reason)) {
      setStatus("offline", `Offline: ${reason}`);
      return;  // the close follows; we reconnect with backoff
    }
    S.stopped = true;
    closeSocket();
    setStatus("kicked", `Disconnected: ${reason}`);
    showError(`This tab was disconnected: ${reason}. Reload the page to connect again.`);
    refreshCompose();
  }

  // --- messages -------------------------------------------------------------------------
  function convKey(item) {
    if (item.receiver_type === RECEIVER_GROUP) return "g" + item.receiver_id;
    const me = S.session.user_id;
    return "u" + (item.sender_id === me ? item.receiver_id : item.sender_id);
  }
  function currentKey() { return S.current ? (S.current.type === RECEIVER_GROUP ? "g" : "u") + S.current.id : null; }

  function onMessage(msg) {
    const isSync = msg.type === 1;
    let unknown = false, changed = false;
    for (const raw of msg.messages) {
      const item = S.types.MessageItem.toObject(raw, {longs: Number, defaults: true});
      const seq = item.sync_sequence;
      if (seq <= S.contiguous || S.messages.has(seq)) continue;  // a duplicate: already held
      S.messages.set(seq, item);
      changed = true;
      const key = convKey(item);
      if (!knownConv(key)) unknown = true;
      if (item.sender_device_id === S.device.id) {
        for (const [sendSeq, p] of S.pending) if (p.seq === seq) S.pending.delete(sendSeq);
      } else if (item.sender_id !== S.session.user_id && (key !== currentKey() || document.hidden)) {
        S.unread.set(key, (S.unread.get(key) || 0) + 1);
      }
    }
    while (S.messages.has(S.contiguous + 1)) S.contiguous += 1;
    S.session.seq = S.contiguous;
    save("goim.session", S.session);
    if (isSync && !msg.more) S.syncing = false;
    // a gap after a live push: something was missed, ask for it
    if (!isSync && !S.syncing && hasGap()) {
      S.syncing = true;
      sendFrames([encode(SYNC_TRIGGER, "SyncTrigger", {sync_sequence: S.contiguous})]);
    }
    scheduleAck();
    if (unknown) refreshLists();
    if (changed) { renderConvs(); renderMessages(); }
  }

  function hasGap() {
    for (const seq of S.messages.keys()) if (seq > S.contiguous) return true;
    return false;
  }

  function scheduleAck() {
    if (S.ackTimer) return;
    S.ackTimer = setTimeout(() => {
      S.ackTimer = null;
      const last = S.messages.get(S.contiguous);
      if (last && S.signedIn) {
        sendFrames([encode(MESSAGE_ACK, "MessageACK", {message_id: last.message_id, sync_sequence: S.contiguous, receive_time: Date.now()})]);
      }
    }, ACK_DELAY_MS);
  }

  function sendFrame(sendSeq, p) {
    return encode(MESSAGE_SEND, "MessageSend", {
      receiver_type: p.receiver_type, receiver_id: p.receiver_id, type: 1,
      content: p.content, send_sequence: sendSeq, send_time: p.send_time,
    });
  }

  function send(ev) {
    ev.preventDefault();
    const input = $("compose-input");
    const content = input.value.trim();
    if (!content || !S.current) return;
    S.session.send_seq += 1;
    save("goim.session", S.session);  // before sending: a reused send_sequence would be deduped
    const sendSeq = S.session.send_seq;
    const p = {receiver_type: S.current.type, receiver_id: S.current.id, content, send_time: Date.now(), state: "pending"};
    S.pending.set(sendSeq, p);
    input.value = "";
    if (S.signedIn) sendFrames([sendFrame(sendSeq, p)]);
    renderMessages();
    input.focus();
  }

  function onSendAck(ack) {
    const seq = Number(ack.send_sequence);
    const p = S.pending.get(seq);
    if (!p) return;
    if (ack.code === 0) {
      p.state = "sent";
      p.seq = Number(ack.sync_sequence);
      if (S.messages.has(p.seq) || p.seq <= S.contiguous) S.pending.delete(seq);
    } else if (ack.code === 1 || ack.code === 5) {
      setTimeout(() => { if (S.pending.get(seq) === p && S.signedIn) sendFrames([sendFrame(seq, p)]); }, RETRY_SEND_MS);
      return;
    } else {
      p.state = "refused";
      p.why = SEND_CODES[ack.code] || `code ${ack.code}`;
      showError(`A message was refused: ${p.why}.`);
    }
    renderMessages();
  }

  function resetMessages() {
    S.messages = new Map();
    S.pending = new Map();
    S.unread = new Map();
    S.contiguous = 0;
    S.current = null;
  }

  // --- friends and groups -------------------------------------------------------------------
  function knownConv(key) {
    const id = Number(key.slice(1));
    return key[0] === "g" ? S.groups.some((g) => g.id === id) : S.friends.some((f) => f.user_id === id);
  }

  let listsLoading = null;
  function refreshLists() {
    if (!S.session) return Promise.resolve();
    if (!listsLoading) {
      listsLoading = Promise.all([api("GET", "/friend/all"), api("GET", "/group/all")])
        .then(([friends, groups]) => {
          S.friends = friends || [];
          S.groups = groups || [];
          renderConvs();
          renderHeader();
        })
        .catch((e) => {
          if (e.code === 1 || e.code === 1001 || e.code === 4) showError(`Not signed in: ${e.message}`);
        })
        .finally(() => { listsLoading = null; });
    }
    return listsLoading;
  }

  async function addFriend(ev) {
    ev.preventDefault();
    clearError();
    const id = Number($("friend-id").value.trim());
    if (!Number.isInteger(id) || id <= 0) { showError("A user id is a positive whole number."); return; }
    try {
      await api("POST", "/friend", {friend_id: id, label: ""});
      $("friend-id").value = "";
      await refreshLists();
      select(RECEIVER_USER, id);
    } catch (e) { showError(`Cannot add friend ${id}: ${e.message}`); }
  }

  async function removeFriend(id) {
    clearError();
    try {
      await api("DELETE", `/friend/${id}`);
      await refreshLists();
    } catch (e) { showError(`Cannot remove friend ${id}: ${e.message}`); }
  }

  function parseIds(text) {
    return text.split(/[\s,]+/).filter(Boolean).map(Number);
  }

  async function createGroup(ev) {
    ev.preventDefault();
    clearError();
    const name = $("group-name").value.trim();
    const ids = parseIds($("group-members").value);
    if (ids.some((id) => !Number.isInteger(id) || id <= 0)) { showError("Members are user ids: positive whole numbers."); return; }
    try {
      const data = await api("POST", "/group", {name, user_ids: ids});
      $("group-name").value = ""; $("group-members").value = "";
      await refreshLists();
      select(RECEIVER_GROUP, data.id);
    } catch (e) { showError(`Cannot create the group: ${e.message}`); }
  }

  async function addMembers(groupId, text) {
    clearError();
    const ids = parseIds(text);
    if (!ids.length || ids.some((id) => !Number.isInteger(id) || id <= 0)) { showError("Members are user ids: positive whole numbers."); return; }
    try {
      await api("POST", "/group/user", {group_id: groupId, user_ids: ids});
      await refreshLists();
    } catch (e) { showError(`Cannot add to the group: ${e.message}`); }
  }

  async function leaveGroup(groupId) {
    clearError();
    try {
      await api("DELETE", "/group/user", {group_id: groupId, user_ids: [S.session.user_id]});
      if (S.current && S.current.type === RECEIVER_GROUP && S.current.id === groupId) S.current = null;
      await refreshLists();
      renderMessages();
    } catch (e) { showError(`Cannot leave the group: ${e.message}`); }
  }

  // --- rendering ------------------------------------------------------------------------------
  function nameOf(userId) {
    if (userId === S.session.user_id) return "You";
    const f = S.friends.find((x) => x.user_id === userId);
    if (f) return f.label || f.nickname || f.number;
    for (const g of S.groups) {
      const u = (g.users || []).find((x) => x.user_id === userId);
      if (u) return u.nickname || u.number;
    }
    return `user ${userId}`;
  }

  function renderMe() {
    $("my-name").textContent = S.session.nickname || S.session.number;
    $("my-id").textContent = String(S.session.user_id);
  }

  function convButton(type, id, label, detail) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    const key = (type === RECEIVER_GROUP ? "g" : "u") + id;
    b.dataset.conv = key;
    const name = document.createElement("span");
    name.textContent = label;
    const small = document.createElement("span");
    small.className = "detail";
    small.textContent = detail;
    name.append(" ", small);
    b.append(name);
    const unread = S.unread.get(key) || 0;
    if (unread) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = String(unread);
      badge.setAttribute("aria-label", `${unread} unread`);
      b.append(badge);
    }
    if (key === currentKey()) b.setAttribute("aria-current", "true");
    b.addEventListener("click", () => select(type, id));
    li.append(b);
    return li;
  }

  function renderConvs() {
    const friends = $("friends"), groups = $("groups");
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.conv : null;
    friends.replaceChildren(...S.friends.map((f) => convButton(RECEIVER_USER, f.user_id, f.label || f.nickname || f.number, `id ${f.user_id}`)));
    groups.replaceChildren(...S.groups.map((g) => {
      const n = (g.users || []).length;
      return convButton(RECEIVER_GROUP, g.id, g.name, `${n} member${n === 1 ? "" : "s"}`);
    }));
    if (!S.friends.length) friends.innerHTML = '<li class="empty">No friends yet</li>';
    if (!S.groups.length) groups.innerHTML = '<li class="empty">No groups yet</li>';
    if (focused) {  // re-rendering must not take the keyboard focus away
      const again = document.querySelector(`button[data-conv="${focused}"]`);
      if (again) again.focus();
    }
  }

  function select(type, id) {
    S.current = {type, id};
    S.unread.delete(currentKey());
    renderConvs();
    renderHeader();
    renderMessages();
    refreshCompose();
    $("compose-input").focus();
  }

  function renderHeader() {
    const title = $("conv-title"), actions = $("conv-actions");
    actions.replaceChildren();
    if (!S.current) { title.textContent = "Choose a conversation"; return; }
    const {type, id} = S.current;
    if (type === RECEIVER_USER) {
      title.textContent = `Chat with ${nameOf(id)}`;
      if (S.friends.some((f) => f.user_id === id)) {
        const b = document.createElement("button");
        b.type = "button"; b.className = "secondary"; b.id = "friend-remove";
        b.textContent = "Remove friend";
        b.addEventListener("click", () => removeFriend(id));
        actions.append(b);
      }
      return;
    }
    const group = S.groups.find((g) => g.id === id);
    title.textContent = group ? `Group ${group.name}` : `Group ${id} (you are not a member)`;
    if (!group) return;
    const label = document.createElement("label");
    label.htmlFor = "member-id"; label.className = "visually-hidden"; label.textContent = "User ids to add";
    const input = document.createElement("input");
    input.id = "member-id"; input.placeholder = "user ids";
    const add = document.createElement("button");
    add.type = "button"; add.className = "secondary"; add.id = "member-add"; add.textContent = "Add members";
    add.addEventListener("click", () => addMembers(id, input.value));
    const leave = document.createElement("button");
    leave.type = "button"; leave.className = "secondary"; leave.id = "group-leave"; leave.textContent = "Leave group";
    leave.addEventListener("click", () => leaveGroup(id));
    actions.append(label, input, add, leave);
  }

  function messageLi(item, opts) {
    const li = document.createElement("li");
    const mine = item.sender_id === S.session.user_id;
    li.className = (mine ? "mine" : "theirs") + (opts.state ? " " + opts.state : "");
    if (opts.seq) li.dataset.seq = String(opts.seq);
    if (opts.sendSeq) li.dataset.sendSeq = String(opts.sendSeq);
    const meta = document.createElement("span");
    meta.className = "meta";
    const when = new Date(Number(item.send_time) || Date.now());
    meta.textContent = `${nameOf(item.sender_id)} · ${when.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"})}` +
      (opts.state === "refused" ? ` · refused: ${opts.why}` : "");
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = item.content;
    li.append(meta, text);
    return li;
  }

  function renderMessages() {
    const list = $("messages");
    const key = currentKey();
    if (list.dataset.conv !== String(key)) { list.replaceChildren(); list.dataset.conv = String(key); }
    if (!key) return;
    // what the list should show, each with a key naming its content
    const wanted = [...S.messages.values()].filter((m) => convKey(m) === key)
      .sort((a, b) => a.sync_sequence - b.sync_sequence)
      .map((m) => ({key: `s${m.sync_sequence}`, make: () => messageLi(m, {seq: m.sync_sequence})}));
    for (const [sendSeq, p] of S.pending) {
      const k = (p.receiver_type === RECEIVER_GROUP ? "g" : "u") + p.receiver_id;
      if (k !== key) continue;
      const item = {sender_id: S.session.user_id, content: p.content, send_time: p.send_time};
      const state = p.state === "refused" ? "refused" : "pending";
      wanted.push({key: `p${sendSeq}:${state}`, make: () => messageLi(item, {sendSeq, state, why: p.why})});
    }
    // keep the nodes that stay, so that the live region announces only what is new
    const old = [...list.children];
    let same = 0;
    while (same < old.length && same < wanted.length && old[same].dataset.key === wanted[same].key) same += 1;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    for (const node of old.slice(same)) node.remove();
    for (const w of wanted.slice(same)) {
      const li = w.make();
      li.dataset.key = w.key;
      list.append(li);
    }
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function refreshCompose() {
    const can = Boolean(S.current) && !S.stopped;
    $("compose-input").disabled = !can;
    $("compose-send").disabled = !can;
  }

  // --- views ---------------------------------------------------------------------------------
  function showAuth() {
    $("auth").hidden = false;
    $("chat").hidden = true;
    $("me").hidden = true;
    clearInterval(S.listTimer);
    setStatus("offline", "Not signed in");
  }

  function enterChat() {
    $("auth").hidden = true;
    $("chat").hidden = false;
    $("me").hidden = false;
    S.stopped = false;
    // history comes from sync: the most recent messages, up to HISTORY of them
    S.messages = new Map();
    S.contiguous = Math.max(0, (S.session.seq || 0) - HISTORY);
    renderMe();
    renderConvs();
    renderHeader();
    refreshCompose();
    refreshLists();
    clearInterval(S.listTimer);
    S.listTimer = setInterval(() => { if (!document.hidden) refreshLists(); }, LIST_REFRESH_MS);
    S.attempt = 0;
    connect();
  }

  async function start() {
    $("register-form").addEventListener("submit", register);
    $("signin-form").addEventListener("submit", signIn);
    $("friend-form").addEventListener("submit", addFriend);
    $("group-form").addEventListener("submit", createGroup);
    $("compose").addEventListener("submit", send);
    $("compose-input").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("compose").requestSubmit(); }
    });
    $("sign-out").addEventListener("click", signOut);
    $("refresh").addEventListener("click", () => refreshLists());
    $("error-close").addEventListener("click", clearError);
    // the browser knows when the network is gone: stop trying until it is back, then
    // reconnect at once (sign-in and a sync from the last held seq catch up)
    window.addEventListener("offline", () => {
      if (!S.session || S.stopped) return;
      closeSocket();
      setStatus("offline", "Offline: no network. Reconnecting when it is back…");
      refreshCompose();
    });
    window.addEventListener("online", () => { if (S.session && !S.ws && !S.stopped) { S.attempt = 0; connect(); } });
    try {
      const [config, protoText] = await Promise.all([
        fetch("/web-config.json").then((r) => r.json()),
        fetch("/static/goim.proto").then((r) => r.text()),
      ]);
      S.wsUrl = config.ws_url || "/ws";
      const root = protobuf.parse(protoText, {keepCase: true}).root;
      S.types = {};
      for (const name of ["SignIn", "SignInACK", "SyncTrigger", "MessageSend", "MessageSendACK", "MessageItem", "Message", "MessageACK", "Kicked"]) {
        S.types[name] = root.lookupType("goim." + name);
      }
    } catch (e) {
      setStatus("offline", "Cannot load");
      showError(`The page could not load its configuration: ${e.message}. Reload to try again.`);
      return;
    }
    if (S.session && S.device) enterChat(); else showAuth();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
