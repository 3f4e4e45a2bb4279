// litminer main page: the dataset form, live progress, results with evidence, recent tasks.
// Plain modern JavaScript, no build step and no dependencies.
"use strict";

const CLIENT_ID_KEY = "litminer.clientId";
const STAGES = ["schema_preparation", "search", "extraction", "assembly"];
const SEED_COLUMNS = [
  {
    name: "technology_id",
    type: "str",
    description: "Unique identifier for water treatment technology",
    required: true,
  },
  { name: "technology_name", type: "str", description: "Name of water treatment technology", required: true },
];

// ---------------------------------------------------------------- storage, ids, API key

function newUuid() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

let clientIdMemo = null;
function clientId() {
  if (clientIdMemo) return clientIdMemo;
  let id = storageGet(CLIENT_ID_KEY);
  if (!id) {
    id = newUuid();
    storageSet(CLIENT_ID_KEY, id);
  }
  clientIdMemo = id;
  return id;
}

/** A URL with ?token=… appended when a key is stored (for EventSource and WebSocket, which take no headers). */
function withKey(path) {
  const key = apiKey();
  if (!key) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(key);
}

function saveApiKey() {
  storageSet(API_KEY_KEY, $("#api-key").value.trim());
  $("#auth").hidden = true;
  loadRecent();
  $("#submit").focus();
}

// ---------------------------------------------------------------- the column editor

function renumberColumns() {
  const items = [...$("#columns").children];
  items.forEach((item, i) => {
    item.dataset.field = `field_definitions[${i}]`;
    for (const part of ["name", "type", "description", "required"]) {
      const control = item.querySelector(`input[data-part="${part}"], select[data-part="${part}"]`);
      const label = item.querySelector(`label[data-part="${part}"]`);
      const id = `col-${i}-${part}`;
      control.id = id;
      control.name = `field_definitions[${i}].${part}`;
      control.dataset.field = `field_definitions[${i}].${part}`;
      label.htmlFor = id;
      const title = part[0].toUpperCase() + part.slice(1);
      label.replaceChildren(title, el("span", { class: "sr-only", text: ` of column ${i + 1}` }));
    }
    const remove = item.querySelector(".remove-column");
    remove.replaceChildren("Remove", el("span", { class: "sr-only", text: ` column ${i + 1}` }));
    remove.disabled = items.length === 1;
  });
}

function addColumn(column = { name: "", type: "str", description: "", required: false }, focus = false) {
  const item = $("#column-template").content.firstElementChild.cloneNode(true);
  item.querySelector('[data-part="name"]:not(label)').value = column.name;
  item.querySelector('select[data-part="type"]').value = column.type;
  item.querySelector('[data-part="description"]:not(label)').value = column.description;
  item.querySelector('input[data-part="required"]').checked = column.required;
  item.querySelector(".remove-column").addEventListener("click", () => {
    const next = item.nextElementSibling || item.previousElementSibling;
    item.remove();
    renumberColumns();
    const target = next && next.querySelector('input[data-part="name"]');
    (target || $("#add-column")).focus();
  });
  $("#columns").append(item);
  renumberColumns();
  if (focus) item.querySelector('input[data-part="name"]').focus();
}

// ---------------------------------------------------------------- screening criteria

const CRITERIA_KINDS = ["include", "exclude"];
// where each criterion of the last request came from ({ kind, line }), to put a 400 about criteria[i] at its line
let sentCriteria = [];

/** The two criteria boxes as the API's ``criteria`` list: one per non-blank line, inclusions first. */
function readCriteria() {
  const criteria = [];
  const origins = [];
  for (const kind of CRITERIA_KINDS) {
    $(`#criteria-${kind}`).value.split(/\r\n|\r|\n/).forEach((line, i) => {
      const text = line.trim();
      if (!text) return;
      criteria.push({ text, kind });
      origins.push({ kind, line: i + 1 });
    });
  }
  return { criteria, origins };
}

