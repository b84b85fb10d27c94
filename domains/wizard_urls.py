from django.urls import path

from . import wizard_views

app_name = "dnswizard"

urlpatterns = [
    path("", wizard_views.start, name="start"),
    path("ownership/", wizard_views.ownership, name="ownership"),
    path("ownership/verify/", wizard_views.verify, name="verify"),
    path("records/", wizard_views.records, name="records"),
    path("zone/", wizard_views.zone, name="zone"),
    path("check/", wizard_views.check, name="check"),
]
