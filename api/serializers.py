"""What the API shows and accepts. Validation lives in the models and provisioning functions:
these serializers only shape input for them and map their errors onto fields."""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from delivery import webhooks
from delivery.models import MessageLog, QueuedRecipient, Suppression, Webhook
from domains.dkim import create_key
from domains.models import DkimKey, Domain
from domains.provisioning import create_domain
from mailboxes.models import Alias, Mailbox, RelayCredential
from mailboxes.provisioning import create_alias, create_mailbox
from mailhost.addresses import AddressError, normalize_domain, parse_address

from .errors import api_validation_error


def not_administered(name: str) -> str:
    # The same words whether the domain exists elsewhere or not at all: no existence oracle.
    return f"{name} is not a domain you administer."


def administered_domain(user, name: str) -> Domain:
    domain = Domain.objects.for_user(user).filter(name=name).first()
    if domain is None:
        raise serializers.ValidationError(not_administered(name))
    return domain


class TenantDomainField(serializers.PrimaryKeyRelatedField):
    """A domain id the requesting account administers; any other id reads as nonexistent."""

    def __init__(self, **kwargs):
        super().__init__(queryset=Domain.objects.all(), **kwargs)

    def get_queryset(self):
        return Domain.objects.for_user(self.context["request"].user)


class TenantMailboxField(serializers.PrimaryKeyRelatedField):
    def __init__(self, **kwargs):
        super().__init__(queryset=Mailbox.objects.all(), **kwargs)

    def get_queryset(self):
        return Mailbox.objects.filter(domain__in=Domain.objects.for_user(self.context["request"].user))


def save_clean(instance, fields: dict, *, rename: dict[str, str] | None = None):
    """Apply `fields`, run the model's own full_clean, save; errors come back as API field errors."""
    for name, value in fields.items():
        setattr(instance, name, value)
    try:
        instance.full_clean()
    except DjangoValidationError as exc:
        raise api_validation_error(exc, rename=rename) from exc
    instance.save()
    return instance


# Domains -----------------------------------------------------------------------------------------

class DomainSerializer(serializers.ModelSerializer):
    class Meta:
        model = Domain
        fields = ["id", "name", "unicode_name", "active", "max_mailboxes", "max_aliases", "default_quota",
                  "max_quota", "send_limit_per_hour", "ownership_verified_at", "created_at"]
        read_only_fields = ["id", "name", "unicode_name", "ownership_verified_at", "created_at"]

    def update(self, instance, validated_data):
        return save_clean(instance, validated_data)


class DomainCreateSerializer(DomainSerializer):
    class Meta(DomainSerializer.Meta):
        read_only_fields = ["id", "unicode_name", "ownership_verified_at", "created_at"]
        extra_kwargs = {"name": {"validators": [], "help_text": "U-label or A-label; stored as the A-label"}}

    def create(self, validated_data):
        name = validated_data.pop("name")
        try:
            return create_domain(name, **validated_data)
        except DjangoValidationError as exc:
            raise api_validation_error(exc, default="name") from exc


class RecordSerializer(serializers.Serializer):
    key = serializers.CharField()
    owner = serializers.CharField()
    type = serializers.CharField()
    value = serializers.CharField()
    required = serializers.BooleanField()
    ttl = serializers.IntegerField()
    note = serializers.CharField()
    zone_line = serializers.CharField(help_text="the record as a BIND zone-file line")


# Mailboxes ---------------------------------------------------------------------------------------

class MailboxSerializer(serializers.ModelSerializer):
    address = serializers.CharField(read_only=True)
    password = serializers.CharField(write_only=True, required=False, style={"input_type": "password"},
                                     help_text="set to reset the password")

    class Meta:
        model = Mailbox
        fields = ["id", "address", "domain", "display_name", "quota", "used_bytes", "active", "send_limit_per_hour",
                  "created_at", "password"]
        read_only_fields = ["id", "domain", "used_bytes", "created_at"]

    def validate_password(self, value: str) -> str:
        try:
            validate_password(value, getattr(self.instance, "user", None))
        except DjangoValidationError as exc:
            raise serializers.ValidationError(list(exc.messages)) from exc
        return value

    def update(self, instance, validated_data):
        password = validated_data.pop("password", None)
        with transaction.atomic():
            save_clean(instance, validated_data, rename={"local_part": "address"})
            if password is not None:
                instance.user.set_password(password)
                instance.user.save(update_fields=["password"])
        return instance


class MailboxCreateSerializer(MailboxSerializer):
    address = serializers.CharField(help_text="full address; U-label domains accepted")
    password = serializers.CharField(write_only=True, style={"input_type": "password"})
    quota = serializers.IntegerField(min_value=0, required=False, help_text="bytes; default: the domain's")

    def validate_address(self, value: str) -> str:
        try:
            address = parse_address(value, allow_subaddress=False)
        except AddressError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        administered_domain(self.context["request"].user, address.domain)
        return str(address)

    def create(self, validated_data):
        try:
            return create_mailbox(validated_data["address"], validated_data["password"],
                                  quota=validated_data.get("quota"),
                                  display_name=validated_data.get("display_name", ""))
        except DjangoValidationError as exc:
            raise api_validation_error(exc, rename={"local_part": "address"}) from exc


# Aliases -----------------------------------------------------------------------------------------

