// Rows found while the papers are read: each row_found event becomes a row of the "Rows found" table (its values
// and its paper) as it arrives, replayed ones included; once the dataset is in, each is marked kept (as which
// dataset row), merged into a row, or dropped (and why). A row sent again (a reconnect, a redelivered batch) takes
// the place of the one with the same candidate id.
import { formatValue } from "./values.js";

const VALUE_PREFIX = "value_";

let state = null; // { taskId, columns: [field names], rows: Map(candidate → { tr, data }), outcomes: Map | null }

/** The values a row_found event's data carries, by field, lists and objects decoded (their fields in json_fields). */
export function foundValues(data) {
  const encoded = new Set(String(data.json_fields || "").split(","));
  const values = new Map();
  for (const [key, value] of Object.entries(data)) {
    if (!key.startsWith(VALUE_PREFIX)) continue;
    const name = key.slice(VALUE_PREFIX.length);
    let decoded = value;
    if (encoded.has(name) && typeof value === "string") {
      try {
        decoded = JSON.parse(value);
      } catch {
        decoded = value;
      }
    }
    values.set(name, decoded);
  }
  return values;
}

/** Empty the table for another task. */
export function resetFound(taskId) {
  state = { taskId, columns: [], rows: new Map(), outcomes: null };
  $("#found").hidden = true;
  $("#found").open = true;
  $("#found-count").textContent = "0";
  $("#found-summary").textContent = "";
  $("#found-table").replaceChildren(el("thead", {}, el("tr")), el("tbody"));
}

function renderHead() {
  const cells = [el("th", { scope: "col" }, "outcome")];
  for (const name of state.columns) cells.push(el("th", { scope: "col", dataset: { column: name } }, name));
  cells.push(el("th", { scope: "col" }, "paper"));
  $("#found-table thead").replaceChildren(el("tr", {}, ...cells));
}

/** What became of a candidate row, once the dataset is in (null before, and for datasets without candidate ids). */
function outcomeOf(candidate) {
  if (!state.outcomes || !state.outcomes.size) return null;
  return state.outcomes.get(candidate) || { kind: "dropped", reason: "not in the dataset" };
}

function outcomeCell(outcome) {
  if (!outcome) return el("td", { class: "found-outcome" }, el("span", { class: "outcome outcome-found" }, "found"));
  const { kind, rowId, reason } = outcome;
  const text = kind === "kept" ? `kept · ${rowId}` : kind === "merged" ? `merged into ${rowId}` : `dropped: ${reason}`;
  return el("td", { class: "found-outcome" }, el("span", { class: `outcome outcome-${kind}`, title: text }, text));
}

function renderRow(candidate) {
  const { tr, data } = state.rows.get(candidate);
  const values = foundValues(data);
  const outcome = outcomeOf(candidate);
  tr.dataset.outcome = outcome ? outcome.kind : "found";
  tr.dataset.rowId = outcome && outcome.rowId ? outcome.rowId : "";
  const cells = [outcomeCell(outcome)];
  for (const name of state.columns) {
    const value = values.get(name);
    const empty = value === null || value === undefined;
    cells.push(el("td", { class: empty ? "found-value empty" : "found-value", dataset: { field: name } }, formatValue(value)));
  }
  cells.push(el("td", { class: "found-paper", title: data.document || null }, data.title || data.document || ""));
  tr.replaceChildren(...cells);
}

function renderSummary() {
  $("#found-count").textContent = String(state.rows.size);
  if (!state.outcomes || !state.outcomes.size) return;
  const counts = { kept: 0, merged: 0, dropped: 0 };
  for (const { tr } of state.rows.values()) if (tr.dataset.outcome in counts) counts[tr.dataset.outcome] += 1;
  $("#found-summary").textContent = ` · ${counts.kept} kept, ${counts.merged} merged, ${counts.dropped} dropped`;
}

/** Show one row_found event's row (or update the row of the same candidate). */
export function addFound(taskId, data) {
  if (!state || state.taskId !== taskId || !data.candidate) return;
  const added = [...foundValues(data).keys()].filter((name) => !state.columns.includes(name));
  let entry = state.rows.get(data.candidate);
  if (entry) entry.data = data;
  else {
    entry = { tr: el("tr", { dataset: { candidate: data.candidate } }), data };
    state.rows.set(data.candidate, entry);
    $("#found-table tbody").append(entry.tr);
  }
  if (added.length) {
    state.columns.push(...added);
    renderHead();
    for (const candidate of state.rows.keys()) renderRow(candidate);
  } else renderRow(data.candidate);
  $("#found").hidden = false;
  renderSummary();
}

/** What assembly made of each candidate row: candidate → { kind: kept | merged | dropped, rowId, reason }. */
function outcomesOf(dataset) {
  const outcomes = new Map();
  const rows = Array.isArray(dataset.rows) ? dataset.rows : [];
  rows.forEach((row, index) => {
    const rowId = row.row_id || `row-${index + 1}`;
    (row.candidates || []).forEach((candidate, n) => outcomes.set(candidate, { kind: n ? "merged" : "kept", rowId }));
  });
  const dropped = (dataset.stats && dataset.stats.dropped_candidates) || {};
  for (const [candidate, reason] of Object.entries(dropped)) outcomes.set(candidate, { kind: "dropped", reason });
  return outcomes;
}

/** The dataset is in: mark every row found with what became of it (rows found later are marked as they come). */
export function markFound(dataset) {
  if (!state || state.taskId !== dataset.task_id) return;
  state.outcomes = outcomesOf(dataset);
  for (const candidate of state.rows.keys()) renderRow(candidate);
  renderSummary();
}
