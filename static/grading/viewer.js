// Photograph viewer: wheel/+/- zoom around the pointer, drag to pan, brightness and contrast,
// server-rendered views (cropped, red-free, Ben Graham) and the activation-map toggle.
(function () {
  "use strict";
  const root = document.querySelector("[data-viewer]");
  if (!root) return;

  const stage = root.querySelector("[data-stage]");
  const canvas = root.querySelector("[data-canvas]");
  const img = root.querySelector("[data-image]");
  const zoomLevel = root.querySelector("[data-zoom-level]");
  const brightness = root.querySelector("[data-brightness]");
  const contrast = root.querySelector("[data-contrast]");
  const status = root.querySelector("[data-viewer-status]");
  const modeButtons = Array.from(root.querySelectorAll("[data-view-mode]"));
  const camToggle = root.querySelector("[data-cam-toggle]");
  const MIN_SCALE = 1, MAX_SCALE = 12;
  let scale = 1, tx = 0, ty = 0;
  let currentSrc = img.getAttribute("src");

  function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }

  function keepInside() {
    // The photograph may not be dragged out of sight: at least the stage stays covered.
    const w = stage.clientWidth, h = stage.clientHeight;
    tx = clamp(tx, w - w * scale, 0);
    ty = clamp(ty, h - h * scale, 0);
  }

  function apply() {
    keepInside();
    canvas.style.transform = `translate(${tx}px, ${ty}px) scale(${scale})`;
    canvas.dataset.scale = scale.toFixed(3);
    if (zoomLevel) zoomLevel.textContent = `${Math.round(scale * 100)}%`;
  }

  function zoomAt(factor, cx, cy) {
    const next = clamp(scale * factor, MIN_SCALE, MAX_SCALE);
    // Keep the point under the pointer (cx, cy in stage pixels) where it is.
    tx = cx - (cx - tx) * (next / scale);
    ty = cy - (cy - ty) * (next / scale);
    scale = next;
    apply();
  }

  function zoomCentre(factor) { zoomAt(factor, stage.clientWidth / 2, stage.clientHeight / 2); }
  function reset() { scale = 1; tx = 0; ty = 0; apply(); }

  stage.addEventListener("wheel", (event) => {
    event.preventDefault();
    const rect = stage.getBoundingClientRect();
    const factor = Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.0015));
    zoomAt(factor, event.clientX - rect.left, event.clientY - rect.top);
  }, { passive: false });

  let drag = null;
  stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    drag = { x: event.clientX, y: event.clientY, tx, ty };
    stage.setPointerCapture(event.pointerId);
    stage.classList.add("panning");
  });
  stage.addEventListener("pointermove", (event) => {
    if (!drag) return;
    tx = drag.tx + (event.clientX - drag.x);
    ty = drag.ty + (event.clientY - drag.y);
    apply();
  });
  function endDrag(event) {
    if (!drag) return;
    drag = null;
    stage.classList.remove("panning");
    if (stage.hasPointerCapture(event.pointerId)) stage.releasePointerCapture(event.pointerId);
  }
  stage.addEventListener("pointerup", endDrag);
  stage.addEventListener("pointercancel", endDrag);
  stage.addEventListener("dblclick", reset);

  root.querySelector("[data-zoom-in]")?.addEventListener("click", () => zoomCentre(1.25));
  root.querySelector("[data-zoom-out]")?.addEventListener("click", () => zoomCentre(0.8));
  root.querySelector("[data-zoom-reset]")?.addEventListener("click", reset);

  function applyFilters() {
    img.style.filter = `brightness(${brightness.value / 100}) contrast(${contrast.value / 100})`;
  }
  brightness?.addEventListener("input", applyFilters);
  contrast?.addEventListener("input", applyFilters);

  function showStatus(text) {
    if (!status) return;
    status.textContent = text;
    status.hidden = !text;
  }

  // A view not rendered yet takes seconds on a raw photograph: say so over the picture (the old
  // view dimmed beneath), instead of leaving the previous view looking like the new one.
  let loadingTimer = null;
  function setLoading(label) {
    clearTimeout(loadingTimer);
    if (!label) {
      stage.classList.remove("loading");
      stage.removeAttribute("aria-busy");
      showStatus("");
      return;
    }
    // Cached views arrive within a frame or two: no flash of the overlay for those.
    loadingTimer = setTimeout(() => {
      stage.classList.add("loading");
      stage.setAttribute("aria-busy", "true");
      showStatus(`Loading the ${label}…`);
    }, 120);
  }

  function load(src, label) {
    if (src === img.getAttribute("src")) return;
    setLoading(label || "view");
    img.setAttribute("src", src);
  }
  img.addEventListener("load", () => setLoading(""));
  img.addEventListener("error", () => {
    setLoading("");
    showStatus("This view is not available for this photograph.");
  });

  function modeLabel(button) { return `${button.textContent.trim()} view`; }

  function selectMode(button) {
    modeButtons.forEach((other) => other.setAttribute("aria-pressed", String(other === button)));
    currentSrc = button.dataset.src;
    currentLabel = modeLabel(button);
    if (camToggle) camToggle.checked = false;
    load(currentSrc, currentLabel);
  }
  let currentLabel = modeButtons.length ? modeLabel(modeButtons[0]) : "view";
  modeButtons.forEach((button) => button.addEventListener("click", () => selectMode(button)));

  function setCam(on) {
    if (!camToggle) return;
    camToggle.checked = on;
    // The worker's map is already blended over the photograph, so it replaces the picture.
    load(on ? camToggle.dataset.camSrc : currentSrc, on ? "activation map" : currentLabel);
  }
  camToggle?.addEventListener("change", () => setCam(camToggle.checked));

  window.addEventListener("resize", apply);
  apply();

  // Keyboard access for the page script (grade.js) and for anyone focused on the viewer.
  window.funduscopeViewer = {
    zoomIn: () => zoomCentre(1.25),
    zoomOut: () => zoomCentre(0.8),
    reset,
    nextMode() {
      const index = modeButtons.findIndex((b) => b.getAttribute("aria-pressed") === "true");
      selectMode(modeButtons[(index + 1) % modeButtons.length]);
    },
    toggleCam() { if (camToggle) setCam(!camToggle.checked); },
    get scale() { return scale; },
  };
})();
