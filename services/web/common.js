// Shared by the litminer pages (index.html, ops.html): DOM building, storage, and the API client.
// Plain modern JavaScript, loaded before each page's own script.
"use strict";

const API_KEY_KEY = "litminer.apiKey";
const TERMINAL = new Set(["completed", "error", "cancelled"]);

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function storageGet(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function storageSet(key, value) {
  try {
    if (value) localStorage.setItem(key, value);
    else localStorage.removeItem(key);
  } catch {
    /* storage disabled: keep going without persistence */
  }
}

const apiKey = () => storageGet(API_KEY_KEY) || "";

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

/** fetch() with the API key header; JSON in and out; throws ApiError for non-2xx replies. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 300) };
    }
  }
  if (response.status === 401) askForApiKey(data && data.detail);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

function askForApiKey(detail) {
  const box = $("#auth");
  if (!box.hidden) return; // already asking: keep what the user is typing (/ops refreshes every 2 s)
  $("#auth-text").textContent = detail
    ? `This server needs an API key (${detail}).`
    : "This server needs an API key.";
  box.hidden = false;
  const input = $("#api-key");
  input.value = apiKey();
  input.focus();
}
