from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from . import views
from .errors import not_found


class Router(DefaultRouter):
    """The default router with its API root, without `.json` suffix URLs (JSON is the only format)."""

    include_format_suffixes = False


router = Router()
router.register("domains", views.DomainViewSet, basename="domain")
router.register("mailboxes", views.MailboxViewSet, basename="mailbox")
router.register("aliases", views.AliasViewSet, basename="alias")
router.register("relay-credentials", views.RelayCredentialViewSet, basename="relaycredential")
router.register("dkim-keys", views.DkimKeyViewSet, basename="dkimkey")
router.register("message-log", views.MessageLogViewSet, basename="messagelog")
router.register("queue", views.QueueViewSet, basename="queue")
router.register("suppressions", views.SuppressionViewSet, basename="suppression")
router.register("webhooks", views.WebhookViewSet, basename="webhook")

app_name = "api"
urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    *router.urls,
    re_path(r"^.*$", not_found),
]
