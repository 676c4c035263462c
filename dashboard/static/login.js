// The login form posts by itself (no script needed). This only explains a failure, and leaves
// for the dashboard when the session cookie is already there: a SameSite=Strict cookie is not
// sent on a navigation that comes from another site, so such a visit lands here first.

const failed = new URLSearchParams(location.search).get("failed");
const note = document.getElementById("failed");
if (failed) {
  note.textContent = failed === "limit"
    ? "Too many failed attempts from this address; wait a few minutes."
    : "Wrong password.";
  note.hidden = false;
}

fetch("/api/config", { cache: "no-store" })
  .then((r) => { if (r.ok) location.replace("/"); })
  .catch(() => {});
