"""The API's endpoints. Every queryset starts from Domain.objects.for_user(user) (domains.access),
so another tenant's objects are never in reach: a lookup outside it is a 404 on every method."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from delivery.models import MessageLog, QueuedRecipient, Suppression, Webhook
from domains.models import DkimKey, Domain
from domains.records import expected_records
from mailboxes.models import Alias, Mailbox, RelayCredential

from . import serializers as s


def visible_domains(request):
    return Domain.objects.for_user(request.user)


class TenantViewSet(viewsets.GenericViewSet):
    """Lists and lookups limited to the requesting account's domains."""

    create_serializer_class: type | None = None

    @staticmethod
    def owning_domain_id(obj) -> int | None:
        """Which domain an object belongs to, for the object permission (api/permissions.py)."""
        return obj.pk if isinstance(obj, Domain) else obj.domain_id

    def get_serializer_class(self):
        if self.action == "create" and self.create_serializer_class is not None:
            return self.create_serializer_class
        return self.serializer_class


class CreateMixin:
    def create(self, request, *args, **kwargs):
        """Validate with the create serializer, answer with the read representation."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            instance = serializer.save()
        return Response(self.created_representation(instance, serializer), status=status.HTTP_201_CREATED)

    def created_representation(self, instance, serializer):
        return self.serializer_class(instance, context=self.get_serializer_context()).data


class PatchMixin:
    """Updates by PATCH only: a PUT that must resend every field invites clobbering the quota or
    the password someone else just changed."""

    def partial_update(self, request, *args, **kwargs):
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            serializer.save()
        return Response(serializer.data)


def domain_filter(request, qs):
    """`?domain=ID`: only that domain's rows (none for an ID that is not a number)."""
    domain = request.query_params.get("domain")
    if not domain:
        return qs
    return qs.filter(domain_id=domain) if domain.isdigit() else qs.none()


def choice_filter(request, name: str, choices) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if value not in choices.values:
        raise serializers.ValidationError({name: [f"{value!r} is not one of: {', '.join(choices.values)}."]})
    return value


