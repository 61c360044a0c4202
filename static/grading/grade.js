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

  // Lesion rubric: findings by key, the ICDR grade derived live. derive() mirrors
  // mlcore.rubric.icdr_grade_derive; the server derives the grade again when saving.
  const rubric = form ? form.querySelector("[data-rubric]") : null;
  const QUADRANTS = ["ST", "SN", "IT", "IN"];
  const ROW_KEYS = { h: "haem", b: "vb", i: "irma" };
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
  function overriding() {
    if (!rubric) return false;
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
  function rowPending(row) {
    pendingRow = row;
    clearTimeout(pendingTimer);
    pendingTimer = setTimeout(() => { pendingRow = null; say(""); }, 3000);
    say(`${ROW_NAMES[row]}: press 1-4 for quadrant ST, SN, IT, IN (Esc cancels).`);
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
    if (pendingRow) {
      const row = pendingRow;
      pendingRow = null;
      clearTimeout(pendingTimer);
      if (/^[1-4]$/.test(key)) {
        openCorrection();
        rowStep(row, QUADRANTS[Number(key) - 1]);
        event.preventDefault();
        return;
      }
      say("");
      if (key === "Escape") { event.preventDefault(); return; }
    }
    if (rubric && ROW_KEYS[key.toLowerCase()]) {
      openCorrection();
      rowPending(ROW_KEYS[key.toLowerCase()]);
      event.preventDefault();
      return;
    }
    const findingInput = rubric && key.length === 1
      ? rubric.querySelector(`[data-finding-key="${key.toUpperCase()}"]`) : null;
    if (findingInput) {
      openCorrection();
      findingInput.checked = !findingInput.checked;
      findingInput.dispatchEvent(new Event("change", { bubbles: true }));
      event.preventDefault();
      return;
    }
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
