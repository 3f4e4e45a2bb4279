// The cell dialog (the passages behind a value, and its review: approve, reject, edit with a reason) and the
// dataset's audit trail. Reviews go to PATCH /api/v1/datasets/{task_id}/rows/{row_id}.
import { authorList, formatValue, isGenerated, own, paperLink, when } from "./values.js";

const REVIEWER_KEY = "litminer.reviewer";
const STATUS_TEXT = { approved: "Approved", rejected: "Rejected", edited: "Edited" };
const ACTION_TEXT = { approve: "approved", reject: "rejected", edit: "edited", exclude: "excluded", restore: "restored" };

let open = null; // { taskId, rowId, field, type, opener } of the cell the dialog shows
let afterReview = async () => null; // refetches the dataset and redraws the page; returns the fresh dataset

/** Tell the dialog how to refresh the page after a review (set once by the results module). */
export function onReviewed(hook) {
  afterReview = hook;
}

/** Record one decision on a row, by the reviewer named last in this browser unless ``body`` names one; the
 * reviewed row, or an ApiError (400 names the field it blames). */
export function sendReview(taskId, rowId, body) {
  const reviewer = storageGet(REVIEWER_KEY);
  if (reviewer && !body.reviewer) body = { ...body, reviewer };
  const path = `/api/v1/datasets/${encodeURIComponent(taskId)}/rows/${encodeURIComponent(rowId)}`;
  return api(path, { method: "PATCH", body });
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
  const byline = [authorList(meta.authors), meta.year ? `(${meta.year})` : ""].filter(Boolean);
  if (byline.length) article.append(el("p", { class: "paper-authors" }, byline.join(" ")));
  const about = [meta.venue, meta.publication_type, meta.cited_by != null ? `cited by ${meta.cited_by}` : null,
    meta.oa_status ? `open access: ${meta.oa_status}` : null, meta.license ? `licence: ${meta.license}` : null,
    meta.arxiv_id ? `arXiv:${meta.arxiv_id}` : null].filter(Boolean);
  if (about.length) article.append(el("p", { class: "paper-about muted small", "data-testid": "paper-about" }, about.join(" · ")));
  const links = el("p", { class: "paper-links" });
  if (meta.doi) {
    links.append(paperLink(`doi:${String(meta.doi).replace(/^https?:\/\/(dx\.)?doi\.org\//i, "")}`, meta, null));
  } else if (/^https?:\/\//i.test(String(meta.url || ""))) {
    links.append(paperLink(meta.url, meta, null));
  }
  const source = [meta.source, citation.source_id].filter(Boolean).join(" · ");
  if (source) links.append(el("span", { class: "muted small" }, (links.childNodes.length ? "  " : "") + source));
  article.append(links);
  return article;
}

/** One audit trail entry in words: "edited “A” → “B”". */
function change(entry) {
  if (entry.action === "edit") return `${formatValue(entry.old)} → ${formatValue(entry.new)}`;
  if (entry.action === "reject") return `removed ${formatValue(entry.old)}`;
  if (entry.action === "approve") return formatValue(entry.new);
  return "";
}

/** Fill the dialog for the open cell from ``dataset`` (after opening it, and again after each review). */
export function showCell(dataset) {
  if (!open || !dataset || dataset.task_id !== open.taskId) return;
  const row = dataset.rows.find((r) => r.row_id === open.rowId);
  if (!row) return;
  const { field } = open;
  const value = own(row.row, field);
  $("#evidence-heading").textContent = `Evidence for ${field}`;
  $("#evidence-value").replaceChildren(el("span", { class: "muted" }, "Value: "), el("strong", {}, formatValue(value)));

  const reviewed = row.review ? own(row.review.cells, field) : null;
  const state = $("#cell-state");
  state.dataset.status = reviewed ? reviewed.status : "";
  if (reviewed) {
    state.replaceChildren(el("strong", {}, STATUS_TEXT[reviewed.status] || reviewed.status));
    if (reviewed.status !== "approved") state.append(` · extracted value: ${formatValue(reviewed.original)}`);
  } else {
    state.replaceChildren("Not reviewed yet.");
  }
  if (row.review && row.review.excluded) state.append(el("span", { class: "excluded-note" }, " · row excluded"));

  const citations = row.citations.filter((c) => c.field === field);
  const body = $("#evidence-body");
  body.replaceChildren(...(citations.length ? citations.map(renderCitation) : [el("p", { class: "muted" }, "No passage backs this value.")]));
  const flag = own(row.flags, field);
  if (flag) body.prepend(el("p", { class: "notice" }, flag));

  const input = $("#review-value");
  input.value = value === null || value === undefined ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
  const structured = /^(list|dict)/.test(open.type);
  $("#review-value-hint").textContent = structured ? `JSON, e.g. ${open.type.startsWith("dict") ? '{"key": "value"}' : '["a", "b"]'}` : `type: ${open.type}`;

  const history = (dataset.review || []).filter((entry) => entry.row_id === open.rowId && entry.field === field);
  $("#cell-history").hidden = !history.length;
  $("#cell-history-summary").textContent = `History of this cell (${history.length})`;
  $("#cell-history-list").replaceChildren(...history.map((entry) =>
    el("li", {},
      el("strong", {}, ACTION_TEXT[entry.action] || entry.action), ` ${change(entry)}`,
      el("span", { class: "muted small" }, ` — ${entry.reviewer}, ${when(entry.at)}`),
      entry.reason ? el("span", { class: "small review-reason" }, ` “${entry.reason}”`) : null)));
}

