from django.urls import path

from . import views

app_name = "delivery"

urlpatterns = [
    path("domains/<int:pk>/log/", views.domain_log, name="domain_log"),
    path("domains/<int:pk>/queue/", views.domain_queue, name="domain_queue"),
    path("domains/<int:pk>/queue/<int:message_pk>/retry/", views.queue_retry, name="queue_retry"),
    path("domains/<int:pk>/queue/<int:message_pk>/delete/", views.queue_delete, name="queue_delete"),
    path("domains/<int:pk>/suppressions/", views.domain_suppressions, name="domain_suppressions"),
    path("domains/<int:pk>/suppressions/<int:suppression_pk>/remove/", views.suppression_remove,
         name="suppression_remove"),
    path("domains/<int:pk>/webhooks/", views.domain_webhooks, name="domain_webhooks"),
    path("domains/<int:pk>/webhooks/<int:webhook_pk>/test/", views.webhook_test, name="webhook_test"),
    path("domains/<int:pk>/webhooks/<int:webhook_pk>/delete/", views.webhook_delete, name="webhook_delete"),
    path("log/", views.global_log, name="log"),
    path("queue/", views.global_queue, name="queue"),
    path("queue/<int:message_pk>/retry/", views.global_queue_retry, name="global_queue_retry"),
    path("queue/<int:message_pk>/delete/", views.global_queue_delete, name="global_queue_delete"),
]