@extend_schema_view(
    partial_update=extend_schema(description="Suspend (`active: false`) or change limits; superadmins only."),
    create=extend_schema(responses=s.DomainSerializer, description="Superadmins only."),
    destroy=extend_schema(description="Superadmins only; refused with 409 while mailboxes remain."),
)
class DomainViewSet(CreateMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, PatchMixin,
                    mixins.DestroyModelMixin, TenantViewSet):
    serializer_class = s.DomainSerializer
    create_serializer_class = s.DomainCreateSerializer
    superadmin_list_actions = {"create"}
    superadmin_object_actions = {"partial_update", "destroy"}

    def get_queryset(self):
        return visible_domains(self.request)

    @extend_schema(responses=s.RecordSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def records(self, request, pk=None):
        """The DNS records this domain should publish (the same list the wizard and createdomain show)."""
        domain = self.get_object()
        data = [{**vars(r), "zone_line": r.zone_line()} for r in expected_records(domain)]
        return Response(s.RecordSerializer(data, many=True).data)


@extend_schema_view(
    list=extend_schema(parameters=[OpenApiParameter("domain", int, description="only this domain's mailboxes")]),
    create=extend_schema(responses=s.MailboxSerializer),
)
class MailboxViewSet(CreateMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, PatchMixin,
                     mixins.DestroyModelMixin, TenantViewSet):
    """A mailbox user sees only their own mailbox, read-only; admins see their domains' mailboxes."""

    serializer_class = s.MailboxSerializer
    create_serializer_class = s.MailboxCreateSerializer

    def get_queryset(self):
        user = self.request.user
        qs = Mailbox.objects.filter(Q(domain__in=visible_domains(self.request)) | Q(user_id=user.pk))
        return domain_filter(self.request, qs).select_related("domain")

    def perform_destroy(self, instance):
        """The login goes too unless it has another role; the Maildir stays on disk (mail is never
        deleted by an API call: an operator removes it once a backup is done)."""
        user = instance.user
        with transaction.atomic():
            instance.delete()
            if not user.is_superuser and not user.administered_domains.exists():
                user.delete()


@extend_schema_view(
    list=extend_schema(parameters=[OpenApiParameter("domain", int, description="only this domain's aliases")]),
    create=extend_schema(responses=s.AliasSerializer),
)
class AliasViewSet(CreateMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, PatchMixin,
                   mixins.DestroyModelMixin, TenantViewSet):
    serializer_class = s.AliasSerializer
    create_serializer_class = s.AliasCreateSerializer

    def get_queryset(self):
        qs = Alias.objects.filter(domain__in=visible_domains(self.request))
        return domain_filter(self.request, qs).select_related("domain")


@extend_schema_view(create=extend_schema(responses=s.RelayCredentialCreateSerializer))
class RelayCredentialViewSet(CreateMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Credentials are never edited or deleted, only revoked: the row keeps the audit trail."""

    serializer_class = s.RelayCredentialSerializer
    create_serializer_class = s.RelayCredentialCreateSerializer

    def get_queryset(self):
        return (RelayCredential.objects.filter(domain__in=visible_domains(self.request))
                .select_related("domain", "mailbox__domain", "mailbox__user"))

    def created_representation(self, instance, serializer):
        return serializer.data  # the only response that carries the secret

    @extend_schema(request=None, responses=s.RelayCredentialSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        cred = self.get_object()
        if cred.revoked_at is None:
            cred.revoke()
        return Response(self.get_serializer(cred).data)


class DkimKeyViewSet(CreateMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Creating a key adds a pending one: publish its record, then activate it in the portal."""

    serializer_class = s.DkimKeySerializer

    def get_queryset(self):
        return DkimKey.objects.filter(domain__in=visible_domains(self.request)).select_related("domain")


@extend_schema_view(list=extend_schema(parameters=[
    OpenApiParameter("domain", int, description="only this domain's log"),
    OpenApiParameter("direction", str, enum=MessageLog.Direction.values),
    OpenApiParameter("result", str, enum=MessageLog.Result.values),
    OpenApiParameter("search", str, description="part of the sender, a recipient, the subject or the queue id"),
]))
class MessageLogViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    serializer_class = s.MessageLogSerializer

    def get_queryset(self):
        qs = MessageLog.objects.filter(domain__in=visible_domains(self.request))
        if self.action != "list":
            return qs
        params = self.request.query_params
        qs = domain_filter(self.request, qs)
        if direction := choice_filter(self.request, "direction", MessageLog.Direction):
            qs = qs.filter(direction=direction)
        if result := choice_filter(self.request, "result", MessageLog.Result):
            qs = qs.filter(result=result)
        if search := params.get("search", "").strip():
            qs = qs.filter(MessageLog.matching(search))
        return qs


@extend_schema_view(list=extend_schema(parameters=[
    OpenApiParameter("state", str, enum=QueuedRecipient.State.values),
]))
class QueueViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """The outbound queue, one row per recipient, of messages sent from the account's domains."""

    serializer_class = s.QueuedRecipientSerializer

    def get_queryset(self):
        qs = QueuedRecipient.objects.filter(message__sender_domain__in=visible_domains(self.request))
        if self.action == "list" and (state := choice_filter(self.request, "state", QueuedRecipient.State)):
            qs = qs.filter(state=state)
        return qs.select_related("message").defer("message__data")

    @staticmethod
    def owning_domain_id(row) -> int | None:
        """A queue row belongs to the domain that sent the message (its `domain` is the recipient's)."""
        return row.message.sender_domain_id

    @extend_schema(request=None, responses=s.QueuedRecipientSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Make the message's pending recipients due now (as `manage.py queue retry`); rows a
        worker holds right now are left to it."""
        from delivery import queue

        row = self.get_object()
        if queue.retry_now(row.message.queue_id):
            queue.kick()
        row.refresh_from_db()
        return Response(self.get_serializer(row).data)


@extend_schema_view(list=extend_schema(parameters=[
    OpenApiParameter("domain", int, description="only this domain's suppressions"),
]))
class SuppressionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantViewSet):
    """Recipients that hard-bounced a domain's mail, while the suppression lasts; DELETE lifts one."""

    serializer_class = s.SuppressionSerializer

    def get_queryset(self):
        qs = Suppression.objects.filter(domain__in=visible_domains(self.request), expires_at__gt=timezone.now())
        if self.action == "list":
            qs = domain_filter(self.request, qs)
        return qs.select_related("domain").order_by("-created_at", "-id")


@extend_schema_view(list=extend_schema(parameters=[
    OpenApiParameter("domain", int, description="only this domain's webhooks"),
]))
class WebhookViewSet(CreateMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, PatchMixin,
                     mixins.DestroyModelMixin, TenantViewSet):
    """A domain's delivery-event endpoints (docs/outbound.md, "Webhooks"); deleting one drops its
    events not yet sent."""

    serializer_class = s.WebhookSerializer

    def get_queryset(self):
        qs = Webhook.objects.filter(domain__in=visible_domains(self.request))
        if self.action == "list":
            qs = domain_filter(self.request, qs)
        return qs.select_related("domain").order_by("created_at", "id")
