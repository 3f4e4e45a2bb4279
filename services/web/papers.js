// The papers behind a dataset: the PRISMA-like flow, every paper the search considered with its screening
// decision, and the cited papers with the rows each supports.
import { authorList, backing, count, isExcluded, paperLink, rowLabel } from "./values.js";

const DECISIONS = ["included", "not_reached", "excluded"];
const DECISION_LABELS = { included: "included", not_reached: "not reached", excluded: "excluded" };
const knownDecision = (decision) => (DECISIONS.includes(decision) ? decision : null);

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
    el("td", { class: "paper-title-cell" }, paperLink(paper.title || paper.id || "(untitled)", paper),
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

/** Every paper the search considered: included first, then not reached, then excluded; best first in each. */
function renderScreening(result) {
  const papers = Array.isArray(result.papers) ? result.papers : [];
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
  $("#papers-heading").textContent = `Papers considered (${papers.length})`;
  for (const option of $("#decision-filter").options) {
    const label = option.value === "all" ? "all" : DECISION_LABELS[option.value];
    const n = option.value === "all" ? papers.length : papers.filter((p) => p.decision === option.value).length;
    option.textContent = `${label} (${n})`;
  }
  $("#decision-filter").value = "all";
  applyDecisionFilter();
  return papers.length;
}

export function applyDecisionFilter() {
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

/** The papers backing the rows (as the references download counts them, excluded rows kept here), each with
 * the rows it supports; most rows first. */
export function citedPaperList(result) {
  const papers = new Map();
  result.rows.forEach((row, index) => {
    for (const citation of backing(row)) {
      let paper = papers.get(citation.source_id);
      if (!paper) {
        paper = { id: citation.source_id, meta: citation.metadata || {}, rows: [] };
        papers.set(citation.source_id, paper);
      }
      if (!paper.rows.includes(index)) paper.rows.push(index);
    }
  });
  return [...papers.values()].sort(
    (a, b) => b.rows.length - a.rows.length || count(b.meta.year) - count(a.meta.year) || a.id.localeCompare(b.id),
  );
}

function renderCitedPaper(paper, result) {
  const meta = paper.meta;
  const about = [meta.venue, meta.source].filter(Boolean).join(" · ");
  const rows = paper.rows.map((index) => {
    const row = result.rows[index];
    return el("li", {},
      el("button", {
        type: "button",
        class: "row-chip" + (isExcluded(row) ? " excluded" : ""),
        dataset: { row: String(index) },
        title: isExcluded(row) ? "excluded by a reviewer" : "show this row in the table",
      }, rowLabel(row, result.schema)));
  });
  return el("tr", { class: "cited-paper", dataset: { paperId: paper.id } },
    el("td", { class: "paper-title-cell" },
      paperLink(meta.title || paper.id, meta),
      meta.retracted ? el("span", { class: "retracted small" }, " Retracted") : null,
      meta.authors && meta.authors.length ? el("span", { class: "paper-authors small" }, authorList(meta.authors)) : null,
      about ? el("span", { class: "muted small paper-source" }, about) : null),
    el("td", { class: "num" }, meta.year ? String(meta.year) : "—"),
    el("td", {}, el("ul", { class: "row-chips", "aria-label": `Rows supported (${paper.rows.length})` }, ...rows)));
}

/** The cited papers, each with the rows it supports. */
function renderCited(result) {
  const papers = citedPaperList(result);
  $("#cited").hidden = !papers.length;
  $("#cited-heading").textContent = `Cited papers (${papers.length})`;
  $("#cited-table").replaceChildren(
    el("caption", { class: "sr-only" }, `${papers.length} papers cited, with the rows each supports`),
    el("thead", {}, el("tr", {},
      el("th", { scope: "col" }, "Paper"),
      el("th", { scope: "col", class: "num" }, "Year"),
      el("th", { scope: "col" }, "Rows it supports"))),
    el("tbody", {}, ...papers.map((paper) => renderCitedPaper(paper, result))),
  );
}

/** Both paper views of a finished dataset. */
export function renderPapers(result) {
  const flow = (result.stats && result.stats.flow) || null;
  renderFlow(flow);
  const considered = renderScreening(result);
  $("#papers").hidden = !considered && !flow;
  renderCited(result);
}