class AliasSerializer(serializers.ModelSerializer):
    address = serializers.CharField(read_only=True)
    destinations = serializers.ListField(child=serializers.CharField(), allow_empty=False)

    class Meta:
        model = Alias
        fields = ["id", "address", "domain", "local_part", "is_catch_all", "destinations", "active", "created_at"]
        read_only_fields = ["id", "domain", "local_part", "is_catch_all", "created_at"]

    def update(self, instance, validated_data):
        return save_clean(instance, validated_data)


class AliasCreateSerializer(AliasSerializer):
    address = serializers.CharField(help_text="local@domain, or @domain for the domain's catch-all")

    def validate_address(self, value: str) -> str:
        try:
            domain = normalize_domain(value.rpartition("@")[2])
        except AddressError as exc:
            raise serializers.ValidationError(str(exc)) from exc
        administered_domain(self.context["request"].user, domain)
        return value

    def create(self, validated_data):
        try:
            alias = create_alias(validated_data["address"], validated_data["destinations"])
        except DjangoValidationError as exc:
            raise api_validation_error(exc, rename={"local_part": "address"}, default="address") from exc
        if validated_data.get("active") is False:
            alias.active = False
            alias.save(update_fields=["active"])
        return alias


# Relay credentials -------------------------------------------------------------------------------

class RelayCredentialSerializer(serializers.ModelSerializer):
    login = serializers.SerializerMethodField(help_text="the SMTP AUTH user name")
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = RelayCredential
        fields = ["id", "domain", "mailbox", "label", "login", "allowed_senders", "rate_limit_per_hour",
                  "created_at", "last_used_at", "revoked_at", "active"]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField())
    def get_login(self, cred: RelayCredential) -> str:
        return cred.login or cred.mailbox.address


class RelayCredentialCreateSerializer(RelayCredentialSerializer):
    domain = TenantDomainField()
    mailbox = TenantMailboxField(required=False, allow_null=True,
                                 help_text="set for a mailbox's app password; omit for a domain relay login")
    allowed_senders = serializers.ListField(child=serializers.CharField(), required=False,
                                            help_text="addresses, or @domain for a whole domain")
    secret = serializers.SerializerMethodField(help_text="shown once, in this response only")

    class Meta(RelayCredentialSerializer.Meta):
        fields = RelayCredentialSerializer.Meta.fields + ["secret"]
        read_only_fields = ["id", "login", "created_at", "last_used_at", "revoked_at", "active", "secret"]

    @extend_schema_field(serializers.CharField())
    def get_secret(self, cred: RelayCredential) -> str:
        return getattr(cred, "plaintext_secret", "")

    def create(self, validated_data):
        try:
            cred, secret = RelayCredential.issue(**validated_data)
        except DjangoValidationError as exc:
            raise api_validation_error(exc) from exc
        cred.plaintext_secret = secret
        return cred


# DKIM keys ---------------------------------------------------------------------------------------

class DkimKeySerializer(serializers.ModelSerializer):
    domain = TenantDomainField()

    class Meta:
        model = DkimKey
        fields = ["id", "domain", "selector", "algorithm", "state", "dns_name", "txt_value", "created_at",
                  "activated_at", "retired_at"]
        read_only_fields = ["id", "selector", "state", "dns_name", "txt_value", "created_at", "activated_at",
                            "retired_at"]

    def create(self, validated_data):
        return create_key(validated_data["domain"], validated_data.get("algorithm", DkimKey.Algorithm.RSA2048))


# Message log and queue ---------------------------------------------------------------------------

class MessageLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = MessageLog
        fields = ["id", "created_at", "domain", "direction", "result", "queue_id", "client_ip", "helo", "tls",
                  "auth_user", "mail_from", "recipients", "subject", "size", "reply"]
        read_only_fields = fields


class QueuedRecipientSerializer(serializers.ModelSerializer):
    queue_id = serializers.CharField(source="message.queue_id", read_only=True)
    sender = serializers.CharField(source="message.sender", read_only=True)
    source = serializers.CharField(source="message.source", read_only=True)
    size = serializers.IntegerField(source="message.size", read_only=True)
    queued_at = serializers.DateTimeField(source="message.created_at", read_only=True)

    class Meta:
        model = QueuedRecipient
        fields = ["id", "queue_id", "sender", "source", "size", "queued_at", "address", "original_address",
                  "domain", "state", "attempts", "next_attempt_at", "last_reply", "tls_version", "delivered_at"]
        read_only_fields = fields


class SuppressionSerializer(serializers.ModelSerializer):
    domain = serializers.CharField(source="domain.name", read_only=True)

    class Meta:
        model = Suppression
        fields = ["id", "domain", "address", "reason", "created_at", "expires_at"]
        read_only_fields = fields


class WebhookSerializer(serializers.ModelSerializer):
    domain = TenantDomainField()
    events = serializers.MultipleChoiceField(choices=Webhook.Event.choices, allow_empty=False,
                                             help_text="outcomes sent: delivered, deferred, bounced, expired")

    class Meta:
        model = Webhook
        fields = ["id", "domain", "url", "events", "active", "secret", "created_at", "last_status", "last_attempt_at"]
        read_only_fields = ["id", "secret", "created_at", "last_status", "last_attempt_at"]
        extra_kwargs = {"secret": {"help_text": "the key of the HMAC-SHA256 in each request's Mailhost-Signature"}}

    def validate_url(self, value: str) -> str:
        if problem := webhooks.url_problem(value):
            raise serializers.ValidationError(problem)
        return value

    def validate_events(self, value) -> list[str]:
        return sorted(value)

    def update(self, instance, validated_data):
        validated_data.pop("domain", None)     # a webhook stays with its domain
        return super().update(instance, validated_data)
