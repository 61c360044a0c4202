"""A memo that lives for one request: rows that many parts of a request read and that it rarely
writes (the workbench settings, the grading scale) are read from the database once per request
instead of once per caller.

Outside a request (Celery tasks, management commands, tests that call a selector directly) there is
no memo and every call reads the database, so nothing can see a stale row for longer than the
request that read it. A service that writes one of these rows forgets it (``request_memo_forget``),
so the rest of that request sees the new value.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar, cast

from django.http import HttpRequest, HttpResponse

T = TypeVar("T")

_memo: ContextVar[dict[str, object] | None] = ContextVar("fundus_request_memo", default=None)


def request_memo(key: str, compute: Callable[[], T]) -> T:
    """``compute()`` once per request under ``key``; every call outside a request computes."""
    memo = _memo.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return cast(T, memo[key])


def request_memo_forget(key: str) -> None:
    memo = _memo.get()
    if memo is not None:
        memo.pop(key, None)


class RequestMemoMiddleware:
    """Opens the memo for the request and drops it with the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _memo.set({})
        try:
            return self.get_response(request)
        finally:
            _memo.reset(token)
