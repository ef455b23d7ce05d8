"""Django settings of a project whose app listens to Anymail's signals."""

SECRET_KEY = "test-only"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = ["tests.e2e.anymail_app.apps.AnymailReceiversConfig"]
DATABASES: dict[str, object] = {}
USE_TZ = True
ROOT_URLCONF = "tests.e2e.anymail_app.urls"
EMAIL_BACKEND = "mailqueue.django.EmailBackend"
