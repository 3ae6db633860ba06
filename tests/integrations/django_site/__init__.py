"""A tiny Django project for the Django integration tests (in-process and under gunicorn)."""
