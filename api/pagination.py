"""Limit/offset pages with a ceiling, so one request cannot ask for the whole message log."""

from rest_framework import pagination


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    default_limit = 50
    max_limit = 500