function readForm() {
  const rowsText = $("#rows").value.trim();
  const { criteria, origins } = readCriteria();
  sentCriteria = origins;
  const body = {
    user_query: $("#user_query").value,
    rows: rowsText === "" ? null : Number(rowsText),
    model_name: $("#model_name").value.trim(),
    field_definitions: [...$("#columns").children].map((item) => ({
      name: item.querySelector('input[data-part="name"]').value.trim(),
      type: item.querySelector('select[data-part="type"]').value,
      description: item.querySelector('input[data-part="description"]').value,
      required: item.querySelector('input[data-part="required"]').checked,
    })),
    client_id: clientId(),
  };
  if (criteria.length) body.criteria = criteria; // none: no key at all
  return body;
}

// ---------------------------------------------------------------- form errors

function clearErrors() {
  for (const node of document.querySelectorAll("#generate-form .field-error")) node.remove();
  for (const node of document.querySelectorAll('#generate-form [aria-invalid="true"]')) {
    node.removeAttribute("aria-invalid");
    node.removeAttribute("aria-describedby");
  }
  const top = $("#form-error");
  top.hidden = true;
  top.textContent = "";
}

function showTopError(text) {
  const top = $("#form-error");
  top.textContent = text;
  top.hidden = false;
}

/** Put a 400's detail next to the input its ``field`` names (or the nearest thing that exists). */
function showFieldError(field, detail) {
  let message = field && detail.startsWith(field + ": ") ? detail.slice(field.length + 2) : detail;
  let target = field ? document.querySelector(`#generate-form [data-field="${CSS.escape(field)}"]`) : null;
  if (!target && field) {
    // "criteria[3].text" → the box and line that criterion came from; anything else about them → their box
    const criterion = /^criteria\[(\d+)\]/.exec(field);
    const origin = criterion ? sentCriteria[Number(criterion[1])] : null;
    if (origin) {
      target = $(`#criteria-${origin.kind}`);
      message = `Line ${origin.line}: ${message}`;
    }
    if (!target && field.startsWith("criteria")) target = $("#criteria-fieldset");
    // "field_definitions[2].extra" → column 2; anything else about the columns → the columns box
    const column = /^field_definitions\[(\d+)\]/.exec(field);
    if (column) target = document.querySelector(`#columns > li[data-field="field_definitions[${column[1]}]"]`);
    if (!target && field.startsWith("field_definitions")) target = $("#columns-fieldset");
  }
  if (!target) {
    showTopError(`The request was refused: ${detail}`);
    return;
  }
  const id = "error-" + (field || "form").replace(/[^A-Za-z0-9_-]+/g, "-");
  const note = el("p", { class: "field-error", id, dataset: { errorFor: field } }, message);
  if (target.matches("input, select, textarea")) {
    target.setAttribute("aria-invalid", "true");
    target.setAttribute("aria-describedby", id);
    const holder = target.closest(".field") || target.parentElement;
    holder.append(note);
    target.focus();
  } else if (target.tagName === "FIELDSET") {
    target.setAttribute("aria-describedby", id);
    target.querySelector("legend").after(note);
    note.setAttribute("role", "alert");
  } else {
    // a whole column: describe its name input
    const name = target.querySelector('input[data-part="name"]');
    name.setAttribute("aria-invalid", "true");
    name.setAttribute("aria-describedby", id);
    target.append(note);
    name.focus();
  }
}

async function onSubmit(event) {
  event.preventDefault();
  clearErrors();
  const submit = $("#submit");
  submit.disabled = true;
  submit.setAttribute("aria-busy", "true");
  try {
    const accepted = await api("/api/v1/datasets/generate", { method: "POST", body: readForm() });
    followTask(accepted.task_id, { fresh: true });
    loadRecent();
  } catch (error) {
    if (error instanceof ApiError && error.status === 400) {
      showFieldError(error.body.field || "", error.message);
    } else if (error instanceof ApiError && error.status === 401) {
      showTopError("The server asked for an API key: enter it above, then press the button again.");
    } else {
      showTopError(`Could not submit: ${error.message}`);
    }
  } finally {
    submit.disabled = false;
    submit.removeAttribute("aria-busy");
  }
}

