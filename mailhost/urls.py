from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("api/", include("api.urls")),
    path("domains/<int:pk>/dns/", include("domains.wizard_urls")),
    path("", include("domains.wellknown_urls")),
]
