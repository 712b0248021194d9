// ssechat room page: live messages, presence and typing over one EventSource; sending
// with fetch. The page works without this script (the form posts and the server answers).
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const list = $("messages");
  const form = $("composer");
  if (!list || !form) return;

  const room = list.dataset.room;
  const root = list.dataset.root;
  // Who reads (signed in, else ""), whether they moderate here, how long authors may edit.
  const viewer = list.dataset.viewer || "";
  const moderates = list.dataset.moderates === "true";
  const editWindowMs = Number(list.dataset.editWindow || 0) * 1000;
  // The id of the last message on the page: the stream starts exactly after it.
  let lastId = Number(list.dataset.lastId) || 0;
  const status = $("status");
  const author = form.elements.author;
  const text = form.elements.text;
  const title = document.title;
  // As the server stores names: trimmed, in NFC (a decomposed "José" is still you).
  const me = () => author.value.trim().normalize("NFC");

  const clock = (iso) =>
    new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  // The server writes "14:03:02 UTC"; here times are local, and the title names the zone.
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  const showTime = (time) => {
    time.textContent = clock(time.dateTime);
    time.title = zone;
  };

  const setStatus = (s) => {
    status.textContent = s;
    status.dataset.state = s === "live" ? "live" : "down";
  };

  let error = $("error");
  const showError = (message) => {
    if (!error) {
      error = document.createElement("p");
      error.id = "error";
      error.className = "error";
      error.setAttribute("role", "alert");
      form.before(error);
    }
    error.hidden = !message;
    error.textContent = message || "";
  };

  // Links: http(s) only, never able to reach back into this page.
  const linkify = (node, body) => {
    let at = 0;
    for (const m of body.matchAll(/https?:\/\/[^\s<>"'`]+/g)) {
      const url = m[0].replace(/[.,;:!?)\]}]+$/, "");
      if (/^https?:\/\/$/.test(url)) continue; // a scheme and nothing else
      node.append(body.slice(at, m.index));
      const a = document.createElement("a");
      a.href = url;
      a.rel = "noopener nofollow";
      a.target = "_blank";
      a.textContent = url;
      node.append(a);
      at = m.index + url.length;
    }
    node.append(body.slice(at));
  };

  const mark = (li) => li.classList.toggle("mine", li.dataset.author === me());
  for (const li of list.querySelectorAll(".msg")) {
    showTime(li.querySelector("time"));
    mark(li);
  }

  const nearBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const append = (node) => {
    const stick = nearBottom();
    list.append(node);
    if (stick) list.scrollTop = list.scrollHeight;
  };

  let unread = 0;
  const showUnread = () => (document.title = unread ? `(${unread}) ${title}` : title);
  // The "new messages" line, before the first message that arrives while the tab is
  // hidden: one at a time, so it moves there from wherever it was.
  const markNew = (li) => {
    const line = $("new-messages") || document.createElement("li");
    Object.assign(line, { id: "new-messages", className: "divider", textContent: "New messages" });
    line.setAttribute("role", "separator");
    line.setAttribute("aria-label", "New messages");
    li.before(line);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) unread = 0;
    showUnread();
  });

  // The controls the server renders: own messages (posted signed in) and, for moderators, all.
  const button = (tag, cls, label, url, post) => {
    const el = document.createElement(tag);
    el.className = cls;
    if (post) {
      Object.assign(el, { method: "post", action: url });
      el.append(Object.assign(document.createElement("button"), { type: "submit", textContent: label }));
    } else Object.assign(el, { href: url, textContent: label });
    return el;
  };
  const controls = (li, m) => {
    const url = `${root}rooms/${encodeURIComponent(room)}/messages/${m.id}`;
    const own = viewer !== "" && m.user === true && m.author === viewer;
    if (own && Date.now() - new Date(m.time).getTime() < editWindowMs) li.append(" ", button("a", "edit", "Edit", `${url}/edit`));
    if (own || moderates) li.append(" ", button("form", "delete", "Delete", `${url}/delete`, true));
  };

  // A message's text, and its "(edited)" mark.
  const fillText = (body, m) => {
    body.replaceChildren();
    linkify(body, m.text);
    if (!m.edited) return;
    const mark = body.parentNode.querySelector(".edited") || document.createElement("small");
    if (!mark.isConnected) body.after(" ", mark);
    Object.assign(mark, { className: "edited", title: m.edited, textContent: "(edited)" });
  };

  // Deletes and edits are log entries with ids of their own: the stream resumes after them.
  const entry = (e, apply) => {
    lastId = Math.max(lastId, Number(e.lastEventId));
    const m = JSON.parse(e.data);
    const li = $("m" + m.id);
    if (li) apply(li, m);
  };

  const render = (m) => {
    if (m.id <= lastId) return; // already shown
    lastId = m.id;
    const li = document.createElement("li");
    li.className = "msg";
    li.id = "m" + m.id;
    li.dataset.id = m.id;
    li.dataset.author = m.author;
    const time = document.createElement("time");
    time.dateTime = m.time;
    showTime(time);
    const who = document.createElement("b");
    who.className = "author";
    who.textContent = m.author;
    const body = document.createElement("span");
    body.className = "text";
    // Verified: sent by a signed-in user. A guest's name is whatever they typed.
    const badge = document.createElement("span");
    badge.className = m.user ? "verified" : "guest";
    badge.title = m.user ? "a signed-in user" : "a guest: anyone may type this name";
    badge.textContent = m.user ? " ✓" : " (guest)";
    if (m.user) li.dataset.user = "true";
    li.append(time, " ", who, badge, " ", body);
    fillText(body, m);
    controls(li, m);
    mark(li);
    append(li);
    stopTyping(m.author);
    if (document.hidden) {
      if (!unread) markNew(li);
      unread += 1;
      showUnread();
    }
  };

  // The server no longer holds what we asked for. An oldest id at or below ours means the
  // ids started over (a server without durable history restarted): the page starts over too.
  const reset = (oldest) => {
    if (oldest <= lastId) list.replaceChildren();
    const li = document.createElement("li");
    li.className = "notice";
    // What was missed may have deleted or edited messages shown: a reload shows the current state.
    li.append("Some messages are no longer available. ", button("a", "", "Reload", location.href));
    append(li);
    lastId = oldest - 1;
  };

  // Every presence and typing event costs the same however busy the room: lists are
  // bounded, and a text is only written when it changes (aria-live reads each change out).
  const setText = (node, s) => {
    if (node.textContent !== s) node.textContent = s;
  };
  const others = (n) => `${n} other${n === 1 ? "" : "s"}`;

  const MAX_NAMES = 50; // the server lists at most --presence-names (20); never more here
  const presence = (view) => {
    const names = view.names.slice(0, MAX_NAMES);
    const items = names.map((n) => {
      const li = document.createElement("li");
      li.textContent = n;
      if (n === me()) li.className = "mine";
      return li;
    });
    $("presence").replaceChildren(...items);
    const rest = view.anonymous + view.names.length - names.length;
    setText($("anonymous"), !rest ? "" : names.length ? `and ${others(rest)}` : `${rest} reading`);
    // The phone drawer's summary ("Rooms · 3 here"), rendered by the server, kept live here.
    setText($("here-count"), `${view.anonymous + view.names.length} here`);
  };

  // Message counts in the room list, live (the rooms a guest may read: README, "rooms").
  // A room not listed yet goes first: it was just active.
  const MAX_ROOMS = 50;
  const roomList = $("room-list");
  const rooms = (counts) => {
    if (!roomList) return;
    for (const r of counts.rooms) {
      let li = [...roomList.children].find((li) => li.dataset.room === r.name);
      if (!li && roomList.children.length < MAX_ROOMS) {
        li = document.createElement("li");
        li.dataset.room = r.name;
        const a = Object.assign(document.createElement("a"), { href: `${root}rooms/${r.name}`, textContent: `#${r.name}` });
        const count = Object.assign(document.createElement("span"), { className: "count", title: "messages" });
        li.append(a, " ", count);
        roomList.prepend(li);
      }
      const count = li && li.querySelector(".count");
      if (count) setText(count, String(r.messages));
    }
  };

  // Who is typing, in order of arrival: at most MAX_TYPISTS at once (a flood adds nobody
  // past that), the first two by name and the rest counted.
  const MAX_TYPISTS = 50;
  const typists = new Map(); // author -> timer
  const showTyping = () => {
    const [first, second] = typists.keys();
    const rest = typists.size - 2;
    setText($("typing"), !first ? ""
      : !second ? `${first} is typing…`
      : rest <= 0 ? `${first} and ${second} are typing…`
      : `${first}, ${second} and ${others(rest)} are typing…`);
  };
  const stopTyping = (who) => {
    clearTimeout(typists.get(who));
    if (typists.delete(who)) showTyping();
  };
  const typing = (who) => {
    if (who === me() || (!typists.has(who) && typists.size >= MAX_TYPISTS)) return;
    clearTimeout(typists.get(who));
    typists.set(who, setTimeout(() => stopTyping(who), 4000));
    showTyping();
  };

  // This tab's reader id, kept across reconnects and reloads (and so across nodes): a
  // reader that moves to another node is counted once in presence.
  const readerId = (() => {
    try {
      let id = sessionStorage.getItem("ssechat-reader");
      if (!id) {
        const bytes = crypto.getRandomValues(new Uint8Array(12));
        id = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
        sessionStorage.setItem("ssechat-reader", id);
      }
      return `&reader=${id}`;
    } catch {
      return ""; // storage off: counted without an id
    }
  })();

  let source = null;
  // Set once the server said this page may no longer read the room: no more reconnecting.
  let revoked = false;
  const revoke = (reason) => {
    revoked = true;
    source.close();
    setStatus("no access");
    showError(`${reason}. Reload the page to try again.`);
  };
  // EventSource gave up (the server answered with an error): ask why before trying again,
  // so a refusal (401/403) is shown instead of retried forever.
  const retry = async () => {
    try {
      const res = await fetch(`${root}history?room=${encodeURIComponent(room)}&limit=1`, {
        headers: { accept: "application/json" },
      });
      if (res.status === 401 || res.status === 403) {
        revoke((await res.json().catch(() => ({ error: res.statusText }))).error);
        return;
      }
    } catch {
      // the server is unreachable: try again below
    }
    setTimeout(connect, 1000 + Math.random() * 2000);
  };
  const connect = () => {
    if (revoked) return;
    const name = me() ? `&name=${encodeURIComponent(me())}` : "";
    source = new EventSource(`${root}events?room=${encodeURIComponent(room)}&since=${lastId}&presence=1${name}${readerId}`);
    source.addEventListener("open", () => setStatus("live"));
    source.addEventListener("message", (e) => render(JSON.parse(e.data)));
    source.addEventListener("delete", (e) => entry(e, (li) => li.remove()));
    source.addEventListener("edit", (e) => entry(e, (li, m) => fillText(li.querySelector(".text"), m)));
    source.addEventListener("reset", (e) => reset(JSON.parse(e.data).oldest_id));
    source.addEventListener("presence", (e) => presence(JSON.parse(e.data)));
    source.addEventListener("typing", (e) => typing(JSON.parse(e.data).author));
    source.addEventListener("rooms", (e) => rooms(JSON.parse(e.data)));
    source.addEventListener("revoked", (e) => revoke(JSON.parse(e.data).reason));
    source.addEventListener("error", () => {
      if (revoked) return;
      setStatus("reconnecting…");
      // EventSource retries by itself unless the server answered with an error; then we do.
      if (source.readyState === EventSource.CLOSED) retry();
    });
  };

  author.value ||= localStorage.getItem("ssechat.author") || "";
  connect();

  // A new name: remember it, and reconnect so presence shows it (from where we are: no gap).
  author.addEventListener("change", () => {
    localStorage.setItem("ssechat.author", me());
    for (const li of list.querySelectorAll(".msg")) mark(li);
    source.close();
    connect();
  });

  let typedAt = 0;
  text.addEventListener("input", () => {
    if (!me() || !text.value.trim() || Date.now() - typedAt < 3000) return;
    typedAt = Date.now();
    fetch(`${root}typing`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ room, author: me() }),
    }).catch(() => {});
  });

  // Posts the form. A network failure or a 503 is retried with the same client_id, so the
  // server stores the message once however many tries reach it.
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    body.set("client_id", crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`);
    const post = () => fetch(form.action, { method: "POST", headers: { Accept: "application/json" }, body });
    for (let attempt = 1; ; attempt++) {
      let res = null;
      try {
        res = await post();
      } catch {
        // no answer at all: the message may or may not have arrived; the retry settles it
      }
      if (res && res.ok) {
        localStorage.setItem("ssechat.author", me());
        text.value = "";
        typedAt = 0;
        showError("");
        break;
      }
      if (attempt < 4 && (!res || res.status === 503)) {
        showError("Sending…");
        await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
        continue;
      }
      const problem = res ? await res.json().catch(() => ({ error: res.statusText })) : null;
      showError(problem ? problem.error : "Could not reach the server; the message was not sent.");
      break;
    }
    text.focus();
  });

  // Delete buttons send DELETE; the stream removes the message here and on every open page.
  list.addEventListener("submit", async (e) => {
    if (!e.target.matches("form.delete")) return;
    e.preventDefault();
    const url = e.target.action.replace(/\/delete$/, "");
    const res = await fetch(url, { method: "DELETE", headers: { Accept: "application/json" } }).catch(() => null);
    const problem = res && !res.ok && (await res.json().catch(() => ({ error: res.statusText })));
    showError(res ? problem && problem.error : "Could not reach the server; nothing was deleted.");
  });

  // Enter sends; Shift+Enter starts a new line.
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  list.scrollTop = list.scrollHeight;
})();
