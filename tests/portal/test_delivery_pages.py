"""The message log and queue pages: a domain's own rows for its admins, everything for the superadmin."""

from __future__ import annotations

from django.urls import reverse

from delivery.models import MessageLog, QueuedMessage, QueuedRecipient


def _log(domain, subject, **kw):
    return MessageLog.objects.create(domain=domain, direction="inbound", result="accepted",
                                     mail_from="x@remote.test", recipients=f"bob@{domain.name}", subject=subject, **kw)


def _queued(domain, rcpt, state="deferred"):
    msg = QueuedMessage.objects.create(sender=f"bob@{domain.name}", data=b"secret bytes", sender_domain=domain)
    QueuedRecipient.objects.create(message=msg, address=rcpt, domain=rcpt.split("@")[1], state=state,
                                   last_reply="451 4.7.1 try later")
    return msg


def test_a_domain_admin_sees_only_their_domains_log_and_can_search_it(client, alice, example_org, other_test):
    _log(example_org, "quarterly report", queue_id="0123456789ABCDEF")
    _log(example_org, "lunch")
    _log(other_test, "charlie's secret")
    client.force_login(alice)
    page = client.get(reverse("delivery:domain_log", kwargs={"pk": example_org.pk})).content.decode()
    assert "quarterly report" in page and "lunch" in page and "charlie" not in page
    page = client.get(reverse("delivery:domain_log", kwargs={"pk": example_org.pk}), {"q": "REPORT"}).content.decode()
    assert "quarterly report" in page and "lunch" not in page
    page = client.get(reverse("delivery:domain_log", kwargs={"pk": example_org.pk}),
                      {"q": "0123456789abcdef"}).content.decode()
    assert "quarterly report" in page and "lunch" not in page


def test_the_superadmin_sees_every_domain_in_the_global_log(client, superadmin, example_org, other_test):
    _log(example_org, "one")
    _log(other_test, "two")
    client.force_login(superadmin)
    page = client.get(reverse("delivery:log")).content.decode()
    assert "one" in page and "two" in page and "(other.test)" in page


def test_the_queue_page_shows_pending_recipients_with_their_last_reply(client, alice, example_org, other_test):
    msg = _queued(example_org, "friend@remote.test")
    _queued(example_org, "done@remote.test", state="delivered")
    _queued(other_test, "theirs@remote.test")
    client.force_login(alice)
    page = client.get(reverse("delivery:domain_queue", kwargs={"pk": example_org.pk})).content.decode()
    assert msg.queue_id in page and "451 4.7.1 try later" in page
    assert "done@remote.test" not in page and "theirs@remote.test" not in page
    page = client.get(reverse("delivery:domain_queue", kwargs={"pk": example_org.pk}),
                      {"state": "delivered"}).content.decode()
    assert "done@remote.test" in page and "friend@remote.test" not in page


def test_log_pages_link_to_older_rows(client, superadmin, example_org):
    MessageLog.objects.bulk_create([MessageLog(domain=example_org, direction="inbound", result="accepted",
                                               subject=f"message {n:03d}") for n in range(60)])
    client.force_login(superadmin)
    first = client.get(reverse("delivery:log")).content.decode()
    assert "Older" in first and "page=2" in first
    second = client.get(reverse("delivery:log"), {"page": 2}).content.decode()
    assert second.count("message 0") == 10 and "Newer" in second


def _suppressed(domain, address, days=30):
    import datetime as dt

    from django.utils import timezone

    from delivery.models import Suppression

    return Suppression.objects.create(domain=domain, address=address, reason="550 5.1.1 No such user here",
                                      expires_at=timezone.now() + dt.timedelta(days=days))


def test_a_domain_admin_sees_their_domains_live_suppressions_and_removes_one(client, alice, example_org, other_test):
    from delivery.models import Suppression
    from portal.models import AuditLog

    gone = _suppressed(example_org, "gone@remote.test")
    _suppressed(example_org, "lapsed@remote.test", days=-1)
    theirs = _suppressed(other_test, "theirs@remote.test")
    client.force_login(alice)
    url = reverse("delivery:domain_suppressions", kwargs={"pk": example_org.pk})
    page = client.get(url).content.decode()
    assert "gone@remote.test" in page and "550 5.1.1 No such user here" in page
    assert "lapsed@remote.test" not in page and "theirs@remote.test" not in page
    remove = reverse("delivery:suppression_remove", kwargs={"pk": example_org.pk, "suppression_pk": gone.pk})
    assert client.get(remove).status_code == 405 and Suppression.objects.filter(pk=gone.pk).exists()
    response = client.post(remove, follow=True)
    assert "gone@remote.test is no longer suppressed" in response.content.decode()
    assert not Suppression.objects.filter(pk=gone.pk).exists()
    assert AuditLog.objects.filter(action="suppression.remove", domain=example_org).exists()
    # Another tenant's suppression is out of reach, through either domain's URL.
    for pk in (example_org.pk, other_test.pk):
        other = reverse("delivery:suppression_remove", kwargs={"pk": pk, "suppression_pk": theirs.pk})
        assert client.post(other).status_code == 404
    assert Suppression.objects.filter(pk=theirs.pk).exists()


def test_removing_a_suppression_needs_the_csrf_token(example_org, alice):
    from django.test import Client

    from delivery.models import Suppression

    gone = _suppressed(example_org, "gone@remote.test")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    remove = reverse("delivery:suppression_remove", kwargs={"pk": example_org.pk, "suppression_pk": gone.pk})
    assert client.post(remove).status_code == 403
    assert Suppression.objects.filter(pk=gone.pk).exists()


