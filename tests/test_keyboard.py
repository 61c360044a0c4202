"""The grading pages' key table: it binds the keys and writes the help, so the two always agree."""

from __future__ import annotations

import json
import re

from django.test import SimpleTestCase
from django.urls import reverse

from grading import keyboard
from tests.factories import image_make
from tests.factories_grading import GradingTestCase, grade_give, workbench_set


def bindings_in(html: str) -> list[dict]:
    match = re.search(
        r'<script id="keyboard-bindings" type="application/json">(.*?)</script>', html
    )
    assert match, "the page carries no key table"
    return json.loads(match.group(1))


def help_rows_in(html: str) -> list[str]:
    help_html = html[html.index("data-keyboard-help") :]
    help_html = help_html[: help_html.index("</details>")]
    return re.findall(r"<dt>(.*?)</dt>", help_html)


class KeyTableTests(SimpleTestCase):
    def test_it_lists_every_bound_key_in_the_help(self):
        for page in (keyboard.GRADE_PAGE, keyboard.ADJUDICATE_PAGE):
            ctx = keyboard.keyboard_ctx(page=page, grade_values=[0, 1, 2, 3, 4])
            self.assertEqual(len(ctx["keyboard_bindings"]), len(ctx["keyboard_help"]))
            for bound, shown in zip(ctx["keyboard_bindings"], ctx["keyboard_help"], strict=True):
                self.assertTrue(bound["keys"])
                self.assertTrue(shown["labels"] and shown["help"])

    def test_it_binds_the_grade_keys_of_the_scale(self):
        ctx = keyboard.keyboard_ctx(page=keyboard.GRADE_PAGE, grade_values=[0, 1, 2, 3])
        grade = ctx["keyboard_bindings"][0]
        self.assertEqual((grade["action"], grade["keys"]), ("grade", ["0", "1", "2", "3"]))
        self.assertEqual(ctx["keyboard_help"][0]["labels"], ["0–3"])

    def test_it_binds_the_activation_map_key(self):
        ctx = keyboard.keyboard_ctx(page=keyboard.GRADE_PAGE, grade_values=[0, 1])
        actions = {tuple(b["keys"]): (b["action"], b["target"]) for b in ctx["keyboard_bindings"]}
        self.assertEqual(actions[("c",)], ("viewer", "toggleCam"))

    def test_it_keeps_queue_keys_off_the_adjudication_page(self):
        ctx = keyboard.keyboard_ctx(page=keyboard.ADJUDICATE_PAGE, grade_values=[0, 1])
        actions = {b["action"] for b in ctx["keyboard_bindings"]}
        self.assertTrue({"grade", "toggle", "save", "viewer"} <= actions)
        self.assertFalse({"skip", "next", "previous"} & actions)

    def test_it_rejects_a_key_bound_twice(self):
        clash = keyboard.KeyBinding(("u",), "toggle", "something else", target="[data-x]")
        with self.assertRaisesMessage(ValueError, "bound twice"):
            keyboard.key_bindings_for(page=keyboard.GRADE_PAGE, grade_values=[0], extra=[clash])

    def test_it_rejects_an_action_the_script_does_not_know(self):
        with self.assertRaisesMessage(ValueError, "Unknown key action"):
            keyboard.KeyBinding(("q",), "explode", "nothing")

    def test_a_toggle_needs_a_target(self):
        with self.assertRaisesMessage(ValueError, "needs a target"):
            keyboard.KeyBinding(("q",), "toggle", "nothing")


class KeyHelpOnPagesTests(GradingTestCase):
    def test_the_grade_page_help_matches_its_key_table_even_in_blind_mode(self):
        self.login(self.alice)
        html = self.client.get(reverse("grade_image", args=[image_make().pk])).content.decode()
        table = bindings_in(html)
        rows = help_rows_in(html)
        self.assertEqual(len(rows), len(table))
        self.assertIn("<kbd>C</kbd>", "".join(rows))
        self.assertIn("<kbd>S</kbd>", "".join(rows))

    def test_the_adjudication_page_has_its_own_help(self):
        workbench_set(grades_required=2)
        image = image_make()
        grade_give(image, self.alice, 1)
        grade_give(image, self.bob, 3)
        self.login(self.rita)
        html = self.client.get(reverse("adjudicate", args=[image.pk])).content.decode()
        rows = help_rows_in(html)
        self.assertEqual(len(rows), len(bindings_in(html)))
        self.assertNotIn("<kbd>S</kbd>", "".join(rows))
