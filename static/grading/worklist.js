// Worklist: a queue-order choice applies at once (no inline handler: the CSP forbids inline script).
"use strict";
document.querySelectorAll("[data-submit-on-change]").forEach((select) => {
  select.addEventListener("change", () => select.form.requestSubmit());
});
