// Following one task: its status, progress and stages, its events (replayed from the start, then live, over
// Server-Sent Events, else WebSocket, else polling), the rows found on the way (found.js), a retry's reason and
// countdown, and whether a worker runs.
import { addFound, markFound, resetFound } from "./found.js";
import { clearResult, renderResult } from "./results.js";
import { count } from "./values.js";

const STAGES = ["schema_preparation", "search", "extraction", "assembly"];
const STAGE_LABELS = {
  queued: "Queue",
  schema_preparation: "Schema preparation",
  search: "Search",
  extraction: "Extraction",
  assembly: "Assembly",
  done: "Done",
};
const WARNING_KINDS = new Set(["stage_retrying", "source_warning", "source_failed", "budget_reached"]);
const MAX_LOG = 1000;
// a job still queued after this long makes the page ask /ready whether any worker runs
const QUEUED_CHECK_MS = 3000;
const QUEUED_RECHECK_MS = 5000;

let current = null; // { taskId, source, socket, poll, progress, lastSeq, finished, status, queueTimer, retryTimer, retryAt }

/** The id of the task the page follows, if any. */
export const currentTaskId = () => (current ? current.taskId : null);

/** A URL with ?token=… appended when a key is stored (for EventSource and WebSocket, which take no headers). */
function withKey(path) {
  const key = apiKey();
  if (!key) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(key);
}

/** Tell the rest of the page that a task ended (the recent list refreshes). */
function announceEnd(taskId) {
  window.dispatchEvent(new CustomEvent("litminer:task-ended", { detail: { taskId } }));
}

export function stopListening() {
  if (!current) return;
  if (current.source) current.source.close();
  if (current.socket) current.socket.close();
  if (current.poll) clearTimeout(current.poll);
  clearTimeout(current.queueTimer);
  current.source = current.socket = current.poll = null;
}

// ---------------------------------------------------------------- what the job card shows

function setStatusBadge(status) {
  const badge = $("#job-status");
  badge.textContent = status;
  badge.dataset.status = status;
}

function setStages(stage, status) {
  const index = stage === "done" ? STAGES.length : STAGES.indexOf(stage); // -1 for "queued"
  for (const item of document.querySelectorAll("#stages > li")) {
    const i = STAGES.indexOf(item.dataset.stage);
    let state = "pending";
    if (status === "completed" || i < index) state = "done";
    else if (i === index) {
      if (status === "error") state = "failed";
      else if (status === "cancelled") state = "cancelled";
      else if (status === "retrying") state = "retrying";
      else state = "running";
    }
    item.dataset.state = state;
    item.querySelector(".stage-state").textContent = state;
    if (state === "running" || state === "retrying") item.setAttribute("aria-current", "step");
    else item.removeAttribute("aria-current");
  }
}

function setProgress(value) {
  const clamped = Math.max(0, Math.min(100, Math.round(Number(value) || 0)));
  const bar = $("#progress");
  bar.value = clamped;
  bar.textContent = `${clamped} %`;
  $("#progress-text").textContent = `${clamped} %`;
}

function showJobState({ status, stage, progress, message }) {
  if (!current) return;
  // progress events of parallel extraction batches can arrive a little out of order: never go back
  current.progress = status === "completed" ? 100 : Math.max(current.progress, Number(progress) || 0);
  current.status = status === "started" ? "queued" : status;
  setProgress(current.progress);
  setStatusBadge(current.status);
  setStages(stage, status);
  const line = $("#message");
  line.textContent = message || "";
  line.dataset.status = status;
  $("#cancel").hidden = TERMINAL.has(status);
}

// ---------------------------------------------------------------- the event log

function clearLog() {
  $("#event-list").replaceChildren();
  $("#event-count").textContent = "0";
}

function logEvent(event) {
  const list = $("#event-list");
  const data = event.data || {};
  const warning = event.status === "retrying" || event.status === "error" || WARNING_KINDS.has(data.kind);
  const time = Number(event.timestamp) ? new Date(Number(event.timestamp) * 1000).toLocaleTimeString() : "";
  list.append(el("li", { class: warning ? "warning" : null, dataset: { status: event.status, seq: String(event.seq ?? "") } },
    el("time", { class: "muted small" }, time),
    el("span", { class: "log-stage small" }, STAGE_LABELS[event.stage] || event.stage || ""),
    el("span", { class: "log-message" }, event.message || event.status)));
  while (list.children.length > MAX_LOG) list.firstElementChild.remove();
  $("#event-count").textContent = String(list.children.length);
}

// ---------------------------------------------------------------- a retrying stage

function duration(seconds) {
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  return seconds % 60 ? `${minutes} min ${seconds % 60} s` : `${minutes} min`;
}