// ---------------------------------------------------------------- following a task

let current = null; // { taskId, source, socket, poll, progress, finished }

function stopListening() {
  if (!current) return;
  if (current.source) current.source.close();
  if (current.socket) current.socket.close();
  if (current.poll) clearTimeout(current.poll);
  current.source = current.socket = current.poll = null;
}

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
  setProgress(current.progress);
  const shown = status === "started" ? "queued" : status;
  setStatusBadge(shown);
  setStages(stage, status);
  const line = $("#message");
  line.textContent = message || "";
  line.dataset.status = status;
  $("#cancel").hidden = TERMINAL.has(status);
}

function onEvent(event) {
  if (!current || event.task_id !== current.taskId || current.finished) return;
  if (typeof event.seq === "number") {
    if (event.seq <= current.lastSeq) return; // a replay after reconnecting
    current.lastSeq = event.seq;
  }
  showJobState(event);
  if (TERMINAL.has(event.status)) finish(event.status);
}

async function finish(status) {
  if (!current || current.finished) return;
  current.finished = true;
  stopListening();
  const taskId = current.taskId;
  if (status === "completed") await loadResult(taskId);
  loadRecent();
}

function parseEvent(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function followTask(taskId, { fresh = false, initial = null } = {}) {
  stopListening();
  current = { taskId, source: null, socket: null, poll: null, progress: 0, lastSeq: 0, finished: false };
  $("#job").hidden = false;
  $("#results").hidden = true;
  $("#job-task-id").textContent = taskId;
  setProgress(0);
  setStages("queued", "started");
  setStatusBadge("queued");
  $("#message").textContent = fresh ? "Submitted, waiting for a worker…" : "Loading…";
  $("#message").dataset.status = "started";
  $("#cancel").hidden = false;
  if (initial) showJobState(initial);
  if (fresh) $("#job").scrollIntoView({ block: "nearest", behavior: "smooth" });
  listenSse(current);
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
    if (job !== current || job.finished) return;
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
      if (status.status === "completed" && status.result) renderResult(status.result);
      else if (status.status === "error" && status.error) $("#message").textContent = status.error;
      loadRecent();
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
    if (status.result) renderResult(status.result);
  } catch (error) {
    if (current && current.taskId === taskId) $("#message").textContent = `Could not load the result: ${error.message}`;
  }
}

