"""Message log and outbound queue pages: per domain for its admins, global for the superadmin.

Both tables grow without bound, so they use portal.paging.window (no COUNT) and search only
through indexed or domain-bounded filters; the message bytes are never loaded for a list.
"""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone

from portal import paging
from portal.audit import record
from portal.forms import SearchForm
from portal.roles import domain_view, not_post, superadmin_required

from . import queue, webhooks
from .forms import WebhookForm
from .models import MessageLog, QueuedMessage, QueuedRecipient, Suppression, Webhook


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


def _own_message(domain, message_pk):
    return get_object_or_404(QueuedMessage.objects.filter(sender_domain=domain).only("pk", "queue_id", "sender"),
                             pk=message_pk)


@domain_view()
def queue_retry(request, domain, message_pk):
    """Deferred recipients of one message due now: after a peer's problem is fixed, no waiting
    out the retry schedule. Recipients a worker holds right now are left to it."""
    message = _own_message(domain, message_pk)
    return not_post(request) or _retry(request, message, domain, redirect("delivery:domain_queue", pk=domain.pk))


@domain_view()
def queue_delete(request, domain, message_pk):
    """The message leaves the queue for good, whatever its recipients' states: no DSN is sent."""
    message = _own_message(domain, message_pk)
    return not_post(request) or _delete(request, message, domain, redirect("delivery:domain_queue", pk=domain.pk))


def _retry(request, message: QueuedMessage, domain, back):
    count = queue.retry_now(message.queue_id)
    if count:
        queue.kick()
    record(request, "queue.retry", message, domain=domain, detail=f"{count} recipients")
    messages.success(request, f"{message.queue_id}: {count} recipient(s) will be tried again now."
                     if count else f"{message.queue_id}: nothing left to retry.")
    return back


def _delete(request, message: QueuedMessage, domain, back):
    queue.delete(message.queue_id)
    record(request, "queue.delete", message, domain=domain)
    messages.success(request, f"{message.queue_id} is deleted from the queue.")
    return back


@domain_view()
def domain_suppressions(request, domain):
    """Recipients that hard-bounced mail of this domain: new mail to them bounces at once until
    the suppression lapses or an admin removes it (after the recipient fixed their mailbox)."""
    q = _q(request)
    rows = Suppression.objects.filter(domain=domain, expires_at__gt=timezone.now())
    if q:
        rows = rows.filter(address__icontains=q)
    rows = rows.order_by("-created_at", "-id")
    return render(request, "delivery/suppressions.html",
                  {"domain": domain, "page": paging.window(rows, request), "q": q})


@domain_view()
def suppression_remove(request, domain, suppression_pk):
    suppression = get_object_or_404(Suppression.objects.filter(domain=domain), pk=suppression_pk)
    if refused := not_post(request):
        return refused
    suppression.delete()
    record(request, "suppression.remove", suppression, domain=domain)
    messages.success(request, f"{suppression.address} is no longer suppressed: new mail to it goes out again.")
    return redirect("delivery:domain_suppressions", pk=domain.pk)


@domain_view()
def domain_webhooks(request, domain):
    """The domain's webhook endpoints, their signing secrets and last results, and a form to add one."""
    form = WebhookForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        webhook = Webhook.objects.create(domain=domain, url=form.cleaned_data["url"],
                                         events=form.cleaned_data["events"])
        record(request, "webhook.create", webhook, domain=domain, detail=", ".join(webhook.events))
        messages.success(request, f"Events now go to {webhook.url} within a few seconds.")
        return redirect("delivery:domain_webhooks", pk=domain.pk)
    return render(request, "delivery/webhooks.html",
                  {"domain": domain, "form": form, "webhooks": domain.webhooks.order_by("created_at", "id")})


@domain_view()
def webhook_test(request, domain, webhook_pk):
    """POST a signed `test` event now, so that an admin sees the endpoint and its check work."""
    webhook = get_object_or_404(Webhook.objects.filter(domain=domain).select_related("domain"), pk=webhook_pk)
    if refused := not_post(request):
        return refused
    problem = webhooks.send_test(webhook)
    if problem is None:
        messages.success(request, f"{webhook.url} took the test event.")
    else:
        messages.error(request, f"{webhook.url} did not take the test event: {problem}")
    return redirect("delivery:domain_webhooks", pk=domain.pk)


@domain_view()
def webhook_delete(request, domain, webhook_pk):
    webhook = get_object_or_404(Webhook.objects.filter(domain=domain), pk=webhook_pk)
    if refused := not_post(request):
        return refused
    webhook.delete()
    record(request, "webhook.delete", webhook, domain=domain)
    messages.success(request, f"{webhook.url} gets no more events; those not yet sent are dropped.")
    return redirect("delivery:domain_webhooks", pk=domain.pk)


@superadmin_required
def global_log(request):
    q = _q(request)
    rows = _search_log(MessageLog.objects.select_related("domain"), q)
    return render(request, "delivery/log.html", {"page": paging.window(rows, request), "q": q})


@superadmin_required
def global_queue(request):
    return render(request, "delivery/queue.html", _queue(request, QueuedRecipient.objects.all()))


def _any_message(message_pk):
    return get_object_or_404(
        QueuedMessage.objects.select_related("sender_domain").only("pk", "queue_id", "sender", "sender_domain"),
        pk=message_pk)


@superadmin_required
def global_queue_retry(request, message_pk):
    """The superadmin's retry, for any message: also the ones no domain admin sees, the DSNs and
    forwards whose envelope sender is not a hosted domain."""
    message = _any_message(message_pk)
    return not_post(request) or _retry(request, message, message.sender_domain, redirect("delivery:queue"))


@superadmin_required
def global_queue_delete(request, message_pk):
    message = _any_message(message_pk)
    return not_post(request) or _delete(request, message, message.sender_domain, redirect("delivery:queue"))