function tickRetry() {
  if (!current || !current.retryAt) return;
  const left = Math.ceil((current.retryAt - Date.now()) / 1000);
  $("#retry-countdown").textContent = left > 0 ? `in ${duration(left)}` : "now";
  $("#retry").dataset.secondsLeft = String(Math.max(0, left));
}

function hideRetry() {
  $("#retry").hidden = true;
  if (!current) return;
  clearInterval(current.retryTimer);
  current.retryTimer = null;
  current.retryAt = null;
}

/** A stage failed and runs again later: say why and count down to the next try (the cancel button is below). */
function showRetry(event) {
  const data = event.data || {};
  if (event.status !== "retrying" || data.kind !== "stage_retrying") {
    hideRetry();
    return;
  }
  const delay = count(data.delay_ms);
  // the event's own time for a replayed event; the browser's clock when the two disagree about the present
  current.retryAt = Math.min(Date.now() + delay, count(event.timestamp) * 1000 + delay);
  $("#retry-stage").textContent = STAGE_LABELS[event.stage] || event.stage;
  $("#retry-number").textContent = String(count(data.retry) || 1);
  $("#retry-error").textContent = data.error || event.message || "no reason given";
  $("#retry").hidden = false;
  tickRetry();
  clearInterval(current.retryTimer);
  current.retryTimer = setInterval(tickRetry, 500);
}

// ---------------------------------------------------------------- is a worker running?

/** Ask /ready and show or hide the "no worker" notice: in the job's card while one is followed (where the
 * eye is), else at the top of the page. */
export async function checkWorkers() {
  const notice = $("#no-worker");
  if ($("#job").hidden) $("#main").prepend(notice);
  else $("#message").after(notice);
  try {
    await api("/ready");
    notice.hidden = true;
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 503) return; // 401 and the like: nothing to say here
    const detail = String(error.body.detail || "");
    $("#no-worker-text").replaceChildren(...(detail.startsWith("redis")
      ? [`The job store is not answering (${detail}): no job can run.`]
      : ["No worker is running: start one with ", el("code", {}, "uv run litminer worker"), "."]));
    notice.hidden = false;
  }
}

/** While the job waits in its queue, check every few seconds whether any worker is there to take it. */
function watchQueue(job) {
  const check = async () => {
    if (job !== current || job.finished || job.status !== "queued") return;
    await checkWorkers();
    if (job === current && !job.finished && job.status === "queued") job.queueTimer = setTimeout(check, QUEUED_RECHECK_MS);
  };
  job.queueTimer = setTimeout(check, QUEUED_CHECK_MS);
}

// ---------------------------------------------------------------- events in, from whichever stream works

function onEvent(event) {
  if (!current || event.task_id !== current.taskId) return;
  if (typeof event.seq === "number") {
    if (event.seq <= current.lastSeq) return; // a replay after reconnecting
    current.lastSeq = event.seq;
  }
  logEvent(event);
  if (event.data && event.data.kind === "row_found") addFound(current.taskId, event.data);
  if (TERMINAL.has(event.status)) stopListening(); // the last event: the stream has nothing more
  if (current.finished) return; // replaying a finished task's events: the log only
  showJobState(event);
  showRetry(event);
  if (event.status !== "started") $("#no-worker").hidden = true; // a worker took the job
  if (TERMINAL.has(event.status)) finish(event);
}

async function finish(event) {
  const job = current;
  job.finished = true;
  hideRetry();
  if (event.status === "completed") await loadResult(job.taskId);
  announceEnd(job.taskId);
}

