from django.contrib import admin

from .models import MessageLog, QueuedMessage, QueuedRecipient


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
