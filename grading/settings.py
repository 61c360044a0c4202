"""Funduscope settings.

Every value comes from the environment with an embedded default, so the app starts with no
configuration (SQLite in the project folder, local media and feature store). Production changes only
environment variables: ``DJANGO_ENV=production`` turns DEBUG off and requires ``SECRET_KEY``.
Bad values fail loudly with ``ImproperlyConfigured`` instead of being silently ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true/false)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} must be at least {minimum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


DJANGO_ENV = env_choice("DJANGO_ENV", "development", ("development", "test", "production"))
PRODUCTION = DJANGO_ENV == "production"

DEBUG = env_bool("DEBUG", default=not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when DJANGO_ENV=production")

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY is required when DJANGO_ENV=production")
    # Development only: a fixed, obviously unsafe key so sessions survive restarts.
    SECRET_KEY = "dev-insecure-" + "funduscope-local-development-key-change-me-0123456789"
elif len(SECRET_KEY) < 50 and PRODUCTION:
    raise ImproperlyConfigured("SECRET_KEY must be at least 50 characters in production")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is required when DJANGO_ENV=production")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_htmx",
    "grading",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # Last, so the page it may substitute still passes through messages, CSRF and sessions.
    "grading.views.errors.ProductNotFoundPageMiddleware",
]

if PRODUCTION:
    # Serve collected static files from the app server; in development runserver serves them.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "grading.urls"
WSGI_APPLICATION = "grading.wsgi.application"
ASGI_APPLICATION = "grading.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "grading.context_processors.workbench",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'funduscope.sqlite3'}")
if not DATABASE_URL.startswith(("sqlite:", "postgres:", "postgresql:")):
    raise ImproperlyConfigured(
        f"DATABASE_URL must be sqlite:///path or postgres://..., got {DATABASE_URL!r}"
    )
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Web and worker processes write concurrently: wait for the lock instead of failing at once.
    # IMMEDIATE transactions take the write lock when they begin: a deferred transaction that
    # reads and then writes fails at once with "database is locked" when another process is
    # writing (SQLite refuses to wait there, to avoid a deadlock), whatever the timeout.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / "test-funduscope.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env_path("STATIC_ROOT", BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# Uploaded photographs are stored by content hash below MEDIA_ROOT and served only through a
# login-protected view (clinical data), never as public static files.
MEDIA_ROOT = env_path("MEDIA_ROOT", BASE_DIR / "var" / "media")
MEDIA_URL = "/media/"

# Upload limits: a fundus camera photo is ~5-20 MB; anything much larger is refused.
FUNDUS_MAX_UPLOAD_BYTES = env_int("FUNDUS_MAX_UPLOAD_BYTES", 40 * 1024 * 1024, minimum=1024)
FUNDUS_MAX_IMAGE_PIXELS = env_int("FUNDUS_MAX_IMAGE_PIXELS", 50_000_000, minimum=10_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = FUNDUS_MAX_UPLOAD_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("DATA_UPLOAD_MAX_NUMBER_FILES", 500, minimum=1)

# ML core.
FUNDUS_WEIGHTS_DIR = env_path("FUNDUS_WEIGHTS_DIR", BASE_DIR / "var" / "weights")
FUNDUS_FEATURE_STORE = env_path("FUNDUS_FEATURE_STORE", BASE_DIR / "var" / "features")
FUNDUS_MODEL_DIR = env_path("FUNDUS_MODEL_DIR", BASE_DIR / "var" / "models")
FUNDUS_BACKBONES = env_list("FUNDUS_BACKBONES", ["efficientnet_lite0", "mobilenet_v2"])
FUNDUS_DEMO_DIR = env_str("FUNDUS_DEMO_DIR")  # the repo never contains the dataset
# The photo-quality gate at upload (the admin's switch and thresholds are in the database). The test
# suite turns it off by default: its synthetic photographs are 64 px, far below any threshold.
FUNDUS_QUALITY_GATE = env_bool("FUNDUS_QUALITY_GATE", True)

# Grading scale: ICDR by default. A lab with another scale sets FUNDUS_GRADE_SCALE to
# "value:name[:referable],..." before the first migrate, or edits the GradeLevel table in the admin.
FUNDUS_GRADE_SCALE = env_str(
    "FUNDUS_GRADE_SCALE",
    "0:No DR,1:Mild NPDR,2:Moderate NPDR:referable,3:Severe NPDR:referable,4:PDR:referable",
)

# Background jobs.
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL must be a redis:// URL, got {REDIS_URL!r}")
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 30 * 60, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 35 * 60, minimum=1)
CELERY_TRAINING_SOFT_TIME_LIMIT = env_int("CELERY_TRAINING_SOFT_TIME_LIMIT", 4 * 3600, minimum=1)
CELERY_TRAINING_TIME_LIMIT = env_int("CELERY_TRAINING_TIME_LIMIT", 4 * 3600 + 600, minimum=1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The web process must answer quickly when Redis is down instead of hanging on a retry loop.
# FUNDUS_REDIS_KEY_PREFIX prefixes every queue key, so that several installations (or test runs)
# can share one Redis database without taking each other's tasks.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "global_keyprefix": env_str("FUNDUS_REDIS_KEY_PREFIX"),
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# A running job's worker writes a heartbeat every FUNDUS_JOB_HEARTBEAT_SECONDS; a job silent for
# FUNDUS_JOB_STALE_SECONDS is taken as abandoned by a dead worker, marked failed and retryable.
FUNDUS_JOB_HEARTBEAT_SECONDS = env_int("FUNDUS_JOB_HEARTBEAT_SECONDS", 10, minimum=1)
FUNDUS_JOB_STALE_SECONDS = env_int("FUNDUS_JOB_STALE_SECONDS", 120, minimum=2)
# Retraining (the `model_train` job): maximum head epochs (0: mlcore's default, early stopping
# decides), the folds of the cross-validation that scores a new version (the `model_evaluate`
# job: out-of-fold predictions over every confirmed image, grouped by patient; the released
# model itself is trained on all of them), bootstrap resamples of its 95 % intervals, and
# augmented copies per training image (each copy costs one more feature extraction).
FUNDUS_TRAIN_EPOCHS = env_int("FUNDUS_TRAIN_EPOCHS", 0, minimum=0)
FUNDUS_CV_FOLDS = env_int("FUNDUS_CV_FOLDS", 5, minimum=2)
FUNDUS_BOOTSTRAP_RESAMPLES = env_int("FUNDUS_BOOTSTRAP_RESAMPLES", 1000, minimum=100)
FUNDUS_AUGMENT_VARIANTS = env_int("FUNDUS_AUGMENT_VARIANTS", 0, minimum=0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

# Security. Production turns on every HTTPS protection; `manage.py check --deploy` stays clean.
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie.
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
