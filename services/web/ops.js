// litminer operations view: jobs, queue depths, live workers and webhook attempts, refreshed every 2 s.
"use strict";

const REFRESH_MS = 2000;
const STALE_WORKER_S = 30;

// ---------------------------------------------------------------- formatting

function seconds(value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "—";
  const s = Number(value);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}

const count = (value) => (value === null || value === undefined ? "—" : Number(value).toLocaleString());

function emptyRow(columns, text) {
  return el("tr", { class: "empty-row" }, el("td", { colspan: columns }, text));
}

// ---------------------------------------------------------------- tables

const rendered = { jobs: "", queues: "", workers: "", webhooks: "" };

/** Replace a table body only when its data changed, so buttons under the pointer survive a refresh. */
function update(name, data, build) {
  const key = JSON.stringify(data);
  if (rendered[name] === key) return;
  rendered[name] = key;
  $(`#${name}-table tbody`).replaceChildren(...build(data));
}

function jobRows(jobs) {
  if (!jobs.length) return [emptyRow(8, "No jobs yet.")];
  return jobs.map((job) => {
    const running = !TERMINAL.has(job.status);
    const title = [job.model_name, job.rows ? `${job.rows} rows` : "", job.error || job.message]
      .filter(Boolean)
      .join(" · ");
    return el(
      "tr",
      { dataset: { taskId: job.task_id, status: job.status } },
      el("td", {}, el("code", { class: "task-id", title: job.task_id }, job.task_id.slice(0, 8))),
      el("td", {}, el("span", { class: "badge", dataset: { status: job.status } }, job.status)),
      el("td", {}, job.stage),
      el("td", { class: "num" }, `${job.progress} %`),
      el("td", { class: "num" }, seconds(job.duration_s)),
      el("td", { class: "num" }, count(job.tokens)),
      el("td", { class: "query", title }, job.query),
      el(
        "td",
        {},
        running
          ? el(
              "button",
              { type: "button", class: "danger small-button", dataset: { cancel: job.task_id } },
              "Cancel",
              el("span", { class: "sr-only" }, ` task ${job.task_id.slice(0, 8)}`),
            )
          : null,
      ),
    );
  });
}

function queueRows(queues) {
  if (!queues.length) return [emptyRow(4, "No queues reported.")];
  return queues.map((queue) =>
    el(
      "tr",
      { dataset: { queue: queue.name } },
      el("td", {}, el("code", {}, queue.name)),
      el("td", { class: "num" }, count(queue.ready)),
      el("td", { class: "num" }, count(queue.delayed)),
      el("td", { class: "num" + (queue.dead ? " stale" : "") }, count(queue.dead)),
    ),
  );
}

function workerRows(workers) {
  if (!workers.length) return [emptyRow(8, "No live workers.")];
  return workers.map((worker) => {
    const stale = Number(worker.age_s) > STALE_WORKER_S;
    return el(
      "tr",
      { dataset: { workerId: worker.worker_id } },
      el("td", {}, el("code", { class: "task-id", title: worker.worker_id }, worker.worker_id)),
      el("td", {}, worker.hostname),
      el("td", { class: "num" }, worker.pid),
      el("td", { class: "num" }, worker.threads),
      el("td", { class: "num" + (stale ? " stale" : "") }, `${seconds(worker.age_s)} ago`),
      el("td", { class: "num" }, count(worker.in_flight)),
      el("td", { class: "num" }, count(worker.processed)),
      el("td", { class: "num" }, count(worker.failed)),
    );
  });
}

// A delivery's outcome in the colours of a job's status.
const OUTCOME_STATUS = { delivered: "completed", retrying: "retrying", failed: "error" };

const milliseconds = (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : seconds(ms / 1000));

const clock = (unix) => (unix ? new Date(unix * 1000).toLocaleTimeString() : "—");

function webhookRows(attempts) {
  if (!attempts.length) return [emptyRow(9, "No webhooks sent.")];
  return attempts.map((attempt) =>
    el(
      "tr",
      { dataset: { deliveryId: attempt.delivery_id, attempt: attempt.attempt, outcome: attempt.outcome } },
      el("td", {}, clock(attempt.at)),
      el("td", {}, el("code", { class: "task-id", title: attempt.task_id }, attempt.task_id.slice(0, 8))),
      el("td", {}, attempt.type),
      el("td", { class: "num" }, attempt.attempt),
      el(
        "td",
        {},
        el("span", { class: "badge", dataset: { status: OUTCOME_STATUS[attempt.outcome] } }, attempt.outcome),
      ),
      el("td", {}, attempt.error || `HTTP ${attempt.status_code}`),
      el("td", { class: "num" }, milliseconds(attempt.duration_ms)),
      el("td", {}, attempt.next_try_at ? clock(attempt.next_try_at) : "—"),
      el("td", { class: "query", title: attempt.url }, attempt.url),
    ),
  );
}

// ---------------------------------------------------------------- polling

let timer = null;
let busy = false;

async function refresh() {
  if (busy) return;
  busy = true;
  clearTimeout(timer);
  const error = $("#ops-error");
  try {
    const view = await api("/api/v1/ops");
    update("jobs", view.jobs || [], jobRows);
    update("queues", view.queues || [], queueRows);
    update("workers", view.workers || [], workerRows);
    update("webhooks", view.webhooks || [], webhookRows);
    const redis = $("#redis");
    redis.dataset.ok = String(Boolean(view.redis_ok));
    redis.textContent = view.redis_ok ? "Redis: OK" : "Redis: unreachable";
    $("#updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    error.hidden = true;
  } catch (problem) {
    error.textContent = `Could not load the operations view: ${problem.message}`;
    error.hidden = false;
  } finally {
    busy = false;
    if (!document.hidden) timer = setTimeout(refresh, REFRESH_MS);
  }
}

async function cancel(taskId, button) {
  button.disabled = true;
  const note = $("#action-note");
  try {
    const status = await api(`/tasks/${encodeURIComponent(taskId)}/revoke`, { method: "POST" });
    note.textContent = `Task ${taskId.slice(0, 8)}: ${status.status}.`;
  } catch (problem) {
    note.textContent = `Task ${taskId.slice(0, 8)}: ${problem.message}`;
    button.disabled = false;
  }
  refresh();
}

function init() {
  $("#jobs-table").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-cancel]");
    if (button) cancel(button.dataset.cancel, button);
  });
  $("#auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    try {
      const key = $("#api-key").value.trim();
      storageSet(API_KEY_KEY, key);
    } catch {
      /* storage disabled */
    }
    $("#auth").hidden = true;
    refresh();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) clearTimeout(timer);
    else refresh();
  });
  refresh();
}

init();
