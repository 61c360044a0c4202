"""The grading pages' keyboard: one table binds the keys (read by static/grading/grade.js) and
writes the "Keyboard shortcuts" help, so the help can never miss a key the page answers to.

To add a key, append a ``KeyBinding``. Most keys need no JavaScript: ``toggle`` flips the checkbox
matched by ``target`` (a CSS selector), ``click`` clicks the element it matches (a radio button, a
button) and ``viewer`` calls ``window.funduscopeViewer[target]()``. A binding whose target is not on
the page does nothing (and is still listed: the help describes the page's keys, not its state).
The other actions (``grade``, ``save``, ``skip``, ``next``, ``previous``, ``leave``, ``help``) are
handled by name in grade.js.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django.template.loader import render_to_string
from django.utils.safestring import SafeString

GRADE_PAGE = "grade"
ADJUDICATE_PAGE = "adjudicate"
ALL_PAGES = frozenset({GRADE_PAGE, ADJUDICATE_PAGE})

# What grade.js knows how to do; a binding naming anything else is a programming error.
ACTIONS = frozenset(
    {
        "grade",
        "toggle",
        "click",
        "save",
        "skip",
        "next",
        "previous",
        "viewer",
        "leave",
        "finding_row",
        "help",
    }
)


@dataclass(frozen=True)
class KeyBinding:
    """``keys`` are ``KeyboardEvent.key`` values, lower-cased; ``labels`` is how the help shows
    them (defaults to the keys)."""

    keys: tuple[str, ...]
    action: str
    help: str
    target: str = ""
    labels: tuple[str, ...] = ()
    pages: frozenset[str] = field(default=ALL_PAGES)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"Unknown key action {self.action!r}; known: {sorted(ACTIONS)}")
        if self.action in ("toggle", "click", "viewer", "finding_row") and not self.target:
            raise ValueError(f"The {self.action!r} key {self.keys} needs a target.")

    def for_script(self) -> dict:
        return {"keys": list(self.keys), "action": self.action, "target": self.target}

    def for_help(self) -> dict:
        return {"labels": list(self.labels or self.keys), "help": self.help}


# The grade keys come from the grade scale (FUNDUS_GRADE_SCALE), so they are added per page.
KEY_BINDINGS: list[KeyBinding] = [
    KeyBinding(("u",), "toggle", "ungradable", target="[data-ungradable]", labels=("U",)),
    KeyBinding(("m",), "toggle", "macular oedema", target="[data-oedema]", labels=("M",)),
    KeyBinding(
        ("enter",),
        "save",
        "save (from anywhere but the notes field); after saving, next image",
        labels=("Enter",),
        pages=frozenset({GRADE_PAGE}),
    ),
    KeyBinding(
        ("enter",),
        "save",
        "confirm the grade (from anywhere but the notes field)",
        labels=("Enter",),
        pages=frozenset({ADJUDICATE_PAGE}),
    ),
    KeyBinding(("s",), "skip", "skip this image", labels=("S",), pages=frozenset({GRADE_PAGE})),
    KeyBinding(
        ("arrowleft",), "previous", "previous image", labels=("←",), pages=frozenset({GRADE_PAGE})
    ),
    KeyBinding(("arrowright",), "next", "next image", labels=("→",), pages=frozenset({GRADE_PAGE})),
    KeyBinding(("+", "="), "viewer", "zoom in", target="zoomIn", labels=("+",)),
    KeyBinding(("-", "_"), "viewer", "zoom out", target="zoomOut", labels=("−",)),
    KeyBinding(("f",), "viewer", "fit the photograph", target="reset", labels=("F",)),
    KeyBinding(
        ("v",),
        "viewer",
        "next view (original, cropped, red-free, Ben Graham)",
        target="nextMode",
        labels=("V",),
    ),
    KeyBinding(
        ("c",),
        "viewer",
        "activation map on/off (once the model's proposal is shown)",
        target="toggleCam",
        labels=("C",),
    ),
    KeyBinding(("escape",), "leave", "leave the notes field", labels=("Esc",)),
    KeyBinding(("?",), "help", "these shortcuts, as a dialog (Esc closes it)", labels=("?",)),
]


# The lesion rubric's keys (grading page, when the rubric is on): a letter ticks a finding; H, B and
# I take a quadrant 1-4 next (the digits then name a quadrant, not a grade).
RUBRIC_KEY_BINDINGS: list[KeyBinding] = [
    KeyBinding(("a",), "toggle", "microaneurysms", target='[data-finding-key="A"]', labels=("A",)),
    KeyBinding(
        ("h",),
        "finding_row",
        "haemorrhages in quadrant 1-4 (ST, SN, IT, IN): cycles –, +, 20+",
        target="haem",
        labels=("H 1–4",),
    ),
    KeyBinding(
        ("b",),
        "finding_row",
        "venous beading in quadrant 1-4",
        target="vb",
        labels=("B 1–4",),
    ),
    KeyBinding(("i",), "finding_row", "IRMA in quadrant 1-4", target="irma", labels=("I 1–4",)),
    KeyBinding(
        ("d",), "toggle", "new vessels at the disc", target='[data-finding-key="D"]', labels=("D",)
    ),
    KeyBinding(
        ("n",), "toggle", "new vessels elsewhere", target='[data-finding-key="N"]', labels=("N",)
    ),
    KeyBinding(
        ("p",),
        "toggle",
        "vitreous / pre-retinal haemorrhage",
        target='[data-finding-key="P"]',
        labels=("P",),
    ),
    KeyBinding(("e",), "toggle", "hard exudates", target='[data-finding-key="E"]', labels=("E",)),
    KeyBinding(
        ("o",),
        "toggle",
        "exudates within 1 disc diameter of the fovea",
        target='[data-finding-key="O"]',
        labels=("O",),
    ),
    KeyBinding(
        ("w",), "toggle", "cotton-wool spots", target='[data-finding-key="W"]', labels=("W",)
    ),
    KeyBinding(("l",), "toggle", "laser scars", target='[data-finding-key="L"]', labels=("L",)),
]


def grade_key_binding(*, values: Sequence[int]) -> KeyBinding:
    keys = tuple(str(value) for value in values)
    labels = (f"{keys[0]}–{keys[-1]}",) if len(keys) > 1 else keys
    return KeyBinding(keys, "grade", "grade", labels=labels)


def key_bindings_for(
    *, page: str, grade_values: Sequence[int], extra: Iterable[KeyBinding] = ()
) -> list[KeyBinding]:
    """The bindings of one page, grade keys first; ``extra`` lets a page add its own keys."""
    bindings = [grade_key_binding(values=grade_values)] if grade_values else []
    bindings += [binding for binding in (*KEY_BINDINGS, *extra) if page in binding.pages]
    seen: dict[str, KeyBinding] = {}
    for binding in bindings:
        for key in binding.keys:
            if key in seen:
                raise ValueError(f"Key {key!r} is bound twice on the {page} page.")
            seen[key] = binding
    return bindings


def keyboard_ctx(
    *, page: str, grade_values: Sequence[int], extra: Iterable[KeyBinding] = ()
) -> dict:
    """Template context: the table for grade.js (``json_script``) and the help built from it."""
    bindings = key_bindings_for(page=page, grade_values=grade_values, extra=extra)
    return {
        "keyboard_bindings": [binding.for_script() for binding in bindings],
        "keyboard_help": [binding.for_help() for binding in bindings],
    }


@functools.lru_cache(maxsize=64)
def _keyboard_help_html(
    page: str,
    grade_values: tuple[int, ...],
    extra: tuple[KeyBinding, ...],
    table: tuple[KeyBinding, ...],
) -> str:
    # ``table`` (KEY_BINDINGS as it stands) is only part of the key: a binding added to the
    # table is listed at once, whatever was rendered before.
    return render_to_string(
        "grading/grading/_keyboard_help.html",
        keyboard_ctx(page=page, grade_values=grade_values, extra=extra),
    )


def keyboard_help_html(
    *, page: str, grade_values: Sequence[int], extra: Iterable[KeyBinding] = ()
) -> SafeString:
    """The keyboard help (the side-panel list, the ``?`` dialog and grade.js's table) as HTML.

    It depends only on the table, the page, the grading scale and the rubric switch, and it was
    the largest part of the grading page's rendering (two lists of every binding): rendered once
    per process and set of inputs.
    """
    return SafeString(
        _keyboard_help_html(page, tuple(grade_values), tuple(extra), tuple(KEY_BINDINGS))
    )
