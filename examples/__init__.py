"""Runnable example apps: see flask_app.py, fastapi_app.py and gunicorn.conf.py."""
