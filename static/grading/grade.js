// Keyboard grading: 0-9 grade, U ungradable, M macular oedema, Enter save (or, after saving, next
// image), S skip, arrows previous/next, +/-/F zoom, V view, C activation map, Esc leaves notes.
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
    return target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" ||
      (target.tagName === "INPUT" && !["radio", "checkbox", "range", "hidden"].includes(target.type)));
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (typing(target)) {
      if (event.key === "Escape") target.blur();
      return;
    }
    // A focused slider (brightness, contrast) keeps its own arrow keys.
    if (target && target.type === "range" && /^(Arrow|Page|Home|End)/.test(event.key)) return;
    const key = event.key;
    const viewer = window.funduscopeViewer;
    if (/^[0-9]$/.test(key) && form) {
      const radio = radios().find((r) => r.dataset.gradeKey === key);
      if (!radio) { say(`There is no grade ${key} on this scale.`); return; }
      openCorrection();
      radio.checked = true;
      radio.dispatchEvent(new Event("change", { bubbles: true }));
      event.preventDefault();
      return;
    }
    switch (key.toLowerCase()) {
      case "u":
        if (!ungradable) return;
        openCorrection();
        ungradable.checked = !ungradable.checked;
        ungradable.dispatchEvent(new Event("change", { bubbles: true }));
        break;
      case "m":
        if (!oedema) return;
        openCorrection();
        oedema.checked = !oedema.checked;
        oedema.dispatchEvent(new Event("change", { bubbles: true }));
        break;
      case "s":
        if (!form || !form.querySelector("[data-skip]")) return;
        submit("skip");
        break;
      case "enter":
        // A focused button or link does its own thing on Enter.
        if (target && (target.tagName === "BUTTON" || target.tagName === "A" || target.tagName === "SUMMARY")) return;
        if (!form) { goNext(); break; }
        if (savedAlready && !dirty) { goNext(); break; }
        if (!chosen()) { say("Choose a grade (0-4) or U for ungradable first."); break; }
        submit("submit");
        break;
      case "arrowright":
        goNext();
        break;
      case "arrowleft":
        if (previousLink) window.location.assign(previousLink.href);
        break;
      case "+": case "=":
        viewer?.zoomIn();
        break;
      case "-": case "_":
        viewer?.zoomOut();
        break;
      case "f":
        viewer?.reset();
        break;
      case "v":
        viewer?.nextMode();
        break;
      case "c":
        viewer?.toggleCam();
        break;
      default:
        return;
    }
    event.preventDefault();
  });
})();
