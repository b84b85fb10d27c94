from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from webmail import views as webmail_views

from . import views

urlpatterns = [
    # Admins log in through the portal so throttling and 2FA cannot be bypassed via /admin/.
    path("admin/login/", RedirectView.as_view(url="/login/", query_string=True)),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("api/", include("api.urls")),
    path("domains/<int:pk>/dns/", include("domains.wizard_urls")),
    path("", include("domains.wellknown_urls")),
    path("webmail/", include("webmail.urls")),
    path("mail/config-v1.1.xml", webmail_views.autoconfig, name="autoconfig"),
    path(".well-known/autoconfig/mail/config-v1.1.xml", webmail_views.autoconfig),
    re_path(r"^[Aa]utodiscover/[Aa]utodiscover\.xml$", webmail_views.autodiscover, name="autodiscover"),
    path("domains/", include("domains.urls")),
    path("domains/", include("mailboxes.urls")),
    path("me/", include("mailboxes.me_urls")),
    path("", include("delivery.urls")),
    path("", include("portal.urls")),
]
