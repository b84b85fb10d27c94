from django.urls import path

from . import mta_sts

urlpatterns = [
    path(".well-known/mta-sts.txt", mta_sts.policy_view, name="mta_sts_policy"),
]
