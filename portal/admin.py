from django.contrib import admin

from .models import AuditLog


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_name", "action", "object_repr", "domain_name", "ip"]
    search_fields = ["actor_name", "action", "object_repr", "domain_name"]
    readonly_fields = [f.name for f in AuditLog._meta.fields]
