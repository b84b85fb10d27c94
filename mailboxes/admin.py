from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from .models import Alias, Mailbox, RelayCredential, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "email", "is_superuser", "is_active", "last_login"]


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
    list_display = ["__str__", "display_name", "quota", "used_bytes", "active"]
    list_filter = ["active", "domain"]
    search_fields = ["local_part", "domain__name", "display_name"]
    list_select_related = ["domain"]
    raw_id_fields = ["user"]


@admin.register(Alias)
class AliasAdmin(admin.ModelAdmin):
    list_display = ["__str__", "active"]
    list_filter = ["active"]
    search_fields = ["local_part", "domain__name"]
    list_select_related = ["domain"]


@admin.register(RelayCredential)
class RelayCredentialAdmin(admin.ModelAdmin):
    list_display = ["label", "domain", "mailbox", "login", "last_used_at", "revoked_at"]
    search_fields = ["label", "login", "domain__name"]
    readonly_fields = ["secret_hash", "last_used_at"]
    list_select_related = ["domain", "mailbox__domain"]
