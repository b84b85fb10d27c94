from django.urls import path

from . import views

app_name = "portal"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.login_view, name="login"),
    path("login/verify/", views.login_verify, name="login_verify"),
    path("logout/", views.logout_view, name="logout"),
    path("account/2fa/", views.otp_setup, name="otp_setup"),
    path("account/2fa/disable/", views.otp_disable, name="otp_disable"),
    path("audit/", views.audit_log, name="audit"),
]
