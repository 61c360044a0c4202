"""Pagination helpers shared by the pages and the API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

from django.core.paginator import Page, Paginator
from django.db.models import Model, QuerySet
from django.http import HttpRequest

if TYPE_CHECKING:
    from django.core.paginator import _SupportsPagination

_Row = TypeVar("_Row")
_Row_co = TypeVar("_Row_co", covariant=True)


def page_number(request: HttpRequest) -> str:
    """The ``?page=`` a list asks for; ``Paginator.get_page`` answers a bad one with a valid page."""
    return request.GET.get("page") or "1"


class SlicedRows(Protocol[_Row_co]):
    """Rows computed a page at a time (the worklist's queue, the review table): all that
    ``Paginator`` reads of them is their length and a slice."""

    def __len__(self) -> int: ...
    def __getitem__(self, item: slice, /) -> Sequence[_Row_co]: ...


def sliced_rows_page(rows: SlicedRows[_Row], per_page: int, number: str | None) -> Page[_Row]:
    """``Paginator(rows, per_page).get_page(number)``: the stubs ask for a whole sequence (items by
    index, iteration) where Django's paginator only measures and slices."""
    return Paginator(cast("_SupportsPagination[_Row]", rows), per_page).get_page(number)


class IdsFirstPaginator(Paginator):  # not Paginator[...]: not subscriptable at run time
    """Page numbers at the cost of keyset pages: a page's primary keys are found first (an
    index-only scan when the filters and the order are indexed), then only those rows are read
    and joined. ``OFFSET`` over whole joined rows read and threw away every earlier page's rows:
    page 500 of a 100k-prediction version took 225 ms, 31 ms this way (bench/pages.py)."""

    object_list: QuerySet[Model]

    def page(self, number: int | str) -> Page[Model]:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        queryset = self.object_list
        if bottom == 0 and top == self.count:  # the only page: nothing to skip
            return Page(list(queryset), number, self)
        ids = list(queryset.prefetch_related(None).values_list("pk", flat=True)[bottom:top])
        rows = {row.pk: row for row in queryset.filter(pk__in=ids)}
        return Page([rows[pk] for pk in ids if pk in rows], number, self)
