"""An app whose own /health comes before memguard's URLs at the root: memguard.E001."""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("the app's own health")


urlpatterns = [
    path("health", health),
    path("", include("memguard.integrations.django.urls")),
]
