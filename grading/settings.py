"""Funduscope settings.

Every value comes from the environment with an embedded default, so the app starts with no
configuration (SQLite in the project folder, local media and feature store). Production changes only
environment variables: ``DJANGO_ENV=production`` turns DEBUG off and requires ``SECRET_KEY``.
Bad values fail loudly with ``ImproperlyConfigured`` instead of being silently ignored.
"""

from __future__ import annotations

import datetime as dt
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
    "axes",
    "auditlog",
    "csp",
    "grading",
]

MIDDLEWARE = [
    # First and last: request latency by view for /metrics (django-prometheus).
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "grading.middleware.SecurityHeadersMiddleware",
    "csp.middleware.CSPMiddleware",
    # The settings row and the grading scale are read once per request (grading/request_memo.py).
    "grading.request_memo.RequestMemoMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before CSRF, which reads the body first: too many files or too large a body is answered
    # with the product's own page and limits rather than a bare "Bad Request (400)".
    "grading.middleware.UploadLimitsMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication (it logs the user id); its request id reaches the tasks it enqueues.
    "grading.request_log.RequestLogMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "grading.middleware.SessionIdleTimeoutMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # After the middleware whose work the page it may substitute needs (messages, CSRF, sessions).
    "grading.views.errors.ProductNotFoundPageMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    # Last, as django-axes documents: it turns a lockout raised by the backend into its page.
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

if PRODUCTION:
    # Serve collected static files from the app server; in development runserver serves them.
    MIDDLEWARE.insert(2, "whitenoise.middleware.WhiteNoiseMiddleware")

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
    # Stricter than Django's defaults (0.7, 8): "clin3clin3" for the user clin3 is refused.
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator",
        "OPTIONS": {"max_similarity": 0.5},
    },
    {"NAME": "grading.passwords.UsernameInPasswordValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes first: it counts failed logins and refuses locked accounts and addresses before
# the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # ModelBackend with the permissions read in one query instead of two.
    "grading.auth_backend.RoleBackend",
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
# Where photographs, their renders, model folders, fine-tuning checkpoints and feature shards live
# (grading.services.storage is the one seam): "local" keeps them in this machine's folders
# (MEDIA_ROOT, FUNDUS_MODEL_DIR, FUNDUS_FEATURE_STORE); "s3" keeps them in an S3 bucket that
# every web server and worker shares, and those folders become caches any machine may lose.
FUNDUS_STORAGE = env_choice("FUNDUS_STORAGE", "local", ("local", "s3"))


def s3_storage(
    *, endpoint: str, bucket: str, access_key: str, secret_key: str, region: str, url_seconds: int
) -> dict[str, object]:
    """The STORAGES entry of a bucket: django-storages' S3Storage and its options."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "endpoint_url": endpoint,
            "bucket_name": bucket,
            "access_key": access_key,
            "secret_key": secret_key,
            "region_name": region,
            # Path-style addressing: SeaweedFS, MinIO and private endpoints have no per-bucket DNS.
            "addressing_style": "path",
            "signature_version": "s3v4",
            # Clinical data: never public; a URL it signs expires within url_seconds.
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": url_seconds,
            # Content-addressed names: the same name is the same bytes, so an overwrite is harmless
            # and Django's "find a free name" round trips are not needed.
            "file_overwrite": True,
        },
    }


FUNDUS_S3_ENDPOINT = env_str("FUNDUS_S3_ENDPOINT").strip()
FUNDUS_S3_BUCKET = env_str("FUNDUS_S3_BUCKET", "funduscope").strip()
FUNDUS_S3_ACCESS_KEY = env_str("FUNDUS_S3_ACCESS_KEY").strip()
FUNDUS_S3_SECRET_KEY = env_str("FUNDUS_S3_SECRET_KEY").strip()
FUNDUS_S3_REGION = env_str("FUNDUS_S3_REGION", "us-east-1").strip()
# Lifetime of the presigned URLs the storage could hand out; the app streams photographs through
# its own login-protected views instead, so this only bounds a URL that ever leaked from a log.
FUNDUS_S3_URL_SECONDS = env_int("FUNDUS_S3_URL_SECONDS", 60, minimum=1)
if FUNDUS_STORAGE == "s3":
    _s3_required = {
        "FUNDUS_S3_ENDPOINT": FUNDUS_S3_ENDPOINT,
        "FUNDUS_S3_BUCKET": FUNDUS_S3_BUCKET,
        "FUNDUS_S3_ACCESS_KEY": FUNDUS_S3_ACCESS_KEY,
        "FUNDUS_S3_SECRET_KEY": FUNDUS_S3_SECRET_KEY,
    }
    _missing_s3 = [name for name, value in _s3_required.items() if not value]
    if _missing_s3:
        raise ImproperlyConfigured(f"FUNDUS_STORAGE=s3 requires {', '.join(_missing_s3)}")
    if not FUNDUS_S3_ENDPOINT.startswith(("http://", "https://")):
        raise ImproperlyConfigured(
            f"FUNDUS_S3_ENDPOINT={FUNDUS_S3_ENDPOINT!r} must be an http:// or https:// URL"
        )
    _default_storage = s3_storage(
        endpoint=FUNDUS_S3_ENDPOINT,
        bucket=FUNDUS_S3_BUCKET,
        access_key=FUNDUS_S3_ACCESS_KEY,
        secret_key=FUNDUS_S3_SECRET_KEY,
        region=FUNDUS_S3_REGION,
        url_seconds=FUNDUS_S3_URL_SECONDS,
    )
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
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
FUNDUS_MAX_FILENAME_LENGTH = 255  # Image.original_filename's length
# An upload with more files or bytes than these is stored as it is by the request and imported
# by a background job with progress (decoding 500 photographs takes longer than gunicorn waits).
FUNDUS_UPLOAD_INLINE_MAX_FILES = env_int("FUNDUS_UPLOAD_INLINE_MAX_FILES", 10, minimum=1)
FUNDUS_UPLOAD_INLINE_MAX_BYTES = env_int(
    "FUNDUS_UPLOAD_INLINE_MAX_BYTES", 20 * 1024 * 1024, minimum=1024
)
FUNDUS_UPLOAD_STAGING_DIR = env_path("FUNDUS_UPLOAD_STAGING_DIR", BASE_DIR / "var" / "staging")
# Django streams large request files to temporary files here; a web process killed mid-upload
# leaves them behind, and the periodic housekeeping removes them (an hour after).
FILE_UPLOAD_TEMP_DIR = str(env_path("FILE_UPLOAD_TEMP_DIR", BASE_DIR / "var" / "upload-tmp"))
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
FUNDUS_UPLOAD_LEFTOVER_SECONDS = env_int("FUNDUS_UPLOAD_LEFTOVER_SECONDS", 3600, minimum=60)
# Photographs smaller than this on their short side cannot be graded (a thumbnail, an icon).
FUNDUS_MIN_IMAGE_SIDE = env_int("FUNDUS_MIN_IMAGE_SIDE", 128, minimum=1)

# DICOM in (grading.services.dicom) and the C-STORE listener (manage.py dicom_listener). Patient
# identifiers become keyed hashes unless kept; names and birth dates are dropped unless kept.
FUNDUS_PSEUDONYM_KEY = env_str("FUNDUS_PSEUDONYM_KEY")  # empty: derived from SECRET_KEY
FUNDUS_DICOM_KEEP_IDENTIFIERS = env_bool("FUNDUS_DICOM_KEEP_IDENTIFIERS", False)
FUNDUS_DICOM_KEEP_DEMOGRAPHICS = env_bool("FUNDUS_DICOM_KEEP_DEMOGRAPHICS", False)
FUNDUS_DICOM_AE_TITLE = env_str("FUNDUS_DICOM_AE_TITLE", "FUNDUSCOPE")
FUNDUS_DICOM_PORT = env_int("FUNDUS_DICOM_PORT", 11112, minimum=1)
FUNDUS_DICOM_ALLOWED_AES = env_list("FUNDUS_DICOM_ALLOWED_AES", [])

# ML core.
FUNDUS_WEIGHTS_DIR = env_path("FUNDUS_WEIGHTS_DIR", BASE_DIR / "var" / "weights")
FUNDUS_FEATURE_STORE = env_path("FUNDUS_FEATURE_STORE", BASE_DIR / "var" / "features")
FUNDUS_MODEL_DIR = env_path("FUNDUS_MODEL_DIR", BASE_DIR / "var" / "models")
FUNDUS_BACKBONES = env_list("FUNDUS_BACKBONES", ["efficientnet_lite0", "mobilenet_v2"])
# How features are computed and stored (grading.services.ml_config builds mlcore's FeatureConfig
# from these; mlcore validates the values): preprocessing none, crop or ben_graham; storage dtype
# float32 or float16; images per forward pass.
FUNDUS_PREPROCESSING = env_str("FUNDUS_PREPROCESSING").strip() or "none"
FUNDUS_FEATURE_DTYPE = env_str("FUNDUS_FEATURE_DTYPE").strip() or "float32"
FUNDUS_FEATURE_BATCH_SIZE = env_int("FUNDUS_FEATURE_BATCH_SIZE", 32, minimum=1)
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
FUNDUS_BROKER_VISIBILITY_SECONDS = env_int("FUNDUS_BROKER_VISIBILITY_SECONDS", 3600, minimum=5)
# The web process must answer quickly when Redis is down instead of hanging on a retry loop.
# FUNDUS_REDIS_KEY_PREFIX prefixes every queue key, so that several installations (or test runs)
# can share one Redis database without taking each other's tasks.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "global_keyprefix": env_str("FUNDUS_REDIS_KEY_PREFIX"),
    # How long a task taken by a worker may stay unacknowledged before Redis gives it to another
    # worker: longer than the longest task (a feature chunk is minutes; training acknowledges
    # late too, but its job row is claimed once, so a redelivery of it does nothing). Kombu's
    # default is an hour; the multi-machine test shortens it to see a killed worker's chunk
    # redelivered within seconds.
    "visibility_timeout": FUNDUS_BROKER_VISIBILITY_SECONDS,
}
# Feature extraction of a retrain or extraction job (FUNDUS_STORAGE=s3) is split into chunks of
# this many images, one task each on the `ml` queue, so every ML worker takes a share.
FUNDUS_FEATURE_CHUNK_IMAGES = env_int("FUNDUS_FEATURE_CHUNK_IMAGES", 256, minimum=1)
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
# Fine-tuning retrains (Retrain -> "Fine-tune the whole network"): the backbone, how many of its top
# EfficientNet-Lite blocks train on cached maps of the frozen rest ("all": the whole network on
# augmented images), epochs of the one-cycle schedule, and the peak learning rates tried (several:
# the inner validation split picks one; each costs a training run). The defaults are the recipe
# search's best candidate (README, "Recipe search"): the whole network, 20 epochs, peak 3e-4.
FUNDUS_FINETUNE_BACKBONE = env_str("FUNDUS_FINETUNE_BACKBONE", "efficientnet_lite0")
FUNDUS_FINETUNE_TOP_BLOCKS = env_str("FUNDUS_FINETUNE_TOP_BLOCKS", "all")
if FUNDUS_FINETUNE_TOP_BLOCKS != "all" and not FUNDUS_FINETUNE_TOP_BLOCKS.isdigit():
    raise ImproperlyConfigured(
        f"FUNDUS_FINETUNE_TOP_BLOCKS={FUNDUS_FINETUNE_TOP_BLOCKS!r} must be a number or 'all'"
    )
FUNDUS_FINETUNE_EPOCHS = env_int("FUNDUS_FINETUNE_EPOCHS", 20, minimum=1)
# A fine-tuned version is scored on a grouped hold-out of this share of the patients (the k-fold
# evaluation re-trains heads on cached features and cannot measure a fine-tuned network).
FUNDUS_FINETUNE_HOLDOUT_PERCENT = env_int("FUNDUS_FINETUNE_HOLDOUT_PERCENT", 10, minimum=1)
if FUNDUS_FINETUNE_HOLDOUT_PERCENT >= 50:
    raise ImproperlyConfigured("FUNDUS_FINETUNE_HOLDOUT_PERCENT must be below 50")
FUNDUS_FINETUNE_BATCH_SIZE = env_int("FUNDUS_FINETUNE_BATCH_SIZE", 32, minimum=1)
FUNDUS_FINETUNE_LEARNING_RATES = env_list("FUNDUS_FINETUNE_LEARNING_RATES", ["3e-4"])
try:
    _rates = [float(rate) for rate in FUNDUS_FINETUNE_LEARNING_RATES]
except ValueError:
    raise ImproperlyConfigured(
        f"FUNDUS_FINETUNE_LEARNING_RATES={FUNDUS_FINETUNE_LEARNING_RATES!r} must be numbers"
    ) from None
if not _rates or min(_rates) <= 0:
    raise ImproperlyConfigured("FUNDUS_FINETUNE_LEARNING_RATES must be positive numbers")

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

# Login throttling (django-axes): FUNDUS_LOGIN_FAILURE_LIMIT failed logins within the cool-off
# period lock that account (whatever the address) and, separately, that client address (whatever
# the account) for FUNDUS_LOGIN_COOLOFF_MINUTES. A successful login clears the account's count.
AXES_FAILURE_LIMIT = env_int("FUNDUS_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env_int("FUNDUS_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

# Sessions: 14 days at most, and closed after FUNDUS_SESSION_IDLE_MINUTES without a request
# (clinical data on a shared ward computer).
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 14 * 24 * 3600, minimum=60)
FUNDUS_SESSION_IDLE_MINUTES = env_int("FUNDUS_SESSION_IDLE_MINUTES", 60, minimum=1)

# Audit trail (django-auditlog). The client address comes from X-Forwarded-For only behind a
# proxy that sets it; otherwise a client could write any address into the record.
FUNDUS_BEHIND_PROXY = env_bool("FUNDUS_BEHIND_PROXY", False)
AUDITLOG_DISABLE_REMOTE_ADDR = not FUNDUS_BEHIND_PROXY
# Raw saves are fixture and test-database loads, not changes anyone made (and logging them would
# create content types in the middle of loading them).
AUDITLOG_DISABLE_ON_RAW_SAVE = True

# Content-Security-Policy (django-csp): scripts and styles from this site only, no inline script
# and no inline style: the bars' widths are classes (static/grading/widths.css); the one inline
# <style> block, the self-contained 500 page's, is allowed by its hash (tests/test_hardening_low.py
# checks it matches). htmx's own indicator styles are turned off in base.html's htmx config.
ERROR_PAGE_STYLE_HASH = "'sha256-g4c6ZxQuBriwPA4ul67QN12xTKYDxaniaAbtr7YSJSI='"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", ERROR_PAGE_STYLE_HASH],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# Browser features a grading workbench never uses. Only features browsers know: Chromium logs
# "Unrecognized feature" on every page for others (it did for "bluetooth").
FUNDUS_PERMISSIONS_POLICY = (
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=()"
)

# Security. Production turns on every HTTPS protection; `manage.py check --deploy` stays clean.
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie.
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Probes and scrapers talk plain HTTP to the container: an HTTPS redirect would fail them.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
if FUNDUS_BEHIND_PROXY:
    # Only a proxy that overwrites X-Forwarded-Proto may vouch for HTTPS; without one, any client
    # could send the header and pass for a secure request.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Operations (README "Operations"). /metrics answers only a request carrying
# "Authorization: Bearer FUNDUS_METRICS_TOKEN"; without a token it is open in development and
# closed (404) in production.
FUNDUS_METRICS_TOKEN = env_str("FUNDUS_METRICS_TOKEN")
# /readyz fails when no ML worker wrote its heartbeat (every FUNDUS_WORKER_HEARTBEAT_SECONDS)
# within FUNDUS_WORKER_HEARTBEAT_MAX_AGE seconds.
FUNDUS_WORKER_HEARTBEAT_SECONDS = env_int("FUNDUS_WORKER_HEARTBEAT_SECONDS", 15, minimum=1)
FUNDUS_WORKER_HEARTBEAT_MAX_AGE = env_int("FUNDUS_WORKER_HEARTBEAT_MAX_AGE", 60, minimum=2)
# Model drift: a week whose population stability index (predicted grades, P(referable) or
# quality scores against the active version's training images) exceeds FUNDUS_DRIFT_PSI_ALERT
# raises the alert on the admin home, once it holds FUNDUS_DRIFT_MIN_IMAGES images.
FUNDUS_DRIFT_PSI_ALERT = float(env_int("FUNDUS_DRIFT_PSI_ALERT_PERCENT", 25, minimum=1)) / 100
FUNDUS_DRIFT_MIN_IMAGES = env_int("FUNDUS_DRIFT_MIN_IMAGES", 30, minimum=5)
FUNDUS_DRIFT_WEEKS = env_int("FUNDUS_DRIFT_WEEKS", 12, minimum=1)
# "json": one JSON object per log line (requests and job events carry a request_id).
FUNDUS_LOG_FORMAT = env_choice("FUNDUS_LOG_FORMAT", "text", ("text", "json"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "forbidden_one_line": {"()": "grading.log_filters.ForbiddenOneLineFilter"},
        "request_id": {"()": "grading.request_log.RequestIdFilter"},
        "suspicious_one_line": {"()": "grading.log_filters.SuspiciousOneLineFilter"},
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id", "suspicious_one_line"],
            **({"formatter": "json"} if FUNDUS_LOG_FORMAT == "json" else {}),
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own console handler on "django" printed each record a second time beside the
        # root's (with DEBUG on): its records go to the root's handler only.
        "django": {"handlers": [], "propagate": True},
        # A refused request is routine: one line with user and path, no traceback.
        "django.request": {"filters": ["forbidden_one_line"]},
        "django.security": {"filters": ["forbidden_one_line"]},
    },
}
