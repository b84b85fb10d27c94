from django.contrib import admin

from .models import MessageLog, QueuedMessage, QueuedRecipient, Suppression


class QueuedRecipientInline(admin.TabularInline):
    model = QueuedRecipient
    extra = 0
    readonly_fields = ["address", "state", "attempts", "next_attempt_at", "last_reply", "tls_version"]


@admin.register(QueuedMessage)
class QueuedMessageAdmin(admin.ModelAdmin):
    list_display = ["queue_id", "sender", "size", "source", "created_at"]
    search_fields = ["queue_id", "sender"]
    exclude = ["data"]
    inlines = [QueuedRecipientInline]


@admin.register(MessageLog)
class MessageLogAdmin(admin.ModelAdmin):
    list_display = ["created_at", "direction", "result", "mail_from", "recipients", "size"]
    list_filter = ["direction", "result"]
    search_fields = ["mail_from", "recipients", "queue_id"]
    list_select_related = ["domain"]


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """Hard-bounced recipients per sending domain: an operator sees why and deletes to unblock."""

    list_display = ["address", "domain", "reason", "created_at", "expires_at"]
    list_filter = ["domain"]
    search_fields = ["address", "reason"]
    list_select_related = ["domain"]
