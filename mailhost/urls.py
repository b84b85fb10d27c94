from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from . import views

urlpatterns = [
    # Admins log in through the portal so throttling and 2FA cannot be bypassed via /admin/.
    path("admin/login/", RedirectView.as_view(url="/login/", query_string=True)),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("domains/", include("domains.urls")),
    path("domains/", include("mailboxes.urls")),
    path("me/", include("mailboxes.me_urls")),
    path("", include("delivery.urls")),
    path("", include("portal.urls")),
]
