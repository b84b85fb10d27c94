"""Pagination that costs the same at any table size.

Django's Paginator counts the whole result set; on a million-row message log that COUNT is the
slowest query of the page. Logs, queue and audit pages instead fetch one row more than they show
to know whether an older page exists: two links (newer/older), no total.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest

PER_PAGE = 50


@dataclass
class Window:
    items: list
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def next_page_number(self) -> int:
        return self.number + 1

    @property
    def previous_page_number(self) -> int:
        return self.number - 1


def _number(request: HttpRequest) -> int:
    try:
        return max(1, min(int(request.GET.get("page", 1)), 10_000))
    except ValueError:
        return 1


def window(queryset: QuerySet, request: HttpRequest, per_page: int = PER_PAGE) -> Window:
    number = _number(request)
    start = (number - 1) * per_page
    rows = list(queryset[start : start + per_page + 1])
    return Window(rows[:per_page], number, len(rows) > per_page)


def counted_page(queryset: QuerySet, request: HttpRequest, per_page: int = PER_PAGE):
    """A numbered page with a total, for lists bounded by one tenant (domains, mailboxes, aliases)."""
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))