function clearReviewError() {
  const error = $("#review-error");
  error.hidden = true;
  error.textContent = "";
  for (const input of document.querySelectorAll("#review-form [aria-invalid]")) input.removeAttribute("aria-invalid");
}

function showReviewError(field, message) {
  const error = $("#review-error");
  error.textContent = field && message.startsWith(`${field}: `) ? message.slice(field.length + 2) : message;
  error.hidden = false;
  const input = field ? document.querySelector(`#review-form [data-field="${CSS.escape(field)}"]`) : null;
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

/** Open the dialog for one cell of the table (``button`` is the cell's button). */
export function openCell(dataset, button) {
  const row = dataset.rows[Number(button.dataset.row)];
  const field = button.dataset.field;
  if (!row || !field) return;
  const definition = dataset.schema.find((f) => f.name === field);
  open = { taskId: dataset.task_id, rowId: row.row_id, field, type: definition ? definition.type : "str", opener: button };
  clearReviewError();
  $("#review-status").textContent = "";
  $("#review-reason").value = "";
  $("#review-reviewer").value = storageGet(REVIEWER_KEY) || "";
  showCell(dataset);
  const dialog = $("#evidence");
  if (typeof dialog.showModal === "function") {
    if (!dialog.open) dialog.showModal();
  } else {
    dialog.setAttribute("open", "");
  }
  $("#evidence-close").focus();
}

export function closeCell() {
  const dialog = $("#evidence");
  if (typeof dialog.close === "function") dialog.close();
  else dialog.removeAttribute("open");
}

/** The edit's value as the API takes it: JSON for list and dict columns, the text itself otherwise (the API
 * converts "12" to 12 for an int column, and says so when it cannot). */
function editedValue(text) {
  if (!/^(list|dict)/.test(open.type)) return text;
  try {
    return JSON.parse(text);
  } catch {
    return text; // the API answers with a 400 naming "value"
  }
}

async function submitReview(action) {
  if (!open) return;
  clearReviewError();
  const body = { action, field: open.field };
  const text = $("#review-value").value;
  if (action === "edit") {
    if (!text.trim()) {
      showReviewError("value", "Type the new value, or reject the cell to remove it.");
      return;
    }
    body.value = editedValue(text);
  }
  const reason = $("#review-reason").value.trim();
  if (reason) body.reason = reason;
  const reviewer = $("#review-reviewer").value.trim();
  if (reviewer) body.reviewer = reviewer;
  storageSet(REVIEWER_KEY, reviewer);
  const buttons = document.querySelectorAll("#review-form button");
  for (const button of buttons) button.disabled = true;
  const status = $("#review-status");
  status.textContent = "Saving…";
  try {
    await sendReview(open.taskId, open.rowId, body);
    $("#review-reason").value = "";
    showCell(await afterReview());
    status.textContent = `Saved: ${ACTION_TEXT[action]}.`;
  } catch (error) {
    status.textContent = "";
    if (error instanceof ApiError && error.status === 400) showReviewError(error.body.field || "", error.message);
    else showReviewError("", `Could not save: ${error.message}`);
  } finally {
    for (const button of buttons) button.disabled = false;
  }
}

/** The dataset's audit trail, newest first. */
export function renderAudit(dataset) {
  const trail = Array.isArray(dataset.review) ? [...dataset.review].reverse() : [];
  $("#audit").hidden = !trail.length;
  $("#audit-summary").textContent = `Review history (${trail.length} ${trail.length === 1 ? "decision" : "decisions"})`;
  $("#audit-table").replaceChildren(
    el("thead", {}, el("tr", {}, ...["When", "Row", "Column", "Action", "Change", "Reason", "Reviewer"].map((name) =>
      el("th", { scope: "col" }, name)))),
    el("tbody", {}, ...trail.map((entry) =>
      el("tr", { class: "audit-entry", dataset: { action: entry.action, rowId: entry.row_id } },
        el("td", { class: "nowrap" }, when(entry.at)),
        el("td", {}, el("code", {}, entry.row_id)),
        el("td", {}, entry.field || "(row)"),
        el("td", {}, ACTION_TEXT[entry.action] || entry.action),
        el("td", {}, change(entry)),
        el("td", {}, entry.reason || ""),
        el("td", {}, entry.reviewer)))),
  );
}

/** Wire the dialog's buttons once. */
export function initCellDialog() {
  const dialog = $("#evidence");
  $("#evidence-close").addEventListener("click", closeCell);
  dialog.addEventListener("click", (event) => {
    if (event.target !== dialog) return;
    const box = dialog.getBoundingClientRect();
    const inside =
      event.clientX >= box.left && event.clientX <= box.right && event.clientY >= box.top && event.clientY <= box.bottom;
    if (!inside) closeCell(); // a click on the backdrop, not on the dialog's own padding
  });
  dialog.addEventListener("close", () => {
    if (!open) return;
    // the table was redrawn after a review: focus the same cell's new button
    const selector = `#results-table button.cell[data-row-id="${CSS.escape(open.rowId)}"][data-field="${CSS.escape(open.field)}"]`;
    const target = open.opener && open.opener.isConnected ? open.opener : document.querySelector(selector);
    if (target) target.focus();
    open = null;
  });
  $("#review-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submitReview("edit");
  });
  $("#review-approve").addEventListener("click", () => submitReview("approve"));
  $("#review-reject").addEventListener("click", () => submitReview("reject"));
}
