"""The app's own route, then memguard's under /ops/."""

import os

from django.http import HttpRequest, JsonResponse
from django.urls import include, path


def own(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"owner": "app", "pid": os.getpid()})


urlpatterns = [
    path("own", own),
    path("ops/", include("memguard.integrations.django.urls")),
]
