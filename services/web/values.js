// Small pure helpers the page's modules share: how values, papers and rows are shown.
// DOM helpers ($, el) and the API client (api, ApiError) are common.js's globals, loaded first.

/** ``object[key]`` when ``object`` has that key itself, else undefined. Rows, flags and review cells are keyed by
 * field names users choose: a column named "toString" or "constructor" must not find Object.prototype's function. */
export const own = (object, key) => (object != null && Object.hasOwn(object, key) ? object[key] : undefined);

/** A cell's value as text: "—" for none, JSON for lists and objects. */
export function formatValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A number from anything the API sent (0 when it is not one). */
export const count = (value) => (Number.isFinite(Number(value)) ? Number(value) : 0);

/** A value litminer made itself (an identifier from the row's name), not a quote from a paper. */
export function isGenerated(citation) {
  return citation.source_id === "generated" || Boolean(citation.metadata && citation.metadata.source === "generated");
}

/** The citations that back a row's values: quotes, not generated identifiers, and none of a rejected cell. */
export function backing(row) {
  const cells = (row.review && row.review.cells) || {};
  return row.citations.filter((c) => !isGenerated(c) && own(cells, c.field)?.status !== "rejected");
}

/** The distinct papers backing a row: its support. */
export function citedPapers(row) {
  return new Set(backing(row).map((c) => c.source_id));
}

/** What a row is called in lists: its first quoted text value, else its id. */
export function rowLabel(row, schema) {
  for (const field of schema) {
    const value = own(row.row, field.name);
    const quoted = row.citations.some((c) => c.field === field.name && !isGenerated(c));
    if (quoted && typeof value === "string" && value.trim()) return value;
  }
  return row.row_id || "(row)";
}

export const isExcluded = (row) => Boolean(row.review && row.review.excluded);

/** A link to a paper: its DOI, else its web address (never a javascript: URL), else plain text. */
export function paperLink(text, { doi, url }, className = "paper-link") {
  if (doi) {
    const bare = String(doi).replace(/^https?:\/\/(dx\.)?doi\.org\//i, "");
    return el("a", { href: `https://doi.org/${bare}`, target: "_blank", rel: "noopener", class: className }, text);
  }
  if (/^https?:\/\//i.test(String(url || ""))) {
    // only web links: the url comes from the paper's metadata, which nobody vetted
    return el("a", { href: url, target: "_blank", rel: "noopener", class: className }, text);
  }
  return el("span", { class: className }, text);
}

/** "A, B, C" for up to six authors, then "et al.". */
export function authorList(authors) {
  if (!Array.isArray(authors) || !authors.length) return "";
  return authors.length > 6 ? `${authors.slice(0, 6).join(", ")}, et al.` : authors.join(", ");
}

/** A Unix time as local date and time. */
export function when(seconds) {
  return new Date(Number(seconds) * 1000).toLocaleString();
}
