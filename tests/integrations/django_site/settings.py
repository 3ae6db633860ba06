"""Settings of the test project: memguard's app, its URLs under /ops/, no database."""

import os

SECRET_KEY = "memguard-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = ["memguard.integrations.django"]
MIDDLEWARE = ["django.middleware.csrf.CsrfViewMiddleware"]
ROOT_URLCONF = os.environ.get("DJANGO_SITE_URLCONF", "django_site.urls")
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
TIME_ZONE = "UTC"  # Django sets TZ for the whole process: keep the tests in UTC
MEMGUARD = {"start": os.environ.get("DJANGO_SITE_START", "1") == "1",
            "token": os.environ.get("DJANGO_SITE_TOKEN") or None}
WSGI_APPLICATION = "django_site.wsgi.application"