async function cancelTask() {
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

/** Open a task from the recent list: results when finished, live progress otherwise. */
async function openTask(taskId) {
  try {
    const status = await api(`/tasks/${encodeURIComponent(taskId)}`);
    if (TERMINAL.has(status.status)) {
      stopListening();
      current = { taskId, progress: 0, lastSeq: 0, finished: true };
      $("#job").hidden = false;
      $("#job-task-id").textContent = taskId;
      showJobState(status);
      if (status.status === "error" && status.error) $("#message").textContent = status.error;
      if (status.status === "completed" && status.result) renderResult(status.result);
      else $("#results").hidden = true;
    } else {
      followTask(taskId, { initial: status });
    }
    $("#job").scrollIntoView({ block: "start", behavior: "smooth" });
  } catch (error) {
    $("#recent-note").textContent = `Could not open task ${taskId.slice(0, 8)}: ${error.message}`;
  }
}

// ---------------------------------------------------------------- results and evidence

let dataset = null;

function formatValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function downloadUrl(taskId, format) {
  return `/api/v1/datasets/${encodeURIComponent(taskId)}?format=${format}`;
}

const CONFIDENCE_LEVELS = ["high", "medium", "low"];
const CONFIDENCE_RANK = { high: 3, medium: 2, low: 1 };
// the confidence filter's values: the lowest rank a row needs to be shown
const CONFIDENCE_FLOOR = { all: 0, medium: 2, high: 3 };
const DECISIONS = ["included", "not_reached", "excluded"];
const DECISION_LABELS = { included: "included", not_reached: "not reached", excluded: "excluded" };

let confidenceSort = null; // null: the dataset's order; "desc": high first; "asc": low first

const knownLevel = (level) => (CONFIDENCE_LEVELS.includes(level) ? level : null);
const knownDecision = (decision) => (DECISIONS.includes(decision) ? decision : null);
const confidenceRank = (level) => (knownLevel(level) ? CONFIDENCE_RANK[level] : 0);
const count = (value) => (Number.isFinite(Number(value)) ? Number(value) : 0);

function confidenceBadge(level, basis) {
  const known = knownLevel(level);
  return el(
    "span",
    { class: known ? `confidence confidence-${known}` : "confidence", title: basis || null },
    known || "—",
  );
}

function renderResult(result) {
  dataset = result;
  confidenceSort = null;
  const rows = Array.isArray(result.rows) ? result.rows : [];
  const fields = result.schema.map((f) => f.name);
  // datasets made before confidence existed have none: no column, no filter
  const hasConfidence = rows.some((row) => row.confidence !== undefined && row.confidence !== null);
  const table = $("#results-table");
  const headCells = result.schema.map((f) =>
    el("th", { scope: "col", title: f.description || null, dataset: { field: f.name } },
      el("span", { class: "col-title" }, f.name),
      el("span", { class: "th-type" }, f.type)));
  if (hasConfidence) {
    headCells.push(el("th", { scope: "col", class: "confidence-col", "aria-sort": "none" },
      el("button", { type: "button", id: "sort-confidence", class: "sort-button", title: "Sort by confidence" },
        "confidence", el("span", { class: "sort-indicator", "aria-hidden": "true" }, " ↕"))));
  }
  const head = el("thead", {}, el("tr", {}, ...headCells));
  const body = el("tbody");
  rows.forEach((row, r) => {
    const tr = el("tr", { dataset: { row: String(r) } });
    const cellConfidence = row.cell_confidence || {};
    for (const field of fields) {
      const value = row.row[field];
      const cited = row.citations.some((c) => c.field === field);
      const flag = row.flags && row.flags[field];
      const level = knownLevel(cellConfidence[field]);
      const title = [flag, level ? `confidence: ${level}` : null].filter(Boolean).join(" · ");
      const button = el(
        "button",
        {
          type: "button",
          class: "cell" + (value === null || value === undefined ? " empty" : "") + (cited ? "" : " uncited") +
            (level ? ` conf-${level}` : ""),
          dataset: level ? { row: String(r), field, confidence: level } : { row: String(r), field },
          title: title || null,
        },
        formatValue(value),
        flag ? el("span", { class: "flag", "aria-label": `flag: ${flag}` }, " ⚑") : null,
      );
      tr.append(el("td", {}, button));
    }
    if (hasConfidence) {
      tr.dataset.confidence = knownLevel(row.confidence) || "";
      tr.append(el("td", { class: "confidence-cell" }, confidenceBadge(row.confidence, row.basis)));
    }
    body.append(tr);
  });
  table.replaceChildren(el("caption", { class: "sr-only" }, `${result.model_name}: ${rows.length} rows`), head, body);
  $("#confidence-filter-wrap").hidden = !hasConfidence;
  $("#confidence-filter").value = "all";
  applyConfidenceFilter();

  const stats = result.stats || {};
  const parts = [`${rows.length} of ${stats.requested_rows ?? rows.length} rows`];
  if (stats.documents_searched) parts.push(`${stats.documents_searched} documents searched`);
  if (stats.sources && stats.sources.length) parts.push(`sources: ${stats.sources.join(", ")}`);
  if (stats.extractor) parts.push(`extractor: ${stats.extractor}`);
  $("#results-summary").textContent = `${result.model_name} · ${parts.join(" · ")}`;

  // no rows: say why, prominently, instead of an empty table
  const empty = rows.length === 0;
  $("#empty-result").hidden = !empty;
  $("#empty-reason").textContent = empty
    ? stats.shortfall || "The job finished without rows and gave no reason."
    : "";
  $("#rows-view").hidden = empty;
  const shortfall = $("#shortfall");
  shortfall.hidden = empty || !stats.shortfall;
  shortfall.textContent = !empty && stats.shortfall ? `Fewer rows than asked: ${stats.shortfall}` : "";

  for (const [id, format] of [["#download-csv", "csv"], ["#download-json", "json"]]) {
    const link = $(id);
    link.href = downloadUrl(result.task_id, format);
    link.setAttribute("download", `${result.model_name}-${result.task_id}.${format}`);
  }
  renderPapers(result);
  $("#results").hidden = false;
}

/** Show only the rows at or above the chosen confidence. */
function applyConfidenceFilter() {
  const choice = $("#confidence-filter").value;
  const floor = CONFIDENCE_FLOOR[choice] || 0;
  const rows = [...document.querySelectorAll("#results-table tbody tr")];
  let shown = 0;
  for (const tr of rows) {
    tr.hidden = floor > 0 && confidenceRank(tr.dataset.confidence) < floor;
    if (!tr.hidden) shown += 1;
  }
  const note = $("#rows-note");
  if (floor === 0) note.textContent = "";
  else if (shown === 0) note.textContent = `No row has this confidence (of ${rows.length}).`;
  else note.textContent = `Showing ${shown} of ${rows.length} rows.`;
}

/** Click on the confidence header: high first, then low first, and so on. */
function toggleConfidenceSort() {
  confidenceSort = confidenceSort === "desc" ? "asc" : "desc";
  const body = $("#results-table tbody");
  if (!body) return;
  const sign = confidenceSort === "desc" ? -1 : 1;
  const rows = [...body.children].sort(
    (a, b) =>
      sign * (confidenceRank(a.dataset.confidence) - confidenceRank(b.dataset.confidence)) ||
      Number(a.dataset.row) - Number(b.dataset.row),
  );
  body.append(...rows);
  const th = $("#results-table th.confidence-col");
  th.setAttribute("aria-sort", confidenceSort === "desc" ? "descending" : "ascending");
  th.querySelector(".sort-indicator").textContent = confidenceSort === "desc" ? " ↓" : " ↑";
  $("#sort-confidence").title =
    confidenceSort === "desc" ? "Sorted high to low; select to sort low to high" : "Sorted low to high; select to sort high to low";
}

function flowStep(value, label) {
  return el("span", { class: "flow-step" }, el("strong", {}, String(count(value))), ` ${label}`);
}

/** The PRISMA-like line: found → duplicates removed → screened → excluded → not reached → read → cited. */
function renderFlow(flow) {
  const line = $("#flow");
  if (!flow) {
    line.hidden = true;
    line.replaceChildren();
    return;
  }
  const kinds = Object.entries(flow.excluded_by || {})
    .filter(([, n]) => count(n) > 0)
    .sort((a, b) => count(b[1]) - count(a[1]));
  const excluded = flowStep(flow.excluded, "excluded");
  if (kinds.length) excluded.append(` (${kinds.map(([kind, n]) => `${kind}: ${count(n)}`).join(", ")})`);
  const steps = [
    flowStep(flow.found, "found"),
    flowStep(flow.duplicates_removed, "duplicates removed"),
    flowStep(flow.screened, "screened"),
    excluded,
    flowStep(flow.not_reached, "not reached"),
    flowStep(flow.read, "read"),
    flowStep(flow.cited, "cited"),
  ];
  const children = [];
  steps.forEach((step, i) => {
    if (i) children.push(el("span", { class: "flow-arrow", "aria-hidden": "true" }, " → "));
    children.push(step);
  });
  line.replaceChildren(...children);
  line.hidden = false;
}

function paperLink(paper) {
  const title = paper.title || paper.id || "(untitled)";
  if (paper.doi) {
    const doi = String(paper.doi).replace(/^https?:\/\/(dx\.)?doi\.org\//i, "");
    return el("a", { href: `https://doi.org/${doi}`, target: "_blank", rel: "noopener", class: "paper-link" }, title);
  }
  if (/^https?:\/\//i.test(String(paper.url || ""))) {
    // only web links: the url comes from the paper's metadata, which nobody vetted (no javascript:)
    return el("a", { href: paper.url, target: "_blank", rel: "noopener", class: "paper-link" }, title);
  }
  return el("span", { class: "paper-link" }, title);
}

function renderPaper(paper) {
  const decision = knownDecision(paper.decision);
  const score = Number(paper.score);
  const reason = el("td", { class: "paper-reason" }, paper.reason || "");
  if (paper.quote) {
    reason.append(el("details", { class: "paper-quote" },
      el("summary", {}, "Quote"),
      el("blockquote", { class: "quote" }, paper.quote)));
  }
  return el("tr", { class: "paper", dataset: { decision: decision || "", paperId: paper.id || "" } },
    el("td", { class: "paper-title-cell" }, paperLink(paper),
      paper.retracted ? el("span", { class: "retracted small" }, " Retracted") : null,
      paper.source ? el("span", { class: "muted small paper-source" }, paper.source) : null,
      paper.full_text ? el("span", { class: "muted small paper-source" }, "full text read") : null),
    el("td", { class: "num" }, paper.year ? String(paper.year) : "—"),
    el("td", {},
      el("span", { class: decision ? `decision decision-${decision}` : "decision", title: paper.exclusion || null },
        decision ? DECISION_LABELS[decision] : String(paper.decision || "—")),
      paper.exclusion ? el("span", { class: "muted small exclusion" }, paper.exclusion) : null),
    el("td", { class: "num" }, Number.isFinite(score) ? `${Math.round(score * 100)} %` : "—"),
    el("td", { class: "num" }, String(count(paper.rows))),
    reason);
}

function renderPapers(result) {
  const papers = Array.isArray(result.papers) ? result.papers : [];
  const flow = (result.stats && result.stats.flow) || null;
  $("#papers").hidden = !papers.length && !flow;
  renderFlow(flow);
  // included first, then not reached, then excluded; the most relevant first within each
  const order = (paper) => {
    const i = DECISIONS.indexOf(paper.decision);
    return i < 0 ? DECISIONS.length : i;
  };
  const sorted = papers
    .map((paper, i) => ({ paper, i }))
    .sort((a, b) => order(a.paper) - order(b.paper) || count(b.paper.score) - count(a.paper.score) || a.i - b.i)
    .map(({ paper }) => paper);
  const head = el("thead", {}, el("tr", {},
    ...["Title", "Year", "Decision", "Score", "Rows", "Reason"].map((name) =>
      el("th", { scope: "col", class: ["Year", "Score", "Rows"].includes(name) ? "num" : null }, name))));
  $("#papers-table").replaceChildren(
    el("caption", { class: "sr-only" }, `${papers.length} papers considered`),
    head,
    el("tbody", {}, ...sorted.map(renderPaper)),
  );
  $("#papers-heading").textContent = `Papers (${papers.length})`;
  for (const option of $("#decision-filter").options) {
    const label = option.value === "all" ? "all" : DECISION_LABELS[option.value];
    const n = option.value === "all" ? papers.length : papers.filter((p) => p.decision === option.value).length;
    option.textContent = `${label} (${n})`;
  }
  $("#decision-filter").value = "all";
  applyDecisionFilter();
}

function applyDecisionFilter() {
  const choice = $("#decision-filter").value;
  const rows = [...document.querySelectorAll("#papers-table tr.paper")];
  let shown = 0;
  for (const tr of rows) {
    tr.hidden = choice !== "all" && tr.dataset.decision !== choice;
    if (!tr.hidden) shown += 1;
  }
  const note = $("#papers-note");
  if (!rows.length) note.textContent = "No papers were recorded for this job.";
  else if (shown === 0) note.textContent = "No paper has this decision.";
  else if (shown < rows.length) note.textContent = `Showing ${shown} of ${rows.length} papers.`;
  else note.textContent = "";
}

function isGenerated(citation) {
  return citation.source_id === "generated" || (citation.metadata && citation.metadata.source === "generated");
}

function renderCitation(citation) {
  const meta = citation.metadata || {};
  const article = el("article", { class: "citation" });
  if (isGenerated(citation)) {
    article.classList.add("generated");
    article.append(
      el("p", { class: "generated-label" }, "Generated, no quote"),
      el("p", { class: "muted small" }, citation.text_span || meta.title || ""),
    );
    return article;
  }
  // the quote highlighted in one sentence of context either side, then where it is in the paper
  const quote = el("blockquote", { class: "quote" });
  if (citation.before) quote.append(el("span", { class: "context" }, `${citation.before} `));
  quote.append(el("mark", { "data-testid": "quote" }, citation.text_span));
  if (citation.after) quote.append(el("span", { class: "context" }, ` ${citation.after}`));
  article.append(quote);
  const where = [];
  if (citation.page_number) where.push(`page ${citation.page_number}`);
  if (citation.section) where.push(`section “${citation.section}”`);
  if (citation.part && citation.part !== "full_text") where.push(`in the ${citation.part}`);
  else if (citation.part === "full_text" && !where.length) where.push("in the full text");
  if (where.length) article.append(el("p", { class: "quote-place muted small", "data-testid": "quote-place" }, where.join(", ")));
  if (meta.retracted) article.append(el("p", { class: "retracted", "data-testid": "retracted" }, "Retracted paper"));
  article.append(el("p", { class: "paper-title" }, meta.title || citation.source_id));
  const byline = [];
  if (meta.authors && meta.authors.length) {
    byline.push(meta.authors.length > 6 ? `${meta.authors.slice(0, 6).join(", ")}, et al.` : meta.authors.join(", "));
  }
  if (meta.year) byline.push(`(${meta.year})`);
  if (byline.length) article.append(el("p", { class: "paper-authors" }, byline.join(" ")));
  const about = [meta.venue, meta.publication_type, meta.cited_by != null ? `cited by ${meta.cited_by}` : null,
    meta.oa_status ? `open access: ${meta.oa_status}` : null, meta.license ? `licence: ${meta.license}` : null,
    meta.arxiv_id ? `arXiv:${meta.arxiv_id}` : null].filter(Boolean);
  if (about.length) article.append(el("p", { class: "paper-about muted small", "data-testid": "paper-about" }, about.join(" · ")));
  const links = el("p", { class: "paper-links" });
  if (meta.doi) {
    const doi = String(meta.doi).replace(/^https?:\/\/(dx\.)?doi\.org\//i, "");
    links.append(el("a", { href: `https://doi.org/${doi}`, target: "_blank", rel: "noopener" }, `doi:${doi}`));
  } else if (/^https?:\/\//i.test(String(meta.url || ""))) {
    // Only web links: a record's url comes from the paper's metadata, which nobody vetted (no javascript:).
    links.append(el("a", { href: meta.url, target: "_blank", rel: "noopener" }, meta.url));
  }
  const source = [meta.source, citation.source_id].filter(Boolean).join(" · ");
  if (source) links.append(el("span", { class: "muted small" }, (links.childNodes.length ? "  " : "") + source));
  article.append(links);
  return article;
}

let evidenceOpener = null;

function openEvidence(button) {
  if (!dataset) return;
  const row = dataset.rows[Number(button.dataset.row)];
  const field = button.dataset.field;
  if (!row) return;
  const citations = row.citations.filter((c) => c.field === field);
  $("#evidence-heading").textContent = `Evidence for ${field}`;
  $("#evidence-value").replaceChildren(el("span", { class: "muted" }, "Value: "), el("strong", {}, formatValue(row.row[field])));
  const body = $("#evidence-body");
  if (citations.length) {
    body.replaceChildren(...citations.map(renderCitation));
  } else {
    body.replaceChildren(el("p", { class: "muted" }, "No passage backs this value."));
  }
  if (row.flags && row.flags[field]) body.prepend(el("p", { class: "notice" }, row.flags[field]));
  evidenceOpener = button;
  const dialog = $("#evidence");
  if (typeof dialog.showModal === "function") {
    if (!dialog.open) dialog.showModal();
  } else {
    dialog.setAttribute("open", "");
  }
  $("#evidence-close").focus();
}

function closeEvidence() {
  const dialog = $("#evidence");
  if (typeof dialog.close === "function") dialog.close();
  else dialog.removeAttribute("open");
}

// ---------------------------------------------------------------- recent tasks

function ago(seconds) {
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

let recentBusy = false;
async function loadRecent() {
  if (recentBusy) return;
  recentBusy = true;
  const note = $("#recent-note");
  try {
    const data = await api(`/api/v1/tasks?client_id=${encodeURIComponent(clientId())}&limit=20`);
    const tasks = (data && data.tasks) || [];
    const list = $("#recent-list");
    list.replaceChildren(...tasks.map((task) => {
      const detail = [task.model_name, `${task.rows} rows`, ago(task.created_at)].filter(Boolean).join(" · ");
      return el("li", { dataset: { taskId: task.task_id } },
        el("button", { type: "button", class: "recent-item", dataset: { taskId: task.task_id } },
          el("span", { class: "recent-top" },
            el("code", { class: "task-id", title: task.task_id }, task.task_id.slice(0, 8)),
            el("span", { class: "badge", dataset: { status: task.status } }, task.status),
            task.status !== "completed" && !TERMINAL.has(task.status)
              ? el("span", { class: "muted small" }, `${task.progress} %`) : null),
          el("span", { class: "recent-query" }, task.query),
          el("span", { class: "muted small" }, detail)));
    }));
    note.textContent = tasks.length ? "" : "No tasks yet from this browser.";
  } catch (error) {
    // the list is a convenience: say so quietly and carry on
    note.textContent = error instanceof ApiError && error.status === 404
      ? "The task list is not available on this server."
      : `Could not load recent tasks (${error.message}).`;
  } finally {
    recentBusy = false;
  }
}

// ---------------------------------------------------------------- wiring

function init() {
  for (const column of SEED_COLUMNS) addColumn(column);
  $("#add-column").addEventListener("click", () => addColumn(undefined, true));
  $("#generate-form").addEventListener("submit", onSubmit);
  $("#cancel").addEventListener("click", cancelTask);
  $("#auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveApiKey();
  });
  $("#refresh-recent").addEventListener("click", loadRecent);
  $("#recent-list").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-task-id]");
    if (button) openTask(button.dataset.taskId);
  });
  $("#results-table").addEventListener("click", (event) => {
    if (event.target.closest("#sort-confidence")) {
      toggleConfidenceSort();
      return;
    }
    const button = event.target.closest("button.cell");
    if (button) openEvidence(button);
  });
  $("#confidence-filter").addEventListener("change", applyConfidenceFilter);
  $("#decision-filter").addEventListener("change", applyDecisionFilter);
  const dialog = $("#evidence");
  $("#evidence-close").addEventListener("click", closeEvidence);
  dialog.addEventListener("click", (event) => {
    if (event.target !== dialog) return;
    const box = dialog.getBoundingClientRect();
    const inside =
      event.clientX >= box.left && event.clientX <= box.right && event.clientY >= box.top && event.clientY <= box.bottom;
    if (!inside) closeEvidence(); // a click on the backdrop, not on the dialog's own padding
  });
  dialog.addEventListener("close", () => {
    if (evidenceOpener && evidenceOpener.isConnected) evidenceOpener.focus();
  });
  // Downloads are plain links; with an API key they need the header, so fetch them instead.
  for (const id of ["#download-csv", "#download-json"]) {
    $(id).addEventListener("click", async (event) => {
      const key = apiKey();
      if (!key) return;
      event.preventDefault();
      const link = event.currentTarget;
      try {
        const response = await fetch(link.href, { headers: { "X-API-Key": key } });
        if (response.status === 401) askForApiKey();
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const url = URL.createObjectURL(await response.blob());
        const a = el("a", { href: url, download: link.getAttribute("download") || "" });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10_000);
      } catch (error) {
        $("#results-summary").textContent = `Download failed: ${error.message}`;
      }
    });
  }
  window.addEventListener("pagehide", stopListening);
  loadRecent();
}

init();
