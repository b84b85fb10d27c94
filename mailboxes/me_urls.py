from django.urls import path

from . import me_views

app_name = "me"

urlpatterns = [
    path("", me_views.overview, name="overview"),
    path("password/", me_views.change_password, name="password"),
    path("forwarding/", me_views.forwarding, name="forwarding"),
    path("autoreply/", me_views.autoreply, name="autoreply"),
    path("app-passwords/", me_views.app_passwords, name="app_passwords"),
    path("app-passwords/<int:cred_pk>/revoke/", me_views.app_password_revoke, name="app_password_revoke"),
    path("log/", me_views.message_log, name="log"),
]