def test_a_domain_admin_retries_a_deferred_message_now_and_deletes_another(client, alice, example_org, other_test):
    import datetime as dt

    from django.utils import timezone

    from portal.models import AuditLog

    later = timezone.now() + dt.timedelta(hours=2)
    waiting = _queued(example_org, "friend@remote.test")
    QueuedRecipient.objects.filter(message=waiting).update(next_attempt_at=later)
    unwanted = _queued(example_org, "typo@remote.tset")
    client.force_login(alice)
    page = client.get(reverse("delivery:domain_queue", kwargs={"pk": example_org.pk})).content.decode()
    assert "Retry now" in page and "Delete" in page
    retry = reverse("delivery:queue_retry", kwargs={"pk": example_org.pk, "message_pk": waiting.pk})
    assert client.get(retry).status_code == 405
    response = client.post(retry, follow=True)
    assert "1 recipient(s) will be tried again now" in response.content.decode()
    rcpt = waiting.recipients.get()
    assert rcpt.state == "queued" and rcpt.next_attempt_at <= timezone.now()
    delete = reverse("delivery:queue_delete", kwargs={"pk": example_org.pk, "message_pk": unwanted.pk})
    assert f"{unwanted.queue_id} is deleted" in client.post(delete, follow=True).content.decode()
    assert not QueuedMessage.objects.filter(pk=unwanted.pk).exists()
    assert {a.action for a in AuditLog.objects.filter(domain=example_org)} >= {"queue.retry", "queue.delete"}


def test_another_tenants_queued_message_cannot_be_retried_or_deleted(client, alice, example_org, other_test):
    theirs = _queued(other_test, "theirs@remote.test")
    client.force_login(alice)
    for name in ("delivery:queue_retry", "delivery:queue_delete"):
        for pk in (example_org.pk, other_test.pk):
            assert client.post(reverse(name, kwargs={"pk": pk, "message_pk": theirs.pk})).status_code == 404
    assert QueuedMessage.objects.filter(pk=theirs.pk).exists()
    assert theirs.recipients.get().state == "deferred"


def test_the_superadmin_retries_and_deletes_mail_no_domain_admin_can_reach_from_the_global_queue(
        client, superadmin, alice, example_org):
    """A DSN has the null sender and a forward keeps a remote sender: neither belongs to a hosted
    domain, so only the superadmin's queue page can act on one stuck in the queue."""
    import datetime as dt

    from django.utils import timezone

    from portal.models import AuditLog

    dsn = QueuedMessage.objects.create(sender="", data=b"report", sender_domain=None)
    QueuedRecipient.objects.create(message=dsn, address="someone@remote.test", domain="remote.test",
                                   state="deferred", next_attempt_at=timezone.now() + dt.timedelta(hours=4))
    forward = QueuedMessage.objects.create(sender="SRS0=abcd=XY=remote.test=x@example.org", data=b"fwd",
                                           sender_domain=None)
    QueuedRecipient.objects.create(message=forward, address="bob@elsewhere.test", domain="elsewhere.test",
                                   state="deferred")
    client.force_login(alice)
    assert client.post(reverse("delivery:global_queue_retry", kwargs={"message_pk": dsn.pk})).status_code == 403
    client.force_login(superadmin)
    page = client.get(reverse("delivery:queue")).content.decode()
    assert page.count("Retry now") == 2 and dsn.queue_id in page and forward.queue_id in page
    retry = reverse("delivery:global_queue_retry", kwargs={"message_pk": dsn.pk})
    assert client.get(retry).status_code == 405
    assert "1 recipient(s) will be tried again now" in client.post(retry, follow=True).content.decode()
    rcpt = dsn.recipients.get()
    assert rcpt.state == "queued" and rcpt.next_attempt_at <= timezone.now()
    delete = reverse("delivery:global_queue_delete", kwargs={"message_pk": forward.pk})
    assert f"{forward.queue_id} is deleted" in client.post(delete, follow=True).content.decode()
    assert not QueuedMessage.objects.filter(pk=forward.pk).exists()
    assert {a.action for a in AuditLog.objects.filter(object_id__in=[str(dsn.pk), str(forward.pk)])} == {
        "queue.retry", "queue.delete"}
    assert client.post(reverse("delivery:global_queue_delete", kwargs={"message_pk": 999999})).status_code == 404


def test_a_domain_admin_adds_a_webhook_sees_its_secret_and_removes_it(client, alice, example_org, other_test):
    from delivery.models import Webhook
    from portal.models import AuditLog

    theirs = Webhook.objects.create(domain=other_test, url="https://hooks.other.test/x", events=["bounced"])
    client.force_login(alice)
    page_url = reverse("delivery:domain_webhooks", kwargs={"pk": example_org.pk})
    refused = client.post(page_url, {"url": "http://hooks.example.net/mail", "events": ["delivered"]})
    assert "Use an https:// URL" in refused.content.decode() and not Webhook.objects.filter(domain=example_org)
    nothing = client.post(page_url, {"url": "https://hooks.example.net/mail"})
    assert "This field is required" in nothing.content.decode()
    client.post(page_url, {"url": "https://hooks.example.net/mail", "events": ["delivered", "bounced"]})
    webhook = Webhook.objects.get(domain=example_org)
    assert webhook.events == ["delivered", "bounced"] and len(webhook.secret) >= 40
    page = client.get(page_url).content.decode()
    assert "https://hooks.example.net/mail" in page and webhook.secret in page
    assert theirs.url not in page and theirs.secret not in page
    delete = reverse("delivery:webhook_delete", kwargs={"pk": example_org.pk, "webhook_pk": webhook.pk})
    assert "gets no more events" in client.post(delete, follow=True).content.decode()
    assert not Webhook.objects.filter(pk=webhook.pk).exists()
    assert {a.action for a in AuditLog.objects.filter(domain=example_org)} == {"webhook.create", "webhook.delete"}
