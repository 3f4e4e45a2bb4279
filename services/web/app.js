// litminer main page: the dataset form (columns, criteria, sources), opening tasks by URL (#/tasks/{id}), and
// the recent tasks. Following a task is task.js's, the dataset results.js's. Plain modern JavaScript (ES modules),
// no build step; DOM helpers and the API client are common.js's globals, loaded first.
import { initResults } from "./results.js";
import { cancelTask, checkWorkers, currentTaskId, followTask, openTask, stopListening } from "./task.js";

const CLIENT_ID_KEY = "litminer.clientId";
const TASK_ROUTE = /^#\/tasks\/([^/?#]+)$/;
const SEED_COLUMNS = [
  {
    name: "technology_id",
    type: "str",
    description: "Unique identifier for water treatment technology",
    required: true,
  },
  { name: "technology_name", type: "str", description: "Name of water treatment technology", required: true },
];

// ---------------------------------------------------------------- ids and the API key

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

function saveApiKey() {
  storageSet(API_KEY_KEY, $("#api-key").value.trim());
  $("#auth").hidden = true;
  loadRecent();
  loadSources();
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

// ---------------------------------------------------------------- sources

let sourcesShown = false; // the checkboxes are there: send what they say

/** A checkbox per source the workers have: unusable ones disabled, unreachable ones unchecked, with a note. */
async function loadSources() {
  const note = $("#sources-note");
  try {
    const reply = await api("/api/v1/sources");
    const sources = (reply && reply.sources) || [];
    const checked = new Set(sourcesShown ? selectedSources() : []);
    $("#sources").replaceChildren(...sources.map((source) => {
      const id = `source-${source.name.replace(/[^A-Za-z0-9_-]+/g, "-")}`;
      const notes = [];
      if (!source.configured) notes.push(source.note || "not configured");
      else if (!source.reachable) notes.push("not reachable right now");
      if (source.default) notes.push("default");
      const usable = source.configured && source.reachable;
      const box = el("input", {
        type: "checkbox",
        id,
        value: source.name,
        disabled: !source.configured,
        dataset: { configured: String(source.configured), reachable: String(source.reachable) },
      });
      box.checked = sourcesShown ? checked.has(source.name) && source.configured : usable && source.default;
      return el("li", { class: "source", dataset: { source: source.name, usable: String(usable) } },
        box,
        el("label", { for: id }, source.name),
        notes.length ? el("span", { class: "muted small source-note" }, notes.join(" · ")) : null);
    }));
    sourcesShown = sources.length > 0;
    $("#sources-fieldset").hidden = !sourcesShown;
    note.textContent = sources.some((s) => s.configured && !s.reachable)
      ? "Unreachable sources are left unchecked: a job would wait on them for nothing."
      : "";
  } catch (error) {
    // an older server without the list: the API picks its default sources
    sourcesShown = false;
    $("#sources-fieldset").hidden = true;
  }
}

function selectedSources() {
  return [...document.querySelectorAll("#sources input:checked")].map((box) => box.value);
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
  if (sourcesShown) body.sources = selectedSources();
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
  const body = readForm();
  if (body.sources && !body.sources.length) {
    showFieldError("sources", "Choose at least one source.");
    return;
  }
  const submit = $("#submit");
  submit.disabled = true;
  submit.setAttribute("aria-busy", "true");
  try {
    const accepted = await api("/api/v1/datasets/generate", { method: "POST", body });
    followTask(accepted.task_id, { fresh: true });
    location.hash = `#/tasks/${accepted.task_id}`; // the task's own URL (the router sees it is followed already)
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
    $("#recent-list").replaceChildren(...tasks.map((task) => {
      const detail = [task.model_name, `${task.rows} rows`, ago(task.created_at)].filter(Boolean).join(" · ");
      return el("li", { dataset: { taskId: task.task_id } },
        el("a", { class: "recent-item", href: `#/tasks/${encodeURIComponent(task.task_id)}`, dataset: { taskId: task.task_id } },
          el("span", { class: "recent-top" },
            el("code", { class: "task-id", title: task.task_id }, task.task_id.slice(0, 8)),
            el("span", { class: "badge", dataset: { status: task.status } }, task.status),
            !TERMINAL.has(task.status) ? el("span", { class: "muted small" }, `${task.progress} %`) : null,
            task.parent_task_id ? el("span", { class: "muted small" }, `from ${task.parent_task_id.slice(0, 8)}`) : null),
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

// ---------------------------------------------------------------- the task in the URL

/** Open the task the address names (#/tasks/{id}), unless the page follows it already. */
function route() {
  const match = TASK_ROUTE.exec(location.hash);
  if (!match) return;
  const taskId = decodeURIComponent(match[1]);
  if (taskId !== currentTaskId()) openTask(taskId);
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
    const link = event.target.closest("a[data-task-id]");
    // the same address again fires no hashchange: open it anyway
    if (link && location.hash === link.getAttribute("href")) {
      event.preventDefault();
      openTask(link.dataset.taskId);
    }
  });
  initResults();
  window.addEventListener("hashchange", route);
  window.addEventListener("litminer:task-ended", () => loadRecent());
  window.addEventListener("pagehide", stopListening);
  loadRecent();
  loadSources();
  checkWorkers();
  route();
}

init();
