// ssechat room page: live messages over EventSource, sending with fetch.
// The page works without this script (the form posts and the server answers with the page).
(() => {
  "use strict";
  const list = document.getElementById("messages");
  const form = document.getElementById("composer");
  if (!list || !form) return;

  const room = list.dataset.room;
  const root = list.dataset.root;
  // The id of the last message on the page: the stream starts exactly after it.
  let lastId = Number(list.dataset.lastId) || 0;
  const status = document.getElementById("status");
  const author = form.elements.author;
  const text = form.elements.text;

  const clock = (iso) =>
    new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  for (const t of list.querySelectorAll("time")) t.textContent = clock(t.dateTime);

  const setStatus = (s) => {
    status.textContent = s;
    status.dataset.state = s === "live" ? "live" : "down";
  };

  let error = document.getElementById("error");
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

  const nearBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 40;

  const append = (node) => {
    const stick = nearBottom();
    list.append(node);
    if (stick) list.scrollTop = list.scrollHeight;
  };

  const render = (m) => {
    if (m.id <= lastId) return; // already shown
    lastId = m.id;
    const li = document.createElement("li");
    li.className = "msg";
    li.id = "m" + m.id;
    li.dataset.id = m.id;
    const time = document.createElement("time");
    time.dateTime = m.time;
    time.textContent = clock(m.time);
    const who = document.createElement("b");
    who.className = "author";
    who.textContent = m.author;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = m.text;
    li.append(time, " ", who, " ", body);
    append(li);
  };

  // The server no longer holds what we asked for. An oldest id at or below ours means the
  // ids started over (a server without durable history restarted): the page starts over too.
  const reset = (oldest) => {
    if (oldest <= lastId) list.replaceChildren();
    const li = document.createElement("li");
    li.className = "notice";
    li.textContent = "Some messages are no longer available.";
    append(li);
    lastId = oldest - 1;
  };

  let source = null;
  const connect = () => {
    source = new EventSource(`${root}events?room=${encodeURIComponent(room)}&since=${lastId}`);
    source.addEventListener("open", () => setStatus("live"));
    source.addEventListener("message", (e) => render(JSON.parse(e.data)));
    source.addEventListener("reset", (e) => reset(JSON.parse(e.data).oldest_id));
    source.addEventListener("error", () => {
      setStatus("reconnecting…");
      // EventSource retries by itself unless the server answered with an error; then we do.
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000 + Math.random() * 2000);
    });
  };
  connect();

  author.value ||= localStorage.getItem("ssechat.author") || "";

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    try {
      const res = await fetch(form.action, { method: "POST", headers: { Accept: "application/json" }, body });
      if (res.ok) {
        localStorage.setItem("ssechat.author", author.value.trim());
        text.value = "";
        showError("");
      } else {
        const problem = await res.json().catch(() => ({ error: res.statusText }));
        showError(problem.error);
      }
    } catch {
      showError("Could not reach the server; the message was not sent.");
    }
    text.focus();
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
