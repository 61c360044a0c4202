"""The worklist's form."""

from __future__ import annotations

from typing import Any

from django import forms


class WorklistNextForm(forms.Form):
    """``from``: the image the grader leaves; anything that is not an image id is ignored."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # "from" is a Python keyword, so the field is added by name.
        self.fields["from"] = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
