"""Message log and outbound queue pages: per domain for its admins, global for the superadmin.

Both tables grow without bound, so they use portal.paging.window (no COUNT) and search only
through indexed or domain-bounded filters; the message bytes are never loaded for a list.
"""

from __future__ import annotations

from django.db.models import Q
from django.shortcuts import render

from portal import paging
from portal.forms import SearchForm
from portal.roles import domain_view, superadmin_required

from .models import MessageLog, QueuedRecipient


def _q(request) -> str:
    search = SearchForm(request.GET)
    return search.cleaned_data["q"].strip() if search.is_valid() else ""


def _search_log(rows, q: str):
    return rows.filter(MessageLog.matching(q)) if q else rows


def _queue(request, rows):
    state = request.GET.get("state", "pending")
    if state == "pending":
        rows = rows.filter(state__in=QueuedRecipient.PENDING_STATES)
    elif state in QueuedRecipient.State.values:
        rows = rows.filter(state=state)
    q = _q(request)
    if q:
        rows = rows.filter(Q(message__queue_id=q.upper()) | Q(address__icontains=q) | Q(message__sender__icontains=q))
    rows = rows.select_related("message").defer("message__data").order_by("next_attempt_at", "id")
    return {"page": paging.window(rows, request), "q": q, "state": state,
            "states": ["pending", *QueuedRecipient.State.values]}


@domain_view()
def domain_log(request, domain):
    q = _q(request)
    rows = _search_log(MessageLog.objects.filter(domain=domain), q)
    return render(request, "delivery/log.html", {"domain": domain, "page": paging.window(rows, request), "q": q})


@domain_view()
def domain_queue(request, domain):
    context = _queue(request, QueuedRecipient.objects.filter(message__sender_domain=domain))
    return render(request, "delivery/queue.html", {"domain": domain, **context})


@superadmin_required
def global_log(request):
    q = _q(request)
    rows = _search_log(MessageLog.objects.select_related("domain"), q)
    return render(request, "delivery/log.html", {"page": paging.window(rows, request), "q": q})


@superadmin_required
def global_queue(request):
    return render(request, "delivery/queue.html", _queue(request, QueuedRecipient.objects.all()))