function parseEvent(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function listenSse(job) {
  if (typeof EventSource !== "function") {
    listenWebSocket(job);
    return;
  }
  let received = false;
  const source = new EventSource(withKey(`/sse/tasks/${encodeURIComponent(job.taskId)}`));
  job.source = source;
  source.onmessage = (message) => {
    received = true;
    const event = parseEvent(message.data);
    if (event) onEvent(event);
  };
  source.onerror = () => {
    if (job !== current) return;
    if (job.finished) {
      source.close(); // a finished task's replay ended: no reconnecting
      return;
    }
    if (!received) {
      // nothing arrived: the stream is blocked or unsupported here; try the WebSocket
      source.close();
      job.source = null;
      listenWebSocket(job);
    } else if (source.readyState === EventSource.CLOSED) {
      // the server refused to resume: ask for the state instead
      job.source = null;
      pollStatus(job);
    }
    // otherwise EventSource reconnects by itself and resumes after the last id
  };
}

function listenWebSocket(job) {
  if (typeof WebSocket !== "function") {
    pollStatus(job);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let socket;
  try {
    socket = new WebSocket(`${scheme}//${location.host}${withKey(`/ws/tasks/${encodeURIComponent(job.taskId)}`)}`);
  } catch {
    pollStatus(job);
    return;
  }
  job.socket = socket;
  socket.onmessage = (message) => {
    const event = parseEvent(message.data);
    if (event) onEvent(event);
  };
  socket.onclose = () => {
    if (job !== current || job.finished) return;
    job.socket = null;
    pollStatus(job); // closed early (refused, or the connection dropped): poll the status
  };
}

/** Last resort when neither stream works: ask GET /tasks/<id> every second. */
async function pollStatus(job) {
  if (job !== current || job.finished) return;
  try {
    const status = await api(`/tasks/${encodeURIComponent(job.taskId)}`);
    if (job !== current || job.finished) return;
    showJobState(status);
    if (TERMINAL.has(status.status)) {
      job.finished = true;
      showOutcome(status);
      return;
    }
  } catch (error) {
    if (job !== current) return;
    $("#message").textContent = `Lost contact with the server (${error.message}); retrying…`;
  }
  job.poll = setTimeout(() => pollStatus(job), 1000);
}

async function loadResult(taskId) {
  try {
    const status = await api(`/tasks/${encodeURIComponent(taskId)}`);
    if (!current || current.taskId !== taskId) return;
    if (status.result) showResult(status.result);
  } catch (error) {
    if (current && current.taskId === taskId) $("#message").textContent = `Could not load the result: ${error.message}`;
  }
}

/** Show the dataset, and what became of each row found on the way. */
function showResult(result) {
  renderResult(result);
  markFound(result);
}

/** What a finished task left: its dataset, or its error. */
function showOutcome(status) {
  hideRetry();
  if (status.status === "completed" && status.result) showResult(status.result);
  else if (status.status === "completed") loadResult(status.task_id);
  else if (status.status === "error" && status.error) $("#message").textContent = status.error;
  announceEnd(status.task_id);
}

// ---------------------------------------------------------------- opening, following, cancelling

function resetJobCard(taskId, fresh) {
  clearResult();
  resetFound(taskId);
  $("#job").hidden = false;
  $("#job-task-id").textContent = taskId;
  $("#job-link").href = `#/tasks/${encodeURIComponent(taskId)}`;
  setProgress(0);
  setStages("queued", "started");
  setStatusBadge("queued");
  $("#message").textContent = fresh ? "Submitted, waiting for a worker…" : "Loading…";
  $("#message").dataset.status = "started";
  $("#cancel").hidden = false;
  $("#retry").hidden = true;
  clearLog();
}

/** Follow a task: its events from the first (the log), its state live until it ends, then its dataset. */
export function followTask(taskId, { fresh = false, initial = null } = {}) {
  stopListening();
  if (current) hideRetry();
  current = { taskId, progress: 0, lastSeq: 0, finished: false, status: "queued" };
  resetJobCard(taskId, fresh);
  if (initial) {
    showJobState(initial);
    if (TERMINAL.has(initial.status)) {
      current.finished = true;
      $("#found").open = false; // the dataset is what matters now; the rows found stay a click away
      showOutcome(initial);
    }
  }
  if (fresh) $("#job").scrollIntoView({ block: "nearest", behavior: "smooth" });
  listenSse(current);
  if (!current.finished) watchQueue(current);
}

/** Open a task by id (its URL, the recent list): its status, its events replayed, its dataset once done. */
export async function openTask(taskId) {
  try {
    const status = await api(`/tasks/${encodeURIComponent(taskId)}`);
    followTask(taskId, { initial: status });
    $("#job").scrollIntoView({ block: "start" });
  } catch (error) {
    stopListening();
    current = null;
    resetJobCard(taskId, false);
    $("#cancel").hidden = true;
    setStatusBadge(error instanceof ApiError && error.status === 404 ? "not found" : "unknown");
    $("#message").textContent = error instanceof ApiError && error.status === 404
      ? "No such task here: it may have expired, or belong to another API key."
      : `Could not open the task: ${error.message}`;
  }
}

export async function cancelTask() {
  if (!current) return;
  const taskId = current.taskId;
  const button = $("#cancel");
  button.disabled = true;
  try {
    const status = await api(`/tasks/${encodeURIComponent(taskId)}/revoke`, { method: "POST" });
    if (current && current.taskId === taskId && TERMINAL.has(status.status)) {
      onEvent({ ...status, seq: undefined, message: status.message || `Task ${status.status}` });
    }
  } catch (error) {
    if (current && current.taskId === taskId) $("#message").textContent = error.message;
  } finally {
    button.disabled = false;
  }
}
