FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Production settings by default: without SECRET_KEY and ALLOWED_HOSTS the container refuses to
# start (grading/settings.py) instead of running DEBUG with the development key.
ENV DJANGO_ENV=production
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
EXPOSE 8000
CMD ["gunicorn", "grading.wsgi", "-c", "python:grading.gunicorn_conf", "--bind", "0.0.0.0:8000"]
