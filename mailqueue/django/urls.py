"""URL patterns for the tracking webhook: ``include("mailqueue.django.urls")``.

Mounted under ``anymail/`` this gives Anymail's familiar
``…/anymail/mailtrap/tracking/``. The trailing slash is optional: a redirect
would lose a POST's body.
"""

from __future__ import annotations

from django.urls import path, re_path

from mailqueue.django.views import mailtrap_tracking

urlpatterns = [
    path("mailtrap/tracking/", mailtrap_tracking, name="mailqueue_mailtrap_tracking"),
    re_path(r"^mailtrap/tracking$", mailtrap_tracking),
]
