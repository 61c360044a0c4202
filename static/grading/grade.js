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
  const helpDialog = document.querySelector("[data-key-help-dialog]");
  // How each element got the focus: by the keyboard (Tab) or by the pointer.
  const focusedBy = new WeakMap();
  let lastInput = "keyboard";
  document.addEventListener("pointerdown", () => { lastInput = "pointer"; }, true);
  document.addEventListener("keydown", () => { lastInput = "keyboard"; }, true);
  document.addEventListener("focusin", (event) => { focusedBy.set(event.target, lastInput); });
  let dirty = false;
  let submitting = false;

  // Lesion rubric: findings by key, the ICDR grade derived live. derive() mirrors
  // mlcore.rubric.icdr_grade_derive; the server derives the grade again when saving.
  const rubric = form ? form.querySelector("[data-rubric]") : null;
  const QUADRANTS = ["ST", "SN", "IT", "IN"];
  const ROW_NAMES = { haem: "Haemorrhages", vb: "Venous beading", irma: "IRMA" };
  let gradeManual = false;  // the grader chose a grade themselves (kept over the derived one)
  let pendingRow = null;    // H, B or I was pressed: the next 1-4 picks the quadrant
  let pendingTimer = null;

  function cell(row, quadrant) {
    return rubric.querySelector(`[data-quadrant-row="${row}"] [data-quadrant="${quadrant}"]`);
  }
  function cellValue(row, quadrant) {
    const input = cell(row, quadrant);
    return input.tagName === "SELECT" ? Number(input.value) : (input.checked ? 1 : 0);
  }
  function flag(key) {
    const input = rubric.querySelector(`[data-finding-key="${key}"]`);
    return Boolean(input && input.checked);
  }
  function quadrantCount(row, atLeast) {
    return QUADRANTS.filter((q) => cellValue(row, q) >= atLeast).length;
  }
  function derive() {
    const haem = quadrantCount("haem", 1), haemSevere = quadrantCount("haem", 2);
    const beading = quadrantCount("vb", 1), irma = quadrantCount("irma", 1);
    if (flag("D") || flag("N")) return [4, "proliferative: neovascularisation"];
    if (flag("P")) return [4, "proliferative: vitreous / pre-retinal haemorrhage"];
    if (haemSevere >= 4) return [3, "severe (4-2-1): 20+ haemorrhages in all 4 quadrants"];
    if (beading >= 2) return [3, `severe (4-2-1): venous beading in ${beading} quadrants`];
    if (irma >= 1) return [3, "severe (4-2-1): IRMA"];
    const beyond = [];
    if (haem) beyond.push("haemorrhages");
    if (beading) beyond.push("venous beading");
    if (flag("E") || flag("O")) beyond.push("hard exudates");
    if (flag("W")) beyond.push("cotton-wool spots");
    if (beyond.length) return [2, `moderate: more than microaneurysms (${beyond.join(", ")})`];
    if (flag("A")) return [1, "mild: microaneurysms only"];
    return [0, "no apparent retinopathy"];
  }
  function findingsClear() {
    rubric.querySelectorAll("[data-finding]").forEach((input) => {
      if (input.tagName === "SELECT") input.value = "0"; else input.checked = false;
    });
  }
  function anyFinding() {
    return Array.from(rubric.querySelectorAll("[data-finding]")).some(
      (input) => (input.tagName === "SELECT" ? input.value !== "0" : input.checked));
  }
  // With nothing ticked a grade is a plain grade (the server records the rubric as unused).
  function overriding() {
    if (!rubric || !anyFinding()) return false;
    const radio = radios().find((r) => r.checked);
    return Boolean(radio) && Number(radio.dataset.gradeKey) !== derive()[0];
  }
  function refreshRubric(findingChanged) {
    if (!rubric) return;
    const [grade, reason] = derive();
    const radio = radios().find((r) => r.dataset.gradeKey === String(grade));
    rubric.querySelector("[data-derived-grade]").textContent =
      radio ? radio.parentElement.textContent.trim() : String(grade);
    rubric.querySelector("[data-derived-reason]").textContent = `(${reason})`;
    if (findingChanged && !gradeManual && radio) {
      radio.checked = true;
      if (ungradable) ungradable.checked = false;
    }
    rubric.querySelector("[data-override]").hidden = !overriding();
  }
  function rowStep(row, quadrant) {
    const input = cell(row, quadrant);
    if (input.tagName === "SELECT") input.value = String((Number(input.value) + 1) % 3);
    else input.checked = !input.checked;
    input.dispatchEvent(new Event("change", { bubbles: true }));
    const shown = input.tagName === "SELECT" ? input.selectedOptions[0].textContent : (input.checked ? "yes" : "no");
    say(`${ROW_NAMES[row]} ${quadrant}: ${shown}`);
  }

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

  // "Grade saved": written into the live region after load, so that it is announced (a region
  // that already holds its text when the page loads is not).
  const liveStatus = document.querySelector("[data-live-status]");
  const inlineMessages = document.querySelector("[data-inline-messages]");
  if (liveStatus && inlineMessages) {
    setTimeout(() => { liveStatus.textContent = inlineMessages.textContent.trim().replace(/\s+/g, " "); }, 150);
  }

  if (form) {
    form.addEventListener("change", (event) => {
      const target = event.target;
      if (target === ungradable && ungradable.checked) {
        radios().forEach((r) => { r.checked = false; });
        if (oedema) oedema.checked = false;
        if (rubric) { findingsClear(); gradeManual = false; }
      }
      if (target.matches("[data-grade-key]")) {
        if (ungradable) ungradable.checked = false;
        gradeManual = Boolean(rubric) && Number(target.value) !== derive()[0];
      }
      if (target === oedema && oedema.checked && ungradable) ungradable.checked = false;
      if (target.matches("[data-finding]")) {
        // Exudates near the fovea are exudates, and suggest macular oedema (the grader may clear it).
        if (target.dataset.findingKey === "O" && target.checked) {
          const exudates = rubric.querySelector('[data-finding-key="E"]');
          if (exudates) exudates.checked = true;
          if (oedema) oedema.checked = true;
        }
        if (target.dataset.findingKey === "E" && !target.checked) {
          const nearFovea = rubric.querySelector('[data-finding-key="O"]');
          if (nearFovea) nearFovea.checked = false;
        }
      }
      refreshRubric(target.matches("[data-finding]"));
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
        return;
      }
      const reason = form.querySelector("[data-override-reason]");
      if (action === "submit" && overriding() && reason && !reason.value.trim()) {
        event.preventDefault();
        submitting = false;
        say("The grade differs from the findings: give a reason for the override.");
        reason.focus();
      }
    });
    refreshRubric(false);
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
    // The keyboard help's summary reached with the keyboard: Enter opens it (it used to warn
    // "choose a grade"). After a mouse click it keeps the focus, and Enter saves as elsewhere.
    if (target.tagName === "SUMMARY" && target.closest("[data-keyboard-help]") &&
        focusedBy.get(target) === "keyboard") return true;
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
    leave() { return false; },
    help() {
      if (!helpDialog || helpDialog.open) return false;
      helpDialog.showModal();
      return true;
    },  // handled before the table: Esc only matters inside a text field
    finding_row(key, binding) {
      if (!rubric) return false;
      openCorrection();
      pendingRow = binding.target;
      clearTimeout(pendingTimer);
      pendingTimer = setTimeout(() => { pendingRow = null; say(""); }, 3000);
      say(`${ROW_NAMES[pendingRow]}: press 1-4 for quadrant ST, SN, IT, IN (Esc cancels).`);
      return true;
    },
  };

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (helpDialog && helpDialog.open) return;  // the dialog keeps its keys (Esc, Tab, Enter)
    const target = event.target;
    if (typing(target)) {
      if (event.key === "Escape") target.blur();
      return;
    }
    // A focused slider (brightness, contrast) keeps its own arrow keys.
    if (target && target.type === "range" && /^(Arrow|Page|Home|End)/.test(event.key)) return;
    const key = event.key.toLowerCase();
    if (pendingRow) {
      // After H, B or I, the digits 1-4 name a quadrant instead of a grade.
      const row = pendingRow;
      pendingRow = null;
      clearTimeout(pendingTimer);
      say("");
      if (/^[1-4]$/.test(key)) {
        rowStep(row, QUADRANTS[Number(key) - 1]);
        event.preventDefault();
        return;
      }
      if (key === "escape") { event.preventDefault(); return; }
    }
    const binding = byKey.get(key);
    if (!binding) {
      if (/^[0-9]$/.test(key) && form) say(`There is no grade ${key} on this scale.`);
      return;
    }
    const handler = actions[binding.action];
    if (handler && handler(key, binding, target)) event.preventDefault();
  });
})();
