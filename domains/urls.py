from django.urls import path

from . import views

app_name = "domains"

urlpatterns = [
    path("", views.domain_list, name="list"),
    path("new/", views.domain_create, name="create"),
    path("<int:pk>/", views.domain_detail, name="detail"),
    path("<int:pk>/suspend/", views.domain_suspend, name="suspend"),
    path("<int:pk>/limits/", views.domain_limits, name="limits"),
    path("<int:pk>/delete/", views.domain_delete, name="delete"),
    path("<int:pk>/admins/", views.domain_admins, name="admins"),
    path("<int:pk>/admins/<int:user_pk>/remove/", views.domain_admin_remove, name="admin_remove"),
    path("<int:pk>/alias-domains/", views.alias_domains, name="alias_domains"),
    path("<int:pk>/alias-domains/<int:alias_pk>/delete/", views.alias_domain_delete, name="alias_domain_delete"),
    path("<int:pk>/dkim/", views.dkim_keys, name="dkim"),
    path("<int:pk>/dkim/<int:key_pk>/activate/", views.dkim_transition, {"action": "activate"},
         name="dkim_activate"),
    path("<int:pk>/dkim/<int:key_pk>/retire/", views.dkim_transition, {"action": "retire"}, name="dkim_retire"),
]
