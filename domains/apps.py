from django.apps import AppConfig


class DomainsConfig(AppConfig):
    name = "domains"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # pyspf and dkimpy resolve through dnspython's default resolver: point it at DNS_RESOLVERS
        # so every lookup the platform makes uses the operator's resolvers (FIELD-NOTES, DNS).
        from django.conf import settings

        if settings.DNS_RESOLVERS:
            from mailhost.resolvers import install_default

            install_default()
