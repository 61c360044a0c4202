"""The patient search form."""

from __future__ import annotations

from django import forms


class PatientSearchForm(forms.Form):
    # Longer input cannot match a pseudonym (64 characters at most); a NUL byte is refused.
    q = forms.CharField(required=False, max_length=64, strip=True)
