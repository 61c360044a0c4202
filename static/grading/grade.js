// Keyboard grading. The keys and what they do come from the page's key table
// (grading/keyboard.py, in the #keyboard-bindings JSON), the same table that writes the
// "Keyboard shortcuts" help: a key is bound here exactly when the help lists it.
(function () {
  "use strict";
  const form = document.querySelector("[data-grade-form]");
  const nextForm = document.querySelector("[data-next-form]");
  const previousLink = document.querySelector("[data-previous]");
  const hint = form ? form.querySelector("[data-key-hint]") : null;
  const ungradable = form ? form.querySelector("[data-ungradable]") : null;
  const oedema = form ? form.querySelector("[data-oedema]") : null;
  const savedAlready = form ? form.dataset.saved === "true" : false;
  const correction = form ? form.querySelector("[data-correction]") : null;
  const tableElement = document.getElementById("keyboard-bindings");
  const bindings = tableElement ? JSON.parse(tableElement.textContent) : [];
  const byKey = new Map();
  bindings.forEach((binding) => binding.keys.forEach((key) => byKey.set(key, binding)));
  let dirty = false;
  let submitting = false;

  function radios() { return form ? Array.from(form.querySelectorAll("[data-grade-key]")) : []; }
  function chosen() { return radios().some((r) => r.checked) || (ungradable && ungradable.checked); }
  function say(text) { if (hint) hint.textContent = text; }

  function submit(action) {
    if (!form || submitting) return;
    submitting = true;
    form.querySelector("[data-action]").value = action;
    form.requestSubmit ? form.requestSubmit() : form.submit();
  }

  function goNext() {
    if (!nextForm || submitting) return;
    submitting = true;
    nextForm.requestSubmit ? nextForm.requestSubmit() : nextForm.submit();
  }

  function markDirty() { dirty = true; say(""); }
  // After saving, the grade controls sit in a closed "Correct your grade" section: a grade key
  // opens it, so a correction stays one keystroke away while Enter alone moves on.
  function openCorrection() { if (correction && !correction.open) correction.open = true; }

  if (form) {
    form.addEventListener("change", (event) => {
      if (event.target === ungradable && ungradable.checked) {
        radios().forEach((r) => { r.checked = false; });
        if (oedema) oedema.checked = false;
      }
      if (event.target.matches("[data-grade-key]") && ungradable) ungradable.checked = false;
      if (event.target === oedema && oedema.checked && ungradable) ungradable.checked = false;
      markDirty();
    });
    form.addEventListener("input", (event) => { if (event.target.tagName === "TEXTAREA") markDirty(); });
    form.addEventListener("submit", (event) => {
      const action = form.querySelector("[data-action]").value;
      const submitter = event.submitter;
      if (submitter && submitter.name === "action") return;  // the Skip button carries its own action
      if (action === "submit" && !chosen()) {
        event.preventDefault();
        submitting = false;
        say("Choose a grade (0-4) or U for ungradable first.");
      }
    });
  }

  function typing(target) {
    return target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable ||
      (target.tagName === "INPUT" && !["radio", "checkbox", "range", "hidden", "button", "submit"].includes(target.type)));
  }

  // Enter keeps its own meaning only where the user chose it with the keyboard: on a link and on a
  // submit button (Save, Skip, Next image). Everywhere else it saves: a view button, the zoom
  // buttons, a checkbox or the "Correct your grade" summary keep the focus after a mouse click,
  // and Enter used to click them again while the grade went unsaved.
  function enterActsNatively(target) {
    if (!target) return false;
    if (target.tagName === "A") return true;
    return (target.tagName === "BUTTON" || target.tagName === "INPUT") && target.type === "submit";
  }

  function toggle(selector) {
    const box = document.querySelector(selector);
    if (!box || box.disabled) return false;
    openCorrection();
    box.checked = !box.checked;
    box.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  }

  const actions = {
    grade(key) {
      if (!form) return false;
      const radio = radios().find((r) => r.dataset.gradeKey === key);
      if (!radio) { say(`There is no grade ${key} on this scale.`); return true; }
      openCorrection();
      radio.checked = true;
      radio.dispatchEvent(new Event("change", { bubbles: true }));
      return true;
    },
    toggle(key, binding) { return toggle(binding.target); },
    click(key, binding) {
      const element = document.querySelector(binding.target);
      if (!element || element.disabled) return false;
      if (form && form.contains(element)) openCorrection();
      element.click();
      return true;
    },
    save(key, binding, target) {
      if (enterActsNatively(target)) return false;
      if (!form) { goNext(); return true; }
      if (savedAlready && !dirty) { goNext(); return true; }
      if (!chosen()) { say("Choose a grade (0-4) or U for ungradable first."); return true; }
      submit("submit");
      return true;
    },
    skip() {
      if (!form || !form.querySelector("[data-skip]")) return false;
      submit("skip");
      return true;
    },
    next() { goNext(); return true; },
    previous() {
      if (!previousLink) return false;
      window.location.assign(previousLink.href);
      return true;
    },
    viewer(key, binding) {
      const viewer = window.funduscopeViewer;
      if (!viewer || typeof viewer[binding.target] !== "function") return false;
      viewer[binding.target]();
      return true;
    },
    leave() { return false; },  // handled before the table: Esc only matters inside a text field
  };

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (typing(target)) {
      if (event.key === "Escape") target.blur();
      return;
    }
    // A focused slider (brightness, contrast) keeps its own arrow keys.
    if (target && target.type === "range" && /^(Arrow|Page|Home|End)/.test(event.key)) return;
    const key = event.key.toLowerCase();
    const binding = byKey.get(key);
    if (!binding) {
      if (/^[0-9]$/.test(key) && form) say(`There is no grade ${key} on this scale.`);
      return;
    }
    const handler = actions[binding.action];
    if (handler && handler(key, binding, target)) event.preventDefault();
  });
})();
