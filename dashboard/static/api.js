// The dashboard's own HTTP API, as the page uses it: config, POSTs with the CSRF header, and the
// ingest's viewer WebSocket URL (same origin, or the configured one, with a viewer token).

let config = null;

export function toLogin() {
  if (location.pathname !== "/login") location.assign("/login");
}

export async function loadConfig() {
  const r = await fetch("/api/config", { cache: "no-store" });
  if (r.status === 401) {
    toLogin();
    throw new Error("not logged in");
  }
  if (!r.ok) throw new Error(`/api/config: HTTP ${r.status}`);
  config = await r.json();
  return config;
}

export function currentConfig() {
  return config;
}

export async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (config && config.csrf) headers["X-Flumph-CSRF"] = config.csrf;
  let r;
  try {
    r = await fetch(path, {
      method: "POST",
      headers,
      body: body === undefined ? "" : JSON.stringify(body),
    });
  } catch (e) {
    return { ok: false, status: 0, doc: null, detail: `network error: ${e.message || e}` };
  }
  if (r.status === 401) toLogin();
  let doc = null;
  try {
    doc = await r.json();
  } catch (e) {
    doc = null;
  }
  const detail = doc && typeof doc.detail === "string" ? doc.detail : `HTTP ${r.status}`;
  return { ok: r.ok, status: r.status, doc, detail };
}

export function ingestBase() {
  const configured = config && config.ingest_ws_url;
  if (!configured) {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    return `${proto}//${location.host}`;
  }
  return configured.replaceAll("{host}", location.hostname);
}

// A fresh URL per (re)connect: viewer tokens are short-lived and checked only when connecting.
export async function viewerUrl(deviceId) {
  let url = `${ingestBase()}/ws/view/${encodeURIComponent(deviceId)}`;
  if (config && config.viewer_tokens) {
    const r = await fetch("/api/viewer-token", { cache: "no-store" });
    if (r.status === 401) {
      toLogin();
      throw new Error("logged out");
    }
    if (!r.ok) throw new Error(`viewer token: HTTP ${r.status}`);
    const { token } = await r.json();
    if (token) url += `?token=${encodeURIComponent(token)}`;
  }
  return url;
}
