from django.urls import path

from . import views

app_name = "mailboxes"

urlpatterns = [
    path("<int:pk>/mailboxes/", views.mailbox_list, name="list"),
    path("<int:pk>/mailboxes/new/", views.mailbox_create, name="create"),
    path("<int:pk>/mailboxes/<int:mailbox_pk>/", views.mailbox_edit, name="edit"),
    path("<int:pk>/mailboxes/<int:mailbox_pk>/password/", views.mailbox_password, name="password"),
    path("<int:pk>/mailboxes/<int:mailbox_pk>/suspend/", views.mailbox_suspend, name="suspend"),
    path("<int:pk>/mailboxes/<int:mailbox_pk>/delete/", views.mailbox_delete, name="delete"),
    path("<int:pk>/aliases/", views.alias_list, name="aliases"),
    path("<int:pk>/aliases/new/", views.alias_create, name="alias_create"),
    path("<int:pk>/aliases/<int:alias_pk>/", views.alias_edit, name="alias_edit"),
    path("<int:pk>/aliases/<int:alias_pk>/delete/", views.alias_delete, name="alias_delete"),
    path("<int:pk>/relay/", views.relay_list, name="relay"),
    path("<int:pk>/relay/<int:cred_pk>/revoke/", views.relay_revoke, name="relay_revoke"),
    path("<int:pk>/import/", views.csv_import, name="import"),
    path("<int:pk>/export/mailboxes.csv", views.csv_export, {"kind": "mailboxes"}, name="export_mailboxes"),
    path("<int:pk>/export/aliases.csv", views.csv_export, {"kind": "aliases"}, name="export_aliases"),
]
