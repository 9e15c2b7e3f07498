// Le Chat's conversation page: send, stream, stop, regenerate, edit, rename, switch model, delete, and the
// conversation's documents (attach by button or drop, their state, remove; the sources under each answer).
// No build step and no dependency. The server sends sanitised HTML for every reply (never raw model output
// to parse), so this script only ever assigns HTML that came out of the server's sanitiser.
"use strict";

(function () {
  const chat = document.getElementById("chat");
  if (!chat) return;
  const strings = JSON.parse(document.getElementById("chat-strings").textContent);
  const csrf = chat.dataset.csrf;
  const messages = document.getElementById("messages");
  const composer = document.getElementById("composer");
  const prompt = document.getElementById("prompt");
  const modelSelect = document.getElementById("model");
  const systemPrompt = document.getElementById("system-prompt");
  const status = document.getElementById("status");
  const sendButton = composer.querySelector("button[type=submit]");
  const stopButton = composer.querySelector("[data-action=stop]");
  const regenerateButton = chat.querySelector("[data-action=regenerate]");
  const editButton = chat.querySelector("[data-action=edit]");
  let conversationId = chat.dataset.conversationId || null;
  let running = null; // {controller, body, done}
  let editing = false;

  function api(path, options) {
    const init = Object.assign({ credentials: "same-origin" }, options || {});
    init.headers = Object.assign({ "X-CSRF-Token": csrf, "Accept": "application/json" }, init.headers || {});
    if (init.json !== undefined) {
      init.body = JSON.stringify(init.json);
      init.headers["Content-Type"] = "application/json";
      delete init.json;
    }
    return fetch(path, init);
  }

  // `retry`: what the Retry button does (nothing shown when absent).
  function showStatus(text, retry) {
    status.textContent = text;
    status.hidden = false;
    status.className = "status error";
    if (retry) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = strings.retry;
      button.dataset.testid = "retry";
      button.addEventListener("click", () => { clearStatus(); retry(); });
      status.appendChild(document.createTextNode(" "));
      status.appendChild(button);
    }
  }

  function clearStatus() {
    status.hidden = true;
    status.textContent = "";
  }

  function addCopyButtons(root) {
    root.querySelectorAll("pre").forEach((pre) => {
      if (pre.parentElement.classList.contains("code-block")) return;
      const wrapper = document.createElement("div");
      wrapper.className = "code-block";
      pre.replaceWith(wrapper);
      wrapper.appendChild(pre);
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = strings.copy;
      button.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(pre.innerText);
          button.textContent = strings.copied;
          setTimeout(() => { button.textContent = strings.copy; }, 1500);
        } catch (error) {
          const range = document.createRange();
          range.selectNodeContents(pre);
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
        }
      });
      wrapper.insertBefore(button, pre);
    });
  }

  function messageElement(role) {
    const item = document.createElement("li");
    item.className = "message " + role;
    const body = document.createElement("div");
    body.className = "message-body";
    item.appendChild(body);
    messages.appendChild(item);
    return item;
  }

  function setMeta(item, message) {
    let meta = item.querySelector(".meta");
    if (!meta) {
      meta = document.createElement("p");
      meta.className = "meta";
      item.appendChild(meta);
    }
    let text = message.model + " · " + (message.prompt_tokens || 0) + " + " + (message.completion_tokens || 0) +
      " " + strings.tokens;
    if (message.finish_reason === "cancelled") { text += " · " + strings.stopped; item.classList.add("stopped"); }
    if (message.finish_reason === "length") text += " · " + strings.cut;
    meta.textContent = text;
  }

  function addUserMessage(message) {
    const item = messageElement("user");
    item.querySelector(".message-body").innerHTML = message.html; // sanitised by the server
    const raw = document.createElement("div");
    raw.className = "raw";
    raw.hidden = true;
    raw.textContent = message.content;
    item.appendChild(raw);
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }

  function setRunning(isRunning) {
    sendButton.hidden = isRunning;
    stopButton.hidden = !isRunning;
    regenerateButton.disabled = isRunning;
    editButton.disabled = isRunning;
    prompt.readOnly = isRunning;
    chat.classList.toggle("generating", isRunning);
  }

  async function stream(path, payload) {
    clearStatus();
    const controller = new AbortController();
    running = { controller: controller, done: false };
    setRunning(true);
    let reply = null;
    try {
      const response = await api(path, { method: "POST", json: payload, signal: controller.signal,
                                         headers: { "Accept": "text/event-stream" } });
      if (!response.ok) {
        await showHttpError(response);
        await refreshMessages();
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (!block.startsWith("data: ")) continue;
          reply = handleEvent(JSON.parse(block.slice(6)), reply);
        }
      }
      if (!running.done && reply) {
        showStatus(strings.network, retryAfterNetworkError);
      }
    } catch (error) {
      if (error.name !== "AbortError") showStatus(strings.network, retryAfterNetworkError);
    } finally {
      running = null;
      setRunning(false);
      regenerateButton.hidden = false;
      editButton.hidden = false;
    }
  }

  function handleEvent(event, reply) {
    const follow = nearBottom();
    if (event.type === "start") {
      if (event.user_message) addUserMessage(event.user_message);
      reply = messageElement("assistant");
      reply.classList.add("streaming");
      reply.dataset.testid = "streaming-reply";
    } else if (event.type === "delta") {
      if (event.html !== undefined) reply.querySelector(".message-body").innerHTML = event.html;
    } else if (event.type === "done") {
      const body = reply.querySelector(".message-body");
      body.innerHTML = event.message.html; // sanitised by the server
      addCopyButtons(body);
      addSources(reply, event.message.references);
      setMeta(reply, event.message);
      reply.classList.remove("streaming");
      delete reply.dataset.testid;
      running.done = true;
    } else if (event.type === "error") {
      running.done = true;
      if (reply) reply.classList.remove("streaming");
      showError(event.status, event.code, event.message, event.retry_after);
    }
    if (follow) window.scrollTo(0, document.body.scrollHeight);
    return reply;
  }

  async function showHttpError(response) {
    let body = {};
    try { body = await response.json(); } catch (error) { body = {}; }
    const retryAfter = response.headers.get("Retry-After");
    showError(response.status, body.code, body.message || response.statusText, retryAfter);
  }

  function showError(statusCode, code, message, retryAfter) {
    if (statusCode === 429) {
      showStatus(strings.rate_limited.replace("{seconds}", retryAfter || "1"), regenerate);
    } else if (statusCode === 503 || code === "model_not_found" || code === "engine_unavailable") {
      showStatus(strings.unavailable + " (" + message + ")", code === "model_not_found" ? null : regenerate);
    } else {
      showStatus(strings.error + " " + message, statusCode >= 500 ? regenerate : null);
    }
  }

  // After a refusal the server's history is the truth (a rate-limited message was saved for the retry; a
  // refused edit was not): redraw the messages from it, HTML sanitised by the server.
  async function refreshMessages() {
    if (!conversationId) return;
    let detail;
    try {
      const response = await api("/chat/api/conversations/" + conversationId);
      if (!response.ok) return;
      detail = await response.json();
    } catch (error) { return; }
    messages.textContent = "";
    detail.messages.forEach((message) => {
      if (message.role === "user") { addUserMessage(message); return; }
      const item = messageElement("assistant");
      item.querySelector(".message-body").innerHTML = message.html;
      addCopyButtons(item);
      addSources(item, message.references);
      setMeta(item, message);
    });
  }

  async function ensureConversation() {
    if (conversationId) return conversationId;
    const response = await api("/chat/api/conversations", {
      method: "POST", json: { model: modelSelect.value, system_prompt: systemPrompt.value },
    });
    if (!response.ok) {
      await showHttpError(response);
      return null;
    }
    const created = await response.json();
    conversationId = created.id;
    const welcome = chat.querySelector(".welcome");
    if (welcome) welcome.remove();
    chat.dataset.conversationId = conversationId;
    history.replaceState(null, "", "/chat/c/" + conversationId);
    return conversationId;
  }

  // A message that never reached the server is still in the composer: send it; otherwise answer again.
  function retryAfterNetworkError() {
    if (prompt.value.trim()) send(); else regenerate();
  }

  async function send() {
    const content = prompt.value;
    if (!content.trim() || running) return;
    await uploads; // a question asked while documents upload is answered from them
    let id;
    try {
      id = await ensureConversation();
    } catch (error) {
      showStatus(strings.network, retryAfterNetworkError);
      return;
    }
    if (!id) return;
    prompt.value = "";
    if (editing) {
      editing = false;
      removeFromLastUser(true);
      await stream("/chat/api/conversations/" + id + "/edit", { content: content, model: modelSelect.value });
    } else {
      await stream("/chat/api/conversations/" + id + "/messages", { content: content, model: modelSelect.value });
    }
    const last = lastUserItem();
    if (!last || last.querySelector(".raw").textContent !== content) prompt.value = content; // not saved: keep it
  }

  function lastUserItem() {
    const users = messages.querySelectorAll("li.message.user");
    return users.length ? users[users.length - 1] : null;
  }

  function removeFromLastUser(includingIt) {
    const last = lastUserItem();
    if (!last) return;
    while (last.nextElementSibling) last.nextElementSibling.remove();
    if (includingIt) last.remove();
  }

  async function regenerate() {
    if (!conversationId || running) return;
    removeFromLastUser(false);
    await stream("/chat/api/conversations/" + conversationId + "/regenerate", { model: modelSelect.value });
  }

  async function stop() {
    if (!running) return;
    const current = running;
    try {
      await api("/chat/api/conversations/" + conversationId + "/stop", { method: "POST" });
    } catch (error) { /* the abort below still stops it */ }
    setTimeout(() => { if (running === current && !current.done) current.controller.abort(); }, 3000);
  }

  async function patch(values) {
    if (!conversationId) return null;
    const response = await api("/chat/api/conversations/" + conversationId, { method: "PATCH", json: values });
    if (!response.ok) { await showHttpError(response); return null; }
    return response.json();
  }

  composer.addEventListener("submit", (event) => { event.preventDefault(); send(); });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); send(); }
    if (event.key === "Escape") stop();
  });
  stopButton.addEventListener("click", stop);
  regenerateButton.addEventListener("click", regenerate);
  editButton.addEventListener("click", () => {
    const last = lastUserItem();
    if (!last) return;
    prompt.value = last.querySelector(".raw").textContent;
    editing = true;
    prompt.focus();
  });
  modelSelect.addEventListener("change", () => patch({ model: modelSelect.value }));
  systemPrompt.addEventListener("change", () => patch({ system_prompt: systemPrompt.value }));
  const title = document.getElementById("title");
  if (title) {
    title.form.addEventListener("submit", (event) => { event.preventDefault(); title.blur(); });
    title.addEventListener("change", async () => {
      const updated = await patch({ title: title.value });
      const link = document.querySelector('.conversation-list a[data-id="' + conversationId + '"]');
      if (updated && link) link.textContent = updated.title;
    });
  }
  const deleteButton = chat.querySelector("[data-action=delete]");
  if (deleteButton) {
    deleteButton.addEventListener("click", async () => {
      if (!window.confirm(strings.confirm_delete)) return;
      const response = await api("/chat/api/conversations/" + conversationId, { method: "DELETE" });
      if (response.ok) window.location.assign("/chat");
      else await showHttpError(response);
    });
  }
  // Documents. Uploads run one after another (the server processes each before answering), queued in
  // `uploads`; every name and message is set as text, never as HTML.
  const dropzone = document.getElementById("dropzone");
  const attachInput = document.getElementById("attach-input");
  const attachmentList = document.getElementById("attachment-list");
  const plural = new Intl.PluralRules(document.documentElement.lang || "en");
  let uploads = Promise.resolve();

  function counted(forms, count) {
    return (forms[plural.select(count)] || forms.other).replace("{num}", String(count));
  }

  function readyText(file) {
    let text = strings.ready;
    if (file.num_pages) text += " · " + counted(strings.num_pages, file.num_pages);
    return text + " · " + counted(strings.num_passages, file.num_chunks);
  }

  function attachmentItem(filename) {
    const item = document.createElement("li");
    item.className = "attachment uploading";
    item.dataset.testid = "attachment";
    const name = document.createElement("span");
    name.className = "attachment-name";
    name.textContent = filename;
    const state = document.createElement("span");
    state.className = "attachment-state";
    state.dataset.testid = "attachment-state";
    state.textContent = strings.uploading;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove-file";
    remove.dataset.action = "remove-file";
    remove.dataset.testid = "remove-file";
    remove.textContent = strings.remove;
    remove.setAttribute("aria-label", strings.remove_named.replace("{name}", filename));
    remove.hidden = true;
    item.append(name, " ", state, " ", remove);
    attachmentList.appendChild(item);
    return item;
  }

  function uploadFailed(item, message) {
    item.className = "attachment failed";
    item.querySelector(".attachment-state").textContent = strings.failed + " " + message;
  }

  async function upload(item, file) {
    const state = item.querySelector(".attachment-state");
    try {
      const id = await ensureConversation();
      if (!id) { uploadFailed(item, status.textContent || strings.network); return; }
      const form = new FormData();
      form.append("file", file, file.name);
      const response = await api("/chat/api/conversations/" + id + "/files", { method: "POST", body: form });
      let body = {};
      try { body = await response.json(); } catch (error) { body = {}; }
      if (!response.ok) { uploadFailed(item, body.message || response.statusText); return; }
      item.className = "attachment ready";
      item.dataset.fileId = body.id;
      state.textContent = readyText(body);
    } catch (error) {
      uploadFailed(item, strings.network);
    } finally {
      item.querySelector(".remove-file").hidden = false;
    }
  }

  function attachFiles(files) {
    Array.from(files).forEach((file) => {
      const item = attachmentItem(file.name);
      uploads = uploads.then(() => upload(item, file));
    });
  }

  async function removeAttachment(item) {
    const fileId = item.dataset.fileId;
    if (!fileId) { item.remove(); return; } // a failed upload: nothing on the server
    const response = await api("/chat/api/conversations/" + conversationId + "/files/" + encodeURIComponent(fileId),
                               { method: "DELETE" });
    if (response.ok || response.status === 404) item.remove();
    else await showHttpError(response);
  }

  // Under an answer: the passages it was given, as text (the filename and the passage are never HTML).
  function addSources(item, references) {
    if (!references || !references.length || item.querySelector(".sources")) return;
    const box = document.createElement("div");
    box.className = "sources";
    box.dataset.testid = "sources";
    const title = document.createElement("p");
    title.className = "sources-title";
    title.textContent = strings.sources;
    const list = document.createElement("ol");
    references.forEach((reference) => {
      const entry = document.createElement("li");
      entry.className = "source";
      entry.dataset.testid = "source";
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      let label = "[" + reference.id + "] " + reference.filename;
      if (reference.page_start) {
        label += " · " + (reference.page_end && reference.page_end !== reference.page_start
          ? strings.pages.replace("{start}", reference.page_start).replace("{end}", reference.page_end)
          : strings.page.replace("{page}", reference.page_start));
      }
      summary.textContent = label + " · " + strings.score.replace("{score}", reference.score.toFixed(2));
      const passage = document.createElement("blockquote");
      passage.className = "passage";
      passage.textContent = reference.text;
      details.append(summary, passage);
      entry.appendChild(details);
      list.appendChild(entry);
    });
    box.append(title, list);
    const meta = item.querySelector(".meta");
    if (meta) item.insertBefore(box, meta); else item.appendChild(box);
  }

  chat.querySelector("[data-action=attach]").addEventListener("click", () => attachInput.click());
  attachInput.addEventListener("change", () => {
    attachFiles(attachInput.files);
    attachInput.value = "";
  });
  attachmentList.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action=remove-file]");
    if (button) removeAttachment(button.closest("li.attachment"));
  });
  function carriesFiles(event) {
    return event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  }
  chat.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    dropzone.classList.add("dragging");
  });
  chat.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget || !chat.contains(event.relatedTarget)) dropzone.classList.remove("dragging");
  });
  chat.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dropzone.classList.remove("dragging");
    attachFiles(event.dataTransfer.files);
  });

  addCopyButtons(messages);
  if (!messages.children.length) { regenerateButton.hidden = true; editButton.hidden = true; }
})();
