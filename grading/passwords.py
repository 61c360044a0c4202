"""A password validator Django lacks: the password must not contain the username (repeating it,
as in "clin3clin3clin3", passes the similarity check once it is long enough)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

MIN_USERNAME_LENGTH = 3  # shorter names ("al") occur in ordinary words


class UsernameInPasswordValidator:
    def validate(self, password: str, user: Any = None) -> None:
        username = (user.get_username() if user is not None else "") or ""
        if len(username) >= MIN_USERNAME_LENGTH and username.lower() in password.lower():
            raise ValidationError(
                "The password must not contain your username.", code="password_has_username"
            )

    def get_help_text(self) -> str:
        return "Your password must not contain your username."
