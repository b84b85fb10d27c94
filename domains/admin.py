from django.contrib import admin

from .models import DkimKey, Domain, DomainAlias


class DomainAliasInline(admin.TabularInline):
    model = DomainAlias
    fk_name = "target"
    extra = 0


@admin.register(Domain)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["name", "active", "max_mailboxes", "max_aliases", "created_at"]
    list_filter = ["active"]
    search_fields = ["name"]
    filter_horizontal = ["admins"]
    inlines = [DomainAliasInline]


@admin.register(DomainAlias)
class DomainAliasAdmin(admin.ModelAdmin):
    list_display = ["name", "target", "active"]
    search_fields = ["name", "target__name"]
    list_select_related = ["target"]


@admin.register(DkimKey)
class DkimKeyAdmin(admin.ModelAdmin):
    list_display = ["domain", "selector", "algorithm", "state", "created_at", "activated_at"]
    list_filter = ["state", "algorithm"]
    search_fields = ["domain__name", "selector"]
    readonly_fields = ["public_key"]
    exclude = ["private_key"]
    list_select_related = ["domain"]
