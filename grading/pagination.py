"""Pagination helpers shared by the pages and the API."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest


def page_number(request: HttpRequest) -> str:
    """The ``?page=`` a list asks for; ``Paginator.get_page`` answers a bad one with a valid page."""
    return request.GET.get("page") or "1"


class IdsFirstPaginator(Paginator):
    """Page numbers at the cost of keyset pages: a page's primary keys are found first (an
    index-only scan when the filters and the order are indexed), then only those rows are read
    and joined. ``OFFSET`` over whole joined rows read and threw away every earlier page's rows:
    page 500 of a 100k-prediction version took 225 ms, 31 ms this way (bench/pages.py)."""

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        queryset = self.object_list
        if bottom == 0 and top == self.count:  # the only page: nothing to skip
            return self._get_page(list(queryset), number, self)
        ids = list(queryset.prefetch_related(None).values_list("pk", flat=True)[bottom:top])
        rows = {row.pk: row for row in queryset.filter(pk__in=ids)}
        return self._get_page([rows[pk] for pk in ids if pk in rows], number, self)
