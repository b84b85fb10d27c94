from django.urls import path

from . import views

app_name = "webmail"

urlpatterns = [
    path("", views.folder, name="inbox"),
    path("compose/", views.compose_view, name="compose"),
    path("apple.mobileconfig", views.mobileconfig, name="mobileconfig"),
    path("f/<str:folder>/", views.folder, name="folder"),
    path("f/<str:folder>/<str:key>/", views.message, name="message"),
    path("f/<str:folder>/<str:key>/part/<int:index>/", views.attachment, name="attachment"),
    path("f/<str:folder>/<str:key>/flag/", views.flag, name="flag"),
    path("f/<str:folder>/<str:key>/move/", views.move, name="move"),
    path("f/<str:folder>/<str:key>/reply/", views.compose_view, {"mode": "reply"}, name="reply"),
    path("f/<str:folder>/<str:key>/reply-all/", views.compose_view, {"mode": "reply_all"}, name="reply_all"),
    path("f/<str:folder>/<str:key>/forward/", views.compose_view, {"mode": "forward"}, name="forward"),
]
