from django.contrib import admin
from django.urls import include, path, re_path

from webmail import views as webmail_views

from . import views

urlpatterns = [
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
]
